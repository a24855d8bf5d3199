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


# Columns of the flat rows that carry objects between processes (train.driver.Comm.stack):
# truths (image, x0, y0, x1, y1, class, crowd, area: NaN for the box's own) and detections
# (image, x0, y0, x1, y1, score, class). float64 holds every value exactly.
TRUTH_COLUMNS, DETECTION_COLUMNS = 8, 7


def to_rows(
    truths: list[Truth], detections: list[Detections], first: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The objects of images `first`, `first` + 1, ... as (truth rows, detection rows)."""
    t_rows = [np.zeros((0, TRUTH_COLUMNS))]
    d_rows = [np.zeros((0, DETECTION_COLUMNS))]
    for image, (truth, found) in enumerate(zip(truths, detections), start=first):
        n, k = len(truth.boxes), len(found.boxes)
        areas = np.full(n, np.nan) if truth.areas is None else truth.areas
        truth_columns = [np.full(n, image), truth.boxes, truth.classes, truth.iscrowd, areas]
        found_columns = [np.full(k, image), found.boxes, found.scores, found.classes]
        t_rows.append(np.column_stack(truth_columns).reshape(n, TRUTH_COLUMNS))
        d_rows.append(np.column_stack(found_columns).reshape(k, DETECTION_COLUMNS))
    return np.concatenate(t_rows).astype(np.float64), np.concatenate(d_rows).astype(np.float64)


def from_rows(
    truth_rows: np.ndarray, detection_rows: np.ndarray, images: int
) -> tuple[list[Truth], list[Detections]]:
    """The per-image lists of to_rows' rows for images 0 .. images - 1 (inverse of to_rows)."""
    t_image = truth_rows[:, 0].astype(np.int64)
    d_image = detection_rows[:, 0].astype(np.int64)
    truths, detections = [], []
    for image in range(images):
        t = truth_rows[t_image == image]
        d = detection_rows[d_image == image]
        areas = None if np.isnan(t[:, 7]).all() else t[:, 7]
        truths.append(make_truth(t[:, 1:5], t[:, 5], t[:, 6] > 0, areas))
        detections.append(make_detections(d[:, 1:5], d[:, 5], d[:, 6]))
    return truths, detections
