"""What one image holds (Truth) and what a detector keeps for it (Detections).

Both are plain numpy, boxes xyxy in pixels of the image they describe, classes as indices
into the dataset's class names, so the torch and Keras paths hand the evaluator the same thing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnnspec.detection.boxes import as_boxes


class Truth(NamedTuple):
    """Ground truth of one image. `iscrowd` marks ignore regions as pycocotools treats them
    (COCO crowd boxes, and VOC's difficult objects): not targets, not counted in recall, and
    a detection on one is neither a hit nor a false positive. `areas` are COCO's "area"
    field (segment area) where the file gives it, else None for the boxes' own areas."""

    boxes: np.ndarray
    classes: np.ndarray
    iscrowd: np.ndarray
    areas: np.ndarray | None = None


class Detections(NamedTuple):
    """The detections kept for one image, best score first."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def make_truth(boxes, classes, iscrowd=None, areas=None) -> Truth:
    """A Truth from array-likes, with shapes checked (`iscrowd` defaults to none)."""
    b = as_boxes(boxes).astype(np.float32)
    c = np.asarray(classes, dtype=np.int64).reshape(-1)
    crowd = np.zeros(len(b), bool) if iscrowd is None else np.asarray(iscrowd, bool).reshape(-1)
    a = None if areas is None else np.asarray(areas, dtype=np.float64).reshape(-1)
    _check_lengths("truth", boxes=b, classes=c, iscrowd=crowd, areas=a)
    return Truth(b, c, crowd, a)


def make_detections(boxes, scores, classes) -> Detections:
    """Detections from array-likes, sorted by falling score."""
    b = as_boxes(boxes).astype(np.float32)
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    c = np.asarray(classes, dtype=np.int64).reshape(-1)
    _check_lengths("detections", boxes=b, scores=s, classes=c)
    order = np.argsort(-s, kind="stable")
    return Detections(b[order], s[order], c[order])


def _check_lengths(what: str, **arrays) -> None:
    lengths = {name: len(a) for name, a in arrays.items() if a is not None}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise ValueError(f"{what}: the arrays must have one row per object, got {listed}")
