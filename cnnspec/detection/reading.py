"""Reading a dense head's raw output (batch, P, 4 + C + E): boxes, scores, detections.

The layout is the one of cnnspec.detection.priors, so this is the same numpy for both
backends; only the suppression calls the framework's kernel (postprocess.select).
    decode    xyxy boxes in input pixels (postprocess.decode_offsets on the anchors, or
              decode_distances from the points scaled by their stride; a negative
              distance counts as 0, as FCOS' ReLU and the training losses make it) and per-class
              scores: the class sigmoids, times the objectness sigmoid (YOLO), or the
              geometric mean with the centre-ness sigmoid (torchvision's FCOS); a softmax
              head's background column 0 is dropped (SSD)
    detect    decode, clip to the image, then class-aware NMS under `Settings`, on the
              candidates torchvision's post-processing keeps (`candidates`)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cnnspec.detection.boxes import clip
from cnnspec.detection.objects import Detections
from cnnspec.detection.postprocess import decode_distances, decode_offsets, select
from cnnspec.detection.priors import HeadInfo, anchor_boxes, points, strides


@dataclass(frozen=True)
class Settings:
    """What inference keeps: candidates scoring above `score_threshold`, at most `top_k` of
    them per level (sigmoid heads) or per class (softmax heads; None: all), suppression of
    same-class boxes overlapping more than `iou_threshold`, at most `max_detections` per
    image. The defaults are torchvision's RetinaNet's (COCO's 0.05, 0.5, 100, and 1,000
    candidates a level, the top-k of Detectron and mmdetection too); its FCOS takes 0.2,
    0.6, 100, 1,000 and its SSDlite 0.001, 0.55, 300, 300."""

    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_detections: int = 100
    top_k: int | None = 1000

    def __post_init__(self) -> None:
        for name in ("score_threshold", "iou_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]. Received: {name}={value}")
        if int(self.max_detections) < 1:
            raise ValueError(
                f"max_detections must be at least 1. Received: max_detections={self.max_detections}"
            )
        if self.top_k is not None and int(self.top_k) < 1:
            raise ValueError(f"top_k must be at least 1 (or None). Received: top_k={self.top_k}")


def check_output(head: HeadInfo, raw) -> np.ndarray:
    """The output as a float32 (B, P, 4 + C + E) array, or a ValueError naming both shapes."""
    out = np.asarray(raw, dtype=np.float32)
    expected = (head.geometry.count, head.columns)
    if out.ndim != 3 or out.shape[1:] != expected:
        raise ValueError(
            f"head {head.output}: expected an output of shape (batch, {expected[0]}, "
            f"{expected[1]}) (priors, 4 + {head.classes} classes"
            f"{'' if head.extra == 'none' else ' + ' + head.extra}), got {out.shape}"
        )
    return out


def decode(head: HeadInfo, raw) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (B, P, 4) xyxy input pixels, scores (B, P, C') in [0, 1]) of a raw output;
    C' is C, or C - 1 for a softmax head (its background column dropped)."""
    out = check_output(head, raw)
    keep = np.ones(out.shape[:2], bool)
    return _boxes(head, out, keep), scores_of(head, out)


def _boxes(head: HeadInfo, out: np.ndarray, keep: np.ndarray, rows=None) -> np.ndarray:
    """(B, N, 4) boxes of the (B, N) priors `rows` (all P when None) whose raw outputs
    `out` holds, decoded where `keep` says (zeros elsewhere)."""
    boxes = np.zeros((*out.shape[:2], 4), np.float32)
    image, column = np.nonzero(keep)
    prior = column if rows is None else rows[image, column]
    if not len(prior):
        return boxes
    deltas = out[keep, :4]
    if head.coder == "offsets":
        found = decode_offsets(_priors(head.geometry)[0][prior], deltas, head.coder_weights)
    else:
        centres, scale = _priors(head.geometry)
        # below 0 counts as 0, as in training (dense_torch)
        found = decode_distances(centres[prior], np.maximum(deltas, 0), scale[prior])
    boxes[keep] = found
    return boxes


