"""Data handed over from Python, as Samples: numpy arrays, a torch Dataset or DataLoader, a
tf.data.Dataset. `cnnspec.fit(spec, data=...)` takes them beside the source names and paths.

    arrays            (x, y): x (N, H, W, C) or (N, C, H, W), uint8 or float in [0, 1];
                      y (N,) class indices (classification) or (N, H, W) masks (segmentation)
    torch Dataset     map-style, item i = (image, label); the image a CHW tensor (float in
                      [0, 1] or uint8), a PIL image or an HWC array. It is read per sample in
                      the loader's workers, so it may be larger than memory; the labels come
                      from its `targets` when it has them (torchvision's ImageFolder, MNIST ...),
                      otherwise from one pass over it.
    torch DataLoader  its dataset (cnnspec batches, shuffles and shards itself)
    tf.data.Dataset   finite, of (image, label) pairs, batched or not: read once into memory
                      (a tf.data pipeline has no random access; for data larger than memory
                      hand over the files instead)

Images are resized (bilinear) to the spec's input and converted to its channels, as files
are. Anything else is a DataError that says what is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import DataError
from .dataset import Dataset
from .imaging import fit_images
from .samples import Samples, from_dataset

ACCEPTED = (
    "a source name or path, (x, y) numpy arrays, a torch Dataset or DataLoader, "
    "or a tf.data.Dataset"
)


def is_foreign(data) -> bool:
    """Whether `data` is Python data rather than a source name or path."""
    import os

    return not isinstance(data, (str, os.PathLike))


def describe(data) -> str:
    """A short name for result.json and logs (never the data itself)."""
    if isinstance(data, (tuple, list)):
        return f"arrays x{tuple(np.shape(data[0]))}"
    return type(data).__module__.split(".")[0] + "." + type(data).__name__


def samples(data, input_shape, task: str) -> Samples:
    """`data` indexed for a network taking (H, W, C) images, for `task`."""
    size, channels = (int(input_shape[0]), int(input_shape[1])), int(input_shape[2])
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise DataError(
                f"arrays are given as (x, y), got {len(data)} items", hint=f"data is {ACCEPTED}"
            )
        return _from_arrays(data[0], data[1], size, channels, task)
    if hasattr(data, "as_numpy_iterator"):  # tf.data.Dataset
        return _from_tf(data, size, channels, task)
    if type(data).__name__ == "DataLoader" and hasattr(data, "dataset"):
        data = data.dataset  # cnnspec batches, shuffles and shards itself
    if (
        hasattr(data, "__getitem__")
        and hasattr(data, "__len__")
        and not isinstance(data, (np.ndarray, dict, str, bytes))
    ):
        return _from_torch(data, size, channels, task)  # a map-style dataset
    if hasattr(data, "__iter__") and type(data).__module__.startswith("torch"):
        raise DataError(
            "a torch IterableDataset has no random access",
            hint="hand over a map-style dataset, or the files",
        )
    raise DataError(f"cannot train on a {describe(data)}", hint=f"data is {ACCEPTED}")


def _images(x, size, channels) -> np.ndarray:
    """(N, H, W, C) float32 in [0, 1] at `size` with `channels`."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"x has shape {x.shape}; images are (N, H, W, C) or (N, C, H, W)")
    if x.shape[-1] not in (1, 3, 4) and x.shape[1] in (1, 3, 4):
        x = x.transpose(0, 2, 3, 1)  # NCHW, as torch keeps images
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if x.size and (not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0):
        raise DataError(
            f"x holds values from {x.min():.3g} to {x.max():.3g}",
            hint="give uint8 images, or floats scaled to [0, 1]",
        )
    return fit_images(x, size, channels)


def _labels(y, n: int, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    y = np.asarray(y)
    if len(y) != n:
        raise DataError(f"x holds {n} images but y {len(y)} targets")
    if y.ndim == 3 or task == "segment":
        if y.ndim != 3:
            raise DataError(f"segmentation targets are (N, H, W) masks, got {y.shape}")
        return np.zeros(n, np.int64), y.astype(np.int64)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot rows
        y = y.argmax(axis=1)
    y = y.reshape(n)
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise DataError("y must hold class indices (0 to K-1)")
    if n and y.min() < 0:
        raise DataError(f"y holds the label {int(y.min())}; labels are 0 to K-1")
    return y.astype(np.int64), None


def _from_arrays(x, y, size, channels, task: str) -> Samples:
    if task == "detect":
        raise DataError(
            "detection data is handed over as files (COCO, VOC or YOLO)",
            hint="write the boxes as a COCO .json beside the images",
        )
    x = _images(x, size, channels)
    labels, masks = _labels(y, len(x), task)
    if masks is not None and masks.shape[1:] != tuple(size):
        from .imaging import resize_masks

        masks = resize_masks(masks, size)
    classes = int(max(labels.max(initial=0), masks.max(initial=0) if masks is not None else 0)) + 1
    dataset = Dataset(
        x,
        labels,
        [str(i) for i in range(max(classes, 2))],
        task="segment" if masks is not None else "classify",
        masks=masks,
    )
    return from_dataset(dataset)


@dataclass(frozen=True, eq=False)
class TorchImages:
    """A map-style torch dataset read per sample (in the loader's workers)."""

    dataset: object
    size: tuple[int, int]
    channels: int

    def __len__(self) -> int:
        return len(self.dataset)

    def image(self, row: int) -> np.ndarray:
        item = self.dataset[row]
        image = item[0] if isinstance(item, (tuple, list)) else item
        if hasattr(image, "getbands"):  # a PIL image
            pixels = np.asarray(image.convert("L" if self.channels == 1 else "RGB"))
            return _images(pixels[None], self.size, self.channels)[0]
        pixels = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
        if pixels.ndim == 3 and pixels.shape[0] in (1, 3, 4) and pixels.shape[-1] not in (1, 3, 4):
            pixels = pixels.transpose(1, 2, 0)  # CHW, as torch keeps images
        return _images(pixels[None], self.size, self.channels)[0]

    def mask(self, row: int) -> np.ndarray:
        raise DataError(
            "masks are not read from torch datasets",
            hint="hand over segmentation data as (x, masks) arrays or folders",
        )


def _from_torch(dataset, size, channels, task: str) -> Samples:
    if task != "classify":
        raise DataError(
            "a torch dataset trains classification here",
            hint="hand over segmentation as (x, masks) arrays, detection as files",
        )
    if len(dataset) == 0:
        raise DataError("the torch dataset is empty")
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [int(dataset[i][1]) for i in range(len(dataset))]
    labels, _ = _labels(np.asarray(targets), len(dataset), task)
    classes = getattr(dataset, "classes", None) or [
        str(i) for i in range(max(int(labels.max()) + 1, 2))
    ]
    return Samples(
        TorchImages(dataset, size, channels),
        y=labels,
        classes=list(classes),
        task="classify",
        input_shape=(*size, channels),
    )


def _from_tf(dataset, size, channels, task: str) -> Samples:
    xs, ys = [], []
    for item in dataset.as_numpy_iterator():
        if not isinstance(item, tuple) or len(item) != 2:
            raise DataError("a tf.data.Dataset must give (image, label) pairs")
        x, y = item
        batched = np.ndim(x) == 4
        xs.extend(x if batched else [x])
        ys.extend(
            np.asarray(y).reshape(-1)
            if batched and np.ndim(y) <= 1
            else (list(y) if batched else [y])
        )
    if not xs:
        raise DataError("the tf.data.Dataset is empty")
    return _from_arrays(np.stack(xs), np.asarray(ys), size, channels, task)
