"""Where a dense detection head's predictions sit: its priors, and the one layout of its output.

A dense head (RetinaNet, SSD, FCOS, YOLO) predicts at every cell of one or more feature maps
("levels"), once per anchor of the cell or once per cell when it is anchor-free. Each of those
places is a *prior*. Training assigns ground truth to priors and decoding turns a prior's
prediction into a box, so both read the priors from here.

The output of a head, in both backends, is one tensor of shape (batch, P, 4 + C + E):
    priors     level by level (in the order the head lists them), then row, column, anchor:
               torchvision's order (RetinaNet's `permute(0, 3, 4, 1, 2)`), and what an NHWC
               reshape gives in Keras
    columns    the 4 box numbers (offsets from an anchor, or distances from a point: `coder`),
               then the C class scores (logits), then E extra columns (objectness or
               centre-ness: `extra`)

Numpy only, like the rest of cnnspec.detection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CODERS = ("offsets", "distances")  # R-CNN/RetinaNet/SSD anchor offsets; FCOS/YOLOv8 distances
EXTRAS = ("none", "objectness", "centerness")
ACTIVATIONS = ("sigmoid", "softmax")  # softmax: SSD's, with the background as class 0


@dataclass(frozen=True)
class Geometry:
    """The levels a head predicts on.

    strides       input pixels per cell, one per level
    shapes        (rows, columns) of each level's feature map
    anchors       per level, the (width, height) of each anchor in pixels; None: anchor-free,
                  one prior per cell
    offset        where a cell's prior is centred, in cells: 0.0 puts it on the cell's corner
                  (torchvision's AnchorGenerator), 0.5 at its centre (YOLO)
    """

    strides: tuple[int, ...]
    shapes: tuple[tuple[int, int], ...]
    anchors: tuple[tuple[tuple[float, float], ...], ...] | None = None
    offset: float = 0.0
    # Added for SSD's default boxes (torchvision's DefaultBoxGenerator); the defaults keep the
    # rules above. steps: per level, the (x, y) input pixels per cell that place the priors
    # (image size / map size, not always the integer stride: 320 / 3 on a 3x3 map); None:
    # the stride. rounded: whether anchor corners are rounded to whole pixels (AnchorGenerator
    # rounds, DefaultBoxGenerator does not).
    steps: tuple[tuple[float, float], ...] | None = None
    rounded: bool = True

    def __post_init__(self) -> None:
        if len(self.strides) != len(self.shapes):
            raise ValueError(f"{len(self.strides)} strides for {len(self.shapes)} levels")
        if self.anchors is not None and len(self.anchors) != len(self.shapes):
            raise ValueError(f"anchors for {len(self.anchors)} levels, not {len(self.shapes)}")

    def per_cell(self, level: int) -> int:
        """Priors per cell of a level: its anchor count, or 1 when anchor-free."""
        return 1 if self.anchors is None else len(self.anchors[level])

    @property
    def level_counts(self) -> tuple[int, ...]:
        """Priors per level, in the output's order."""
        return tuple(h * w * self.per_cell(i) for i, (h, w) in enumerate(self.shapes))

    @property
    def count(self) -> int:
        """P, the number of priors over all levels."""
        return sum(self.level_counts)

    def level_spans(self) -> list[tuple[int, int]]:
        """(first, end) prior of each level, in the output's order."""
        ends = np.cumsum(self.level_counts).tolist()
        return list(zip([0, *ends[:-1]], ends))


@dataclass(frozen=True)
class HeadInfo:
    """What training and decoding need to know of one head output of a model.

    output        the output node's name
    classes       C, class columns (for softmax heads, the background column 0 included)
    coder         "offsets" (dx, dy, dw, dh per anchor, divided by `coder_weights` as
                  torchvision's BoxCoder) or "distances" (left, top, right, bottom per point,
                  in units of the level's stride)
    extra         "none", "objectness" (YOLO) or "centerness" (FCOS): one column after classes
    activation    how class columns become scores: "sigmoid" per class or "softmax" over them
    """

    output: str
    classes: int
    geometry: Geometry
    coder: str = "distances"
    coder_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    extra: str = "none"
    activation: str = "sigmoid"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("coder", self.coder, CODERS),
            ("extra", self.extra, EXTRAS),
            ("activation", self.activation, ACTIVATIONS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} {value!r}: use one of {', '.join(allowed)}")
        if (self.coder == "offsets") != (self.geometry.anchors is not None):
            raise ValueError("offsets need anchors and distances need an anchor-free geometry")

    @property
    def columns(self) -> int:
        """4 + C + E, the last axis of the head's output."""
        return 4 + self.classes + (self.extra != "none")


def points(geometry: Geometry) -> np.ndarray:
    """(P, 2) x, y of every prior's centre in input pixels, in the output's order."""
    rows = []
    for level, ((h, w), stride) in enumerate(zip(geometry.shapes, geometry.strides)):
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        step = stride if geometry.steps is None else np.asarray(geometry.steps[level])
        centres = (np.stack([xs, ys], axis=-1).reshape(-1, 2) + geometry.offset) * step
        rows.append(np.repeat(centres, geometry.per_cell(level), axis=0))
    return np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, 2))


