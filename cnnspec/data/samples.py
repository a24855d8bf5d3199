"""Samples: a dataset as an index (files or cached arrays plus targets), decoded per sample.

Every source is indexed up front: its targets (labels, present flags, boxes) are read, but
no image is decoded until a batch asks for it, so memory does not grow with the dataset.
`batch(rows)` (sample() for each row) is what a DataLoader worker (torch) or a tf.data
thread (Keras) calls; `materialize()` decodes everything into a Dataset, for small sets
and for `load`.

Readers are plain picklable objects so that worker processes receive them:
    FileImages   image (and mask) files, decoded with Pillow and resized per sample
    ArrayImages  images already in memory: the bundled sets, .npz files, `--cache ram`
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np

from cnnspec.data import TASKS, DataError
from cnnspec.data.dataset import Dataset, _stratified_pick, check_boxes, refuse_oversize
from cnnspec.data.imaging import decode_image, read_mask, resize_masks

CACHES = ("none", "ram")
STATS_LIMIT = 2048  # images a bare `normalize` fits its mean and std to (a seeded subset)


def path_array(paths) -> PathArray:
    """File paths as one PathArray (kept as it is when already one)."""
    if isinstance(paths, PathArray):
        return paths
    text = [os.fspath(p) for p in paths]
    prefix = os.path.commonprefix(text) if len(text) > 1 else ""
    cut = len(prefix)
    return PathArray(prefix, np.array([os.fsencode(t[cut:]) for t in text], dtype=np.bytes_))


@dataclass(frozen=True, eq=False)
class PathArray:
    """File paths as the prefix they share and one numpy bytes array of the rest;
    `paths[row]` is the row's path as a str.

    Forked decoding workers read it without touching any Python object's reference count,
    so its pages stay shared with the trainer: a tuple of Path objects was copied into
    each worker as the epoch read it (PyTorch issue 13246), 0.5 GiB more PSS at 100,000
    images than at 10,000. Each worker's RSS still counts the array again, so it is kept
    small: the part after the folder, as bytes, where a str array holds every path whole
    at 4 bytes a character (bench/data_pipeline.py's 100,000 paths: 17.5 MiB as str, 1.1 MiB
    here)."""

    prefix: str
    rest: np.ndarray  # dtype bytes_: os.fsencode of what follows the prefix

    def __len__(self) -> int:
        return len(self.rest)

    def __getitem__(self, row: int) -> str:
        return self.prefix + os.fsdecode(self.rest[row])


@dataclass(frozen=True, eq=False)
class FileImages:
    """Image files (and optional mask files), decoded to uint8 at `size` per sample.
    `paths` and `masks` are kept as PathArrays."""

    paths: PathArray
    size: tuple[int, int]
    channels: int
    masks: PathArray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", path_array(self.paths))
        if self.masks is not None:
            object.__setattr__(self, "masks", path_array(self.masks))

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, row: int) -> np.ndarray:
        return decode_image(self.paths[row], self.size, self.channels)

    def mask(self, row: int) -> np.ndarray:
        labels = read_mask(self.masks[row])
        return resize_masks(labels, self.size)


@dataclass(frozen=True, eq=False)
class ArrayImages:
    """Images in memory, (N, H, W, C) uint8 or float32 in [0, 1], masks (N, H, W)."""

    x: np.ndarray
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)

    def image(self, row: int) -> np.ndarray:
        return self.x[row]

    def mask(self, row: int) -> np.ndarray:
        return self.masks[row]


@dataclass(frozen=True, eq=False)
class ObjectArrays:
    """Every object of each image, padded to the most an image holds (K): boxes (N, K, 4)
    float32 xyxy in [0, 1], classes (N, K) int64 (-1: padding), crowd (N, K) bool (ignore
    regions: not trained on, and neither hits nor misses for the evaluator). frames (N, 6):
    how each image sits in the input (imaging.letterbox_frame), so that detections and
    ground truth are scored in the image's own pixels; None: the image is the input."""

    boxes: np.ndarray
    classes: np.ndarray
    crowd: np.ndarray
    frames: np.ndarray | None = None

    def rows(self, index) -> dict[str, np.ndarray]:
        """The batch keys of row(s) `index`."""
        rows = {
            "object_boxes": self.boxes[index],
            "object_classes": self.classes[index],
            "object_crowd": self.crowd[index],
            # objects augmentation moved out of the picture (counted for the log)
            "object_dropped": np.zeros(np.shape(self.classes[index])[:-1], np.int64),
        }
        if self.frames is not None:
            rows["object_frame"] = self.frames[index]
        return rows

    def subset(self, index) -> ObjectArrays:
        frames = None if self.frames is None else self.frames[index]
        return ObjectArrays(self.boxes[index], self.classes[index], self.crowd[index], frames)


