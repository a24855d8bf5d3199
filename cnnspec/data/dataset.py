"""The Dataset container shared by every source, split and batch iterator."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from cnnspec.data import TASKS, DataError


@dataclass
class Dataset:
    """Images and targets as numpy arrays, aligned on the first axis.

    x:       (N, H, W, C) float32 in [0, 1]
    y:       (N,) int64, an index into `classes` (for an image without an object,
             `present` is 0 and `y` is 0: mask the class loss with `present`)
    boxes:   (N, 4) float32 [x0, y0, x1, y1] normalised to [0, 1], or None
    masks:   (N, H, W) int64 class index per pixel (0 = background), or None
    present: (N,) float32, 1 where the image holds an object
    classes: class names; `y` and `masks` index into it
    task:    "classify", "detect" or "segment": what the data was loaded for
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    task: str = "classify"
    boxes: np.ndarray | None = None
    masks: np.ndarray | None = None
    present: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.int64)
        if self.present is None:
            self.present = np.ones(len(self.y), dtype=np.float32)
        self.present = np.asarray(self.present, dtype=np.float32)
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.float32)
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=np.int64)
        self.classes = [str(name) for name in self.classes]
        self._check()

    def _check(self) -> None:
        # Datasets can be built from user arrays (npz), so bad shapes are DataErrors.
        n = len(self.x)
        if self.x.ndim != 4:
            raise DataError(f"images must be (N, H, W, C), got shape {self.x.shape}")
        if 0 in self.x.shape[1:3]:
            raise DataError(
                f"the images are {self.x.shape[2]}x{self.x.shape[1]} pixels: nothing to learn from",
                hint="images need at least one pixel",
            )
        expected = {"y": (n,), "present": (n,)}
        if self.boxes is not None:
            expected["boxes"] = (n, 4)
        if self.masks is not None:
            expected["masks"] = self.x.shape[:3]
        for name, shape in expected.items():
            actual = getattr(self, name).shape
            if actual != shape:
                raise DataError(f"{name} has shape {actual} but {n} images need {shape}")
        for name in ("y", "masks"):
            labels = getattr(self, name)
            if (
                labels is not None
                and labels.size
                and not 0 <= labels.min() <= labels.max() < len(self.classes)
            ):
                raise DataError(
                    f"{name} holds labels {labels.min()}..{labels.max()} but there are "
                    f"{len(self.classes)} classes",
                    hint="labels are indices into the class list, from 0 to K-1",
                )
        if self.boxes is not None:
            check_boxes(self.boxes, self.present)
        if self.task not in TASKS:
            raise DataError(f"unknown task {self.task!r}", hint=f"use one of {', '.join(TASKS)}")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x.shape[1:])

    def subset(self, indices) -> Dataset:
        """A new Dataset holding the given rows (copies, so callers may mutate)."""
        idx = np.asarray(indices, dtype=np.int64)
        pick = lambda a: None if a is None else a[idx]
        return dataclasses.replace(
            self,
            x=self.x[idx],
            y=self.y[idx],
            boxes=pick(self.boxes),
            masks=pick(self.masks),
            present=self.present[idx],
            classes=list(self.classes),
        )

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Deterministic stratified split into (train, val), both in original order.

        Each (class, present) group gives round(val_fraction * size) images to val,
        so both sides keep the class balance and the share of empty images.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(
                f"val_fraction must be in [0, 1), got {val_fraction}",
                hint="e.g. 0.1 keeps 10% of the images for validation",
            )
        val = _stratified_pick(self.y, self.present, val_fraction, seed)
        is_val = np.zeros(len(self), dtype=bool)
        is_val[val] = True
        if is_val.all():  # training on nothing and reporting a held-out figure: refuse
            raise DataError(
                f"validation_split {val_fraction} leaves no training images out of {len(self)}",
                hint="lower validation_split, or use more images",
            )
        return self.subset(np.flatnonzero(~is_val)), self.subset(np.flatnonzero(is_val))


def check_boxes(boxes: np.ndarray, present: np.ndarray, where: str = "boxes") -> None:
    """Raise DataError unless every box of an image with an object is finite,
    [x0, y0, x1, y1] with x0 < x1 and y0 < y1, inside the image ([0, 1] normalised)."""
    shown = present > 0
    for i in np.flatnonzero(shown):
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        problem = box_problem(x0, y0, x1, y1, 1.0, 1.0)
        if problem:
            raise DataError(
                f"{where}[{i}] = [{x0:g}, {y0:g}, {x1:g}, {y1:g}] {problem}",
                hint="boxes are [x0, y0, x1, y1] normalised to [0, 1], x0 < x1 and y0 < y1",
            )


def box_problem(x0, y0, x1, y1, width, height, slack: float = 0.0) -> str | None:
    """Why a box cannot be trained on, or None. `slack`: how far past the edge (in the
    box's units) is taken for rounding and clipped."""
    if not all(np.isfinite(v) for v in (x0, y0, x1, y1)):
        return "is not a number (NaN or infinite)"
    if x1 <= x0 or y1 <= y0:
        return "has no area (negative or zero width or height)"
    if x0 < -slack or y0 < -slack or x1 > width + slack or y1 > height + slack:
        return f"lies outside the {width:g}x{height:g} image"
    return None


def refuse_oversize(nbytes: int, what: str, hint: str) -> None:
    """Raise DataError when `what` would take more than half of this machine's memory:
    a MemoryError (or the OOM killer) after minutes is no answer."""
    limit = memory_limit()
    if nbytes > limit:
        raise DataError(
            f"{what} would take {_size(nbytes)} of memory; this machine allows "
            f"{_size(limit)} (half of its RAM)",
            hint=hint,
        )


def memory_limit() -> int:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _stratified_pick(y, present, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    groups = y * 2 + (present > 0)
    picked = []
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        picked.append(members[: round(fraction * len(members))])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