@lru_cache(maxsize=16)
def _priors(geometry) -> tuple[np.ndarray, np.ndarray | None]:
    """(anchor boxes, None) or (points, strides) of a geometry, made once per geometry."""
    if geometry.anchors is not None:
        return anchor_boxes(geometry), None
    return points(geometry), strides(geometry)


def scores_of(head: HeadInfo, out: np.ndarray) -> np.ndarray:
    logits = out[..., 4 : 4 + head.classes]
    if head.activation == "softmax":
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return (shifted / shifted.sum(-1, keepdims=True))[..., 1:].astype(np.float32)
    scores = _sigmoid(logits)
    if head.extra == "objectness":
        scores = scores * _sigmoid(out[..., -1:])
    elif head.extra == "centerness":
        scores = np.sqrt(scores * _sigmoid(out[..., -1:]))
    return scores.astype(np.float32)


def detect(
    head: HeadInfo,
    raw,
    *,
    framework: str,
    settings: Settings = Settings(),
    image_size: tuple[int, int] | None = None,
) -> list[Detections]:
    """The detections kept per image: decode, clip to the (height, width) image when it is
    given, and class-aware NMS with the framework's kernel (postprocess.select)."""
    out = check_output(head, raw)
    scores = candidates(head, scores_of(head, out), settings)
    # Only priors where some class clears the threshold can be kept: gather those (per image,
    # padded with zero scores to the most any image has) before decoding and suppression,
    # as torchvision's post-processing filters before it decodes.
    keep = scores.max(-1, initial=0.0) > settings.score_threshold
    rows = np.argsort(~keep, axis=1, kind="stable")[:, : max(1, int(keep.sum(1).max()))]
    kept = np.take_along_axis(keep, rows, axis=1)
    out = np.take_along_axis(out, rows[..., None], axis=1)
    scores = np.take_along_axis(scores, rows[..., None], axis=1) * kept[..., None]
    boxes = _boxes(head, out, kept, rows)
    if image_size is not None:
        height, width = image_size
        boxes = clip(boxes.reshape(-1, 4), width, height).reshape(boxes.shape).astype(np.float32)
    return select(
        boxes,
        scores,
        framework=framework,
        iou_threshold=settings.iou_threshold,
        score_threshold=settings.score_threshold,
        max_detections=settings.max_detections,
    )


def candidates(head: HeadInfo, scores: np.ndarray, settings: Settings) -> np.ndarray:
    """`scores` (B, P, C') with every (prior, class) pair that post-processing does not
    consider set to 0: those at or under the score threshold, and those beyond the `top_k`
    best of their group. A group is, as in torchvision's postprocess_detections, one level's
    (prior, class) pairs for a sigmoid head (RetinaNet, FCOS: `topk_candidates` per level)
    and one class's priors for a softmax head (SSD: per class)."""
    scores = np.where(scores > settings.score_threshold, scores, np.float32(0))
    k = settings.top_k
    if k is None:
        return scores
    batch, count, classes = scores.shape
    if head.activation == "softmax":
        rows = np.ascontiguousarray(scores.transpose(0, 2, 1)).reshape(-1, count)
        _cut(rows, k)
        return rows.reshape(batch, classes, count).transpose(0, 2, 1)
    for start, end in head.geometry.level_spans():
        rows = scores[:, start:end].reshape(batch, -1)  # level by level: (prior, class) pairs
        _cut(rows, k)
        scores[:, start:end] = rows.reshape(batch, end - start, classes)
    return scores


def _cut(rows: np.ndarray, k: int) -> None:
    """Zero all but the k largest positive entries of each row, in place (which of equal
    scores stays is arbitrary, as with torch.topk)."""
    for row in np.flatnonzero((rows > 0).sum(1) > k):
        where = np.flatnonzero(rows[row] > 0)
        rows[row, where[np.argpartition(rows[row, where], len(where) - k)[: len(where) - k]]] = 0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 1 / (1 + exp(-x)) written with tanh, which never overflows
    return 0.5 * (1.0 + np.tanh(0.5 * x))