@dataclass
class Samples:
    """An indexed dataset. `rows` select the reader's images; the target arrays are
    aligned with `rows`. `binary`: masks become 0/1 as they are decoded."""

    reader: FileImages | ArrayImages
    y: np.ndarray
    classes: list[str]
    task: str = "classify"
    boxes: np.ndarray | None = None
    present: np.ndarray | None = None
    has_masks: bool = False
    rows: np.ndarray | None = None
    binary: bool = False
    input_shape: tuple[int, int, int] = (0, 0, 0)
    # every object of each image (task "objects"): detection.assign's padded arrays, boxes
    # xyxy normalised to [0, 1] like `boxes`, class -1 on padding, crowd: ignore regions
    objects: ObjectArrays | None = None
    notes: tuple[str, ...] = ()  # what indexing left out, for the training log
    _stats: dict = field(default_factory=dict, init=False, repr=False)  # channel_stats memo

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y, dtype=np.int64)
        n = len(self.y)
        self.rows = np.arange(n) if self.rows is None else np.asarray(self.rows, np.int64)
        self.present = (
            np.ones(n, np.float32)
            if self.present is None
            else np.asarray(self.present, dtype=np.float32)
        )
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.float32)
            check_boxes(self.boxes, self.present)
        self.classes = [str(c) for c in self.classes]
        if self.objects is not None and len(self.objects.classes) != n:
            raise DataError(f"{len(self.objects.classes)} object rows for {n} images")
        if self.task not in TASKS:
            raise DataError(f"unknown task {self.task!r}", hint=f"use one of {', '.join(TASKS)}")
        if self.y.size and not 0 <= self.y.min() <= self.y.max() < len(self.classes):
            raise DataError(
                f"y holds labels {self.y.min()}..{self.y.max()} but there are "
                f"{len(self.classes)} classes",
                hint="labels are indices into the class list, from 0 to K-1",
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def cached(self) -> bool:
        return isinstance(self.reader, ArrayImages)

    # --- one sample ------------------------------------------------------------------------
    def sample(self, i: int) -> dict[str, np.ndarray]:
        """Row i decoded: x (H, W, C) float32 in [0, 1], y, present, and boxes (4,) and
        masks (H, W) int64 where the dataset has them; "index" is i."""
        row = int(self.rows[i])
        x = self.reader.image(row)
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        out = {"x": x, "y": self.y[i], "present": self.present[i], "index": np.int64(i)}
        if self.boxes is not None:
            out["boxes"] = self.boxes[i]
        if self.objects is not None:
            out.update(self.objects.rows(i))
        if self.has_masks:
            masks = np.asarray(self.reader.mask(row), dtype=np.int64)
            out["masks"] = (masks > 0).astype(np.int64) if self.binary else masks
            if out["masks"].size and out["masks"].max() >= len(self.classes):
                raise DataError(
                    f"{self._name(row)} holds class {int(out['masks'].max())} "
                    f"but {len(self.classes)} classes are named",
                    hint="list every class name, background first, in classes.txt or `classes`",
                )
        return out

    def batch(self, indices) -> dict[str, np.ndarray]:
        """Rows `indices` as one batch dict (sample() stacked); data in memory is gathered
        in one indexing operation rather than row by row."""
        indices = np.asarray(indices, dtype=np.int64)
        if not self.cached:
            items = [self.sample(int(i)) for i in indices]
            return {key: np.stack([item[key] for item in items]) for key in items[0]}
        rows = self.rows[indices]
        x = self.reader.x[rows]
        out = {
            "x": x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32),
            "y": self.y[indices],
            "present": self.present[indices],
            "index": indices,
        }
        if self.boxes is not None:
            out["boxes"] = self.boxes[indices]
        if self.objects is not None:
            out.update(self.objects.rows(indices))
        if self.has_masks:
            masks = np.asarray(self.reader.masks[rows], dtype=np.int64)
            out["masks"] = (masks > 0).astype(np.int64) if self.binary else masks
        return out

    def _name(self, row: int) -> str:
        if isinstance(self.reader, FileImages) and self.reader.masks is not None:
            return f"mask {self.reader.masks[row]}"
        return f"mask {row}"

    # --- views -----------------------------------------------------------------------------
    def subset(self, indices) -> Samples:
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            y=self.y[idx],
            present=self.present[idx],
            rows=self.rows[idx],
            boxes=None if self.boxes is None else self.boxes[idx],
            classes=list(self.classes),
            objects=None if self.objects is None else self.objects.subset(idx),
        )

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[Samples, Samples]:
        """The stratified split of Dataset.split (same rows for the same labels)."""
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(
                f"val_fraction must be in [0, 1), got {val_fraction}",
                hint="e.g. 0.1 keeps 10% of the images for validation",
            )
        is_val = np.zeros(len(self), dtype=bool)
        is_val[_stratified_pick(self.y, self.present, val_fraction, seed)] = True
        if is_val.all():
            raise DataError(
                f"validation_split {val_fraction} leaves no training images out of {len(self)}",
                hint="lower validation_split, or use more images",
            )
        return self.subset(np.flatnonzero(~is_val)), self.subset(np.flatnonzero(is_val))

    def cache(self) -> Samples:
        """The same samples with their pixels decoded once into RAM as uint8 (a quarter of
        float32): `--cache ram`."""
        if self.cached:
            return self
        h, w, c = self.input_shape
        refuse_oversize(
            len(self) * h * w * (c + (8 if self.has_masks else 0)),
            f"caching {len(self)} images of {w}x{h}",
            "use --cache none",
        )
        x = (
            np.stack([self.reader.image(int(r)) for r in self.rows])
            if len(self)
            else np.zeros((0, h, w, c), np.uint8)
        )
        masks = (
            np.stack([self.reader.mask(int(r)) for r in self.rows]).astype(np.int64)
            if self.has_masks
            else None
        )
        return dataclasses.replace(self, reader=ArrayImages(x, masks), rows=np.arange(len(self)))

    def materialize(self) -> Dataset:
        """Every sample decoded into one in-memory Dataset (float32 images)."""
        h, w, c = self.input_shape
        refuse_oversize(
            len(self) * h * w * (4 * c + (8 if self.has_masks else 0)),
            f"{len(self)} images of {w}x{h} as float32",
            "stream them instead",
        )
        decoded = [self.sample(i) for i in range(len(self))]
        return Dataset(
            x=np.stack([d["x"] for d in decoded]) if decoded else np.zeros((0, h, w, c)),
            y=self.y,
            classes=list(self.classes),
            task=self.task,
            boxes=self.boxes,
            masks=np.stack([d["masks"] for d in decoded]) if self.has_masks and decoded else None,
            present=self.present,
        )

    def channel_stats(self, limit: int = STATS_LIMIT, seed: int = 0):
        """(mean, std) per channel over the images (a seeded subset of `limit` of them when
        there are more), accumulated in float64 one image at a time."""
        picked = np.arange(len(self))
        if len(picked) > limit:
            picked = np.sort(np.random.default_rng(seed).choice(len(self), limit, False))
        total = squares = None
        count = 0
        for i in picked:
            flat = self.sample(int(i))["x"].reshape(-1, self.input_shape[2]).astype(np.float64)
            total = flat.sum(0) if total is None else total + flat.sum(0)
            squares = (flat**2).sum(0) if squares is None else squares + (flat**2).sum(0)
            count += len(flat)
        if not count:
            raise DataError("no images to fit normalize to")
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
        return mean, np.maximum(std, 1e-6)


def from_dataset(dataset: Dataset) -> Samples:
    """An in-memory Dataset as Samples (the bundled sets, .npz files, user arrays)."""
    return Samples(
        ArrayImages(dataset.x, dataset.masks),
        y=dataset.y,
        classes=list(dataset.classes),
        task=dataset.task,
        boxes=dataset.boxes,
        present=dataset.present,
        has_masks=dataset.masks is not None,
        input_shape=dataset.input_shape,
    )
