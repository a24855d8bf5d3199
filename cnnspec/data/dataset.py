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
        return self.subset(np.flatnonzero(~is_val)), self.subset(np.flatnonzero(is_val))


def _stratified_pick(y, present, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    groups = y * 2 + (present > 0)
    picked = []
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        picked.append(members[: round(fraction * len(members))])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
