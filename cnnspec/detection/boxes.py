"""Boxes as (N, 4) float arrays, and the pure functions every detection part shares.

Formats (pixels, x to the right, y down, edges not centres):
    xyxy    x0, y0, x1, y1      corners; what cnnspec keeps internally and torchvision uses
    xywh    x0, y0, w, h        top-left corner and size; COCO's "bbox"
    cxcywh  cx, cy, w, h        centre and size; YOLO label files (normalised) and DETR
Only numpy is used, so the data readers, the evaluator and both backends share one rule.
"""

from __future__ import annotations

import numpy as np

FORMATS = ("xyxy", "xywh", "cxcywh")


def as_boxes(boxes) -> np.ndarray:
    """An (N, 4) float64 array from any array-like; an empty list gives shape (0, 4).

    >>> as_boxes([]).shape
    (0, 4)
    >>> as_boxes([1, 2, 3, 4]).shape
    (1, 4)
    """
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4))
    array = array.reshape(-1, 4) if array.ndim == 1 else array
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {np.shape(boxes)}")
    return array


def convert(boxes, source: str, target: str) -> np.ndarray:
    """Boxes from one format to another (see the module docstring).

    >>> convert([[10, 20, 30, 40]], "xywh", "xyxy").tolist()
    [[10.0, 20.0, 40.0, 60.0]]
    >>> convert([[10, 20, 40, 60]], "xyxy", "cxcywh").tolist()
    [[25.0, 40.0, 30.0, 40.0]]
    """
    for name in (source, target):
        if name not in FORMATS:
            raise ValueError(f"unknown box format {name!r}; use one of {', '.join(FORMATS)}")
    return _from_xyxy(_to_xyxy(as_boxes(boxes), source), target)


def _to_xyxy(b: np.ndarray, source: str) -> np.ndarray:
    if source == "xywh":
        return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)
    if source == "cxcywh":
        half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
        return np.stack(
            [b[:, 0] - half_w, b[:, 1] - half_h, b[:, 0] + half_w, b[:, 1] + half_h], axis=1
        )
    return b.copy()


def _from_xyxy(b: np.ndarray, target: str) -> np.ndarray:
    width, height = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    if target == "xywh":
        return np.stack([b[:, 0], b[:, 1], width, height], axis=1)
    if target == "cxcywh":
        return np.stack([b[:, 0] + width / 2, b[:, 1] + height / 2, width, height], axis=1)
    return b


def areas(boxes) -> np.ndarray:
    """Areas of xyxy boxes (0 for degenerate ones).

    >>> areas([[0, 0, 2, 3], [5, 5, 4, 9]]).tolist()
    [6.0, 0.0]
    """
    b = as_boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def iou(a, b) -> np.ndarray:
    """The (N, M) intersection-over-union matrix of xyxy boxes; 0 where the union is empty.

    >>> iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]).round(4).tolist()
    [[1.0, 0.3333, 0.0]]
    """
    inter, union, _ = _overlap(as_boxes(a), as_boxes(b))
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def giou(a, b) -> np.ndarray:
    """The (N, M) generalised IoU matrix (Rezatofighi et al., CVPR 2019): IoU minus the
    share of the smallest enclosing box that the union leaves empty; in [-1, 1].

    >>> giou([[0, 0, 10, 10]], [[0, 0, 10, 10], [20, 0, 30, 10]]).round(4).tolist()
    [[1.0, -0.3333]]
    """
    a, b = as_boxes(a), as_boxes(b)
    inter, union, (lo, hi) = _overlap(a, b)
    iou_ = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    enclose = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    empty = np.divide(enclose - union, enclose, out=np.zeros_like(inter), where=enclose > 0)
    return iou_ - empty


def _overlap(a: np.ndarray, b: np.ndarray):
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    union = areas(a)[:, None] + areas(b)[None, :] - inter
    enclosing = (
        np.minimum(a[:, None, :2], b[None, :, :2]),
        np.maximum(a[:, None, 2:], b[None, :, 2:]),
    )
    return inter, union, enclosing


def clip(boxes, width: float, height: float) -> np.ndarray:
    """xyxy boxes clipped to the image [0, width] x [0, height].

    >>> clip([[-5, 2, 120, 50]], width=100, height=40).tolist()
    [[0.0, 2.0, 100.0, 40.0]]
    """
    b = as_boxes(boxes).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
    return b


def problems(boxes, width: float, height: float, tolerance: float = 0.0) -> list[tuple[int, str]]:
    """(index, reason) for each xyxy box that is not a proper box inside the image.

    A box may reach `tolerance` pixels beyond an edge (annotation tools round outwards);
    callers clip those. Non-finite values, widths or heights <= 0 and boxes further out
    are problems.

    >>> problems([[0, 0, 10, 10], [5, 5, 5, 9], [90, 0, 130, 10]], width=100, height=50)
    [(1, 'its width is 0 (x0 = x1 = 5)'), (2, 'x1 = 130 lies 30 px beyond the image width 100')]
    """
    found = []
    for i, (x0, y0, x1, y1) in enumerate(as_boxes(boxes).tolist()):
        reason = _problem(x0, y0, x1, y1, width, height, tolerance)
        if reason:
            found.append((i, reason))
    return found


def _problem(x0, y0, x1, y1, width, height, tolerance) -> str | None:
    if not all(np.isfinite([x0, y0, x1, y1])):
        return f"it has a non-finite coordinate ({x0:g}, {y0:g}, {x1:g}, {y1:g})"
    for axis, lo, hi in (("width", x0, x1), ("height", y0, y1)):
        letter = "x" if axis == "width" else "y"
        if hi == lo:
            return f"its {axis} is 0 ({letter}0 = {letter}1 = {lo:g})"
        if hi < lo:
            return f"its {axis} is negative ({letter}1 = {hi:g} < {letter}0 = {lo:g})"
    for name, value, limit, axis, side in (
        ("x0", x0, width, "width", "left of"),
        ("y0", y0, height, "height", "above"),
        ("x1", x1, width, "width", "left of"),
        ("y1", y1, height, "height", "above"),
    ):
        if value < -tolerance:
            return f"{name} = {value:g} lies {-value:g} px {side} the image"
        if value > limit + tolerance:
            return f"{name} = {value:g} lies {value - limit:g} px beyond the image {axis} {limit:g}"
    return None


def check(boxes, width: float, height: float, tolerance: float = 0.0) -> None:
    """Raise ValueError naming the first improper box (see `problems`).

    >>> check([[0, 0, 10, -1]], width=20, height=20)
    Traceback (most recent call last):
    ...
    ValueError: box 0 (0, 0, 10, -1): its height is negative (y1 = -1 < y0 = 0)
    """
    found = problems(boxes, width, height, tolerance)
    if found:
        index, reason = found[0]
        coords = ", ".join(f"{v:g}" for v in as_boxes(boxes)[index])
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ValueError(f"box {index} ({coords}): {reason}{more}")