def strides(geometry: Geometry) -> np.ndarray:
    """(P,) the stride of every prior's level."""
    return np.repeat(np.asarray(geometry.strides, np.float64), geometry.level_counts)


def anchor_boxes(geometry: Geometry) -> np.ndarray:
    """(P, 4) xyxy anchors in input pixels, in the output's order.

    Each anchor's corners are its (width, height) halved and rounded to whole pixels around
    the prior's centre, as torchvision's AnchorGenerator rounds its cell anchors."""
    if geometry.anchors is None:
        raise ValueError("an anchor-free geometry has no anchor boxes")
    centres = points(geometry)
    sizes = np.concatenate(
        [
            np.tile(np.asarray(geometry.anchors[i], np.float64), (h * w, 1))
            for i, (h, w) in enumerate(geometry.shapes)
        ]
        or [np.zeros((0, 2))]
    )
    half = np.round(sizes / 2) if geometry.rounded else sizes / 2
    return np.concatenate([centres - half, centres + half], axis=1)


def anchor_sizes(
    sizes: tuple[tuple[float, ...], ...], ratios: tuple[tuple[float, ...], ...]
) -> tuple[tuple[tuple[float, float], ...], ...]:
    """Per level, the (width, height) of its anchors from torchvision's AnchorGenerator
    arguments: level i has an anchor for each aspect ratio (height / width) in ratios[i]
    and, within it, each size in sizes[i] (the square root of its area).

    >>> anchor_sizes(((32, 64),), ((1.0, 4.0),))[0]
    ((32.0, 32.0), (64.0, 64.0), (16.0, 64.0), (32.0, 128.0))
    """
    if len(sizes) != len(ratios):
        raise ValueError(f"sizes for {len(sizes)} levels but ratios for {len(ratios)}")
    levels = []
    for level_sizes, level_ratios in zip(sizes, ratios):
        level = []
        for ratio in level_ratios:
            h_ratio = float(np.sqrt(ratio))
            level.extend((size / h_ratio, size * h_ratio) for size in level_sizes)
        levels.append(tuple(level))
    return tuple(levels)


def default_box_sizes(
    scales: tuple[float, ...], ratios: tuple[float, ...], image: tuple[int, int], clip: bool = True
) -> tuple[tuple[tuple[float, float], ...], ...]:
    """Per level, the (width, height) in pixels of SSD's default boxes (Liu et al. 2016, p. 6;
    torchvision's DefaultBoxGenerator): scale s_k and sqrt(s_k * s_k+1) squares, then for each
    aspect ratio a, (s_k * sqrt(a), s_k / sqrt(a)) and its transpose; relative sizes clipped to
    [0, 1] (clip) and multiplied by the image's (height, width) = `image`. `scales` has one
    more entry than there are levels.

    >>> [(round(w, 2), round(h, 2)) for w, h in default_box_sizes((0.5, 1.0), (2.0,), (100, 80))[0]]
    [(40.0, 50.0), (56.57, 70.71), (56.57, 35.36), (28.28, 70.71)]
    """
    levels = []
    for k in range(len(scales) - 1):
        s, s_next = scales[k], scales[k + 1]
        pairs = [(s, s), (float(np.sqrt(s * s_next)),) * 2]
        for a in ratios:
            pairs += [(s * float(np.sqrt(a)), s / float(np.sqrt(a)))]
            pairs += [(s / float(np.sqrt(a)), s * float(np.sqrt(a)))]
        if clip:
            pairs = [(min(max(w, 0.0), 1.0), min(max(h, 0.0), 1.0)) for w, h in pairs]
        levels.append(tuple((w * image[1], h * image[0]) for w, h in pairs))
    return tuple(levels)
