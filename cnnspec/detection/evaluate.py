"""COCO-style detection metrics, computed by pycocotools from numpy arrays.

The ground truth and the detections are turned into COCO objects in memory (no files) and
scored by pycocotools' own COCOeval, so the numbers are the ones every detection paper and
tool reports: AP averaged over IoU 0.50:0.05:0.95, AP at 0.5 and 0.75, AP by object size
(small < 32^2 <= medium < 96^2 <= large pixels of area), recall at 1/10/100 detections, and
per-class AP read from COCOeval's precision table as detectron2 does. pycocotools prints
its progress on stdout; that is captured so that cnnspec's own output stays clean.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

from cnnspec.detection.boxes import convert
from cnnspec.detection.objects import Detections, Truth

# The order of COCOeval.stats, as COCOeval.summarize() defines it.
STATS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "ar_1",
    "ar_10",
    "ar_100",
    "ar_small",
    "ar_medium",
    "ar_large",
)


def evaluate(
    truths: Sequence[Truth], detections: Sequence[Detections], classes: Sequence[str]
) -> dict:
    """COCO box metrics of `detections` against `truths` (one of each per image, in order).

    Returns a plain dict: the twelve COCO figures under STATS' names (None where COCO
    prints -1: no ground truth in that size range), "per_class" ({name: {"ap", "ap_50"}},
    None for a class without ground truth) and "counts" (images, objects, ignored crowd or
    difficult regions, detections).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(truths) != len(detections):
        raise ValueError(
            f"evaluate needs one Detections per image: got {len(truths)} truths "
            f"and {len(detections)} detections"
        )
    names = list(classes)
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO()
        ground.dataset = _ground_truth_document(truths, names)
        ground.createIndex()
        results = _results(detections, len(names))
        found = ground.loadRes(results) if results else _empty_results(ground)
        scorer = COCOeval(ground, found, iouType="bbox")
        scorer.evaluate()
        scorer.accumulate()
        scorer.summarize()
    metrics = {name: _figure(value) for name, value in zip(STATS, scorer.stats)}
    metrics["per_class"] = _per_class(scorer.eval["precision"], names)
    crowd = int(sum(int(np.count_nonzero(t.iscrowd)) for t in truths))
    metrics["counts"] = {
        "images": len(truths),
        "objects": int(sum(len(t.boxes) for t in truths)) - crowd,
        "ignored": crowd,
        "detections": len(results),
    }
    return metrics


def _ground_truth_document(truths: Sequence[Truth], names: list[str]) -> dict:
    images, annotations = [], []
    for image_id, truth in enumerate(truths, start=1):
        _check_classes(truth.classes, len(names), f"truth of image {image_id - 1}")
        # COCO wants a size per image; nothing in the evaluation reads it.
        images.append({"id": image_id, "width": 0, "height": 0})
        boxes = convert(truth.boxes, "xyxy", "xywh")
        areas = boxes[:, 2] * boxes[:, 3] if truth.areas is None else truth.areas
        for box, label, crowd, area in zip(boxes, truth.classes, truth.iscrowd, areas):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [float(v) for v in box],
                    "area": float(area),
                    "iscrowd": int(bool(crowd)),
                }
            )
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(names)]
    return {
        "info": {},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def _results(detections: Sequence[Detections], n_classes: int) -> list[dict]:
    results = []
    for image_id, found in enumerate(detections, start=1):
        _check_classes(found.classes, n_classes, f"detections of image {image_id - 1}")
        for box, score, label in zip(
            convert(found.boxes, "xyxy", "xywh"), found.scores, found.classes
        ):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )
    return results


def _empty_results(ground):
    """A result set with no detections; pycocotools' loadRes cannot build one from []."""
    from pycocotools.coco import COCO

    empty = COCO()
    empty.dataset = {**ground.dataset, "annotations": []}
    empty.createIndex()
    return empty


def _check_classes(labels: np.ndarray, n_classes: int, where: str) -> None:
    bad = [int(v) for v in labels if not 0 <= int(v) < n_classes]
    if bad:
        raise ValueError(f"{where}: class index {bad[0]} is not in 0..{n_classes - 1}")


def _figure(value: float) -> float | None:
    return None if value < 0 else float(value)


def _per_class(precision: np.ndarray, names: list[str]) -> dict:
    # precision is [IoU threshold, recall point, class, area range, max detections], -1
    # where a class has no ground truth; area "all" is 0 and 100 detections is the last.
    table = {}
    for k, name in enumerate(names):
        every = precision[:, :, k, 0, -1]
        at_50 = precision[0, :, k, 0, -1]
        table[name] = {
            "ap": float(every[every > -1].mean()) if (every > -1).any() else None,
            "ap_50": float(at_50[at_50 > -1].mean()) if (at_50 > -1).any() else None,
        }
    return table
