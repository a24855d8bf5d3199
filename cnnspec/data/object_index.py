"""An index of a detection dataset that keeps every object, without decoding any image.

The COCO, VOC and YOLO readers (coco_objects, voc_objects, yolo_objects) all return an
ObjectIndex: per image its file, its size and every annotated object (xyxy pixel box, class
index, crowd and difficult flags), so that a streaming pipeline can decode images per batch.

Bad annotations follow one rule, `invalid`:
    "error" (the default)  the first bad box or missing image file stops the read with a
                           DataError naming the file and the annotation
    "skip"                 the bad annotation (or the image whose file is missing) is left
                           out and listed in ObjectIndex.skipped, one line each, for the log
Mistakes that make the whole file ambiguous (an unknown category or class, a malformed
line or field, an annotation of an image that is not listed) are always errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnspec.data import DataError
from cnnspec.detection import boxes as box_rules
from cnnspec.detection.objects import Truth, make_truth

POLICIES = ("error", "skip")

# Annotation tools round outwards, and COCO's float boxes overshoot the border by a fraction
# of a pixel; up to this much beyond an edge is clipped, not refused.
EDGE_TOLERANCE = 1.0


@dataclass(frozen=True)
class IndexedImage:
    """One image and all its objects; `ids` name the objects as their file does (COCO
    annotation ids, "object 2" in a VOC file, "line 3" of a YOLO label file)."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray
    ids: tuple = ()
    areas: np.ndarray | None = None

    @property
    def targets(self) -> np.ndarray:
        """The objects to learn: not crowd regions (as torchvision's and detectron2's COCO
        loaders drop them) and not VOC difficult ones."""
        return ~(self.iscrowd | self.difficult)

    def truth(self) -> Truth:
        """The ground truth for the evaluator: crowd and difficult objects become
        pycocotools' ignore regions (iscrowd)."""
        return make_truth(self.boxes, self.classes, self.iscrowd | self.difficult, self.areas)


@dataclass
class ObjectIndex:
    images: list[IndexedImage]
    classes: list[str]
    source: Path
    skipped: list[str] = field(default_factory=list)

    def truths(self) -> list[Truth]:
        return [image.truth() for image in self.images]

    def describe(self) -> str:
        """One line for the log, e.g. '3 images (1 without objects), 7 objects (1 crowd,
        0 difficult), 2 annotations skipped'."""
        objects = sum(len(image.boxes) for image in self.images)
        negatives = sum(1 for image in self.images if not image.targets.any())
        crowd = sum(int(image.iscrowd.sum()) for image in self.images)
        difficult = sum(int(image.difficult.sum()) for image in self.images)
        return (
            f"{len(self.images)} images ({negatives} without objects), {objects} objects "
            f"({crowd} crowd, {difficult} difficult), {len(self.skipped)} annotations skipped"
        )


class Problems:
    """Applies the `invalid` policy: raise at the first problem, or record it."""

    def __init__(self, policy: str) -> None:
        if policy not in POLICIES:
            raise DataError(
                f"unknown rule for invalid annotations: {policy!r}",
                hint=f"use one of: {', '.join(POLICIES)}",
            )
        self.policy = policy
        self.skipped: list[str] = []

    def report(self, message: str, hint: str | None = None) -> None:
        if self.policy == "error":
            raise DataError(
                message,
                hint=hint
                or "fix the annotation, or read with invalid='skip'"
                " to leave such annotations out (each is listed)",
            )
        self.skipped.append(message)


def make_image(
    path: Path, size: tuple[int, int], objects: list[dict], where: str, problems: Problems
) -> IndexedImage:
    """An IndexedImage from objects {"box" (xyxy px), "class", "id", and optionally
    "iscrowd", "difficult", "area"}; bad boxes go to `problems`, kept ones are clipped."""
    width, height = size
    bad = dict(box_rules.problems([o["box"] for o in objects], width, height, EDGE_TOLERANCE))
    for index, reason in sorted(bad.items()):
        coords = ", ".join(f"{v:g}" for v in objects[index]["box"])
        problems.report(
            f"{where}: annotation {objects[index]['id']}: box ({coords}) in a "
            f"{width}x{height} image: {reason}"
        )
    kept = [o for i, o in enumerate(objects) if i not in bad]
    areas = None
    if kept and all("area" in o for o in kept):
        areas = np.array([float(o["area"]) for o in kept])
    return IndexedImage(
        path=path,
        width=int(width),
        height=int(height),
        boxes=box_rules.clip([o["box"] for o in kept], width, height).astype(np.float32),
        classes=np.array([o["class"] for o in kept], dtype=np.int64),
        iscrowd=np.array([bool(o.get("iscrowd", False)) for o in kept], dtype=bool),
        difficult=np.array([bool(o.get("difficult", False)) for o in kept], dtype=bool),
        ids=tuple(o["id"] for o in kept),
        areas=areas,
    )
