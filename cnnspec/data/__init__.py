"""Offline data sources for cnnspec: framework-neutral numpy datasets.

Sources are indexed up front and decoded per sample (`index` -> Samples, see
samples.py); `load` decodes everything into plain numpy arrays (images NHWC float32
in [0, 1]) for small sets. The framework loaders live in loading.py. Nothing downloads: the sources
are bundled (sklearn digits), generated (shapes) or read from local files.

The public names are loaded lazily (PEP 562) so that ``import cnnspec.data`` and
``except DataError`` work even where numpy, Pillow and scikit-learn (the optional
``train`` extra) are not installed.
"""

from __future__ import annotations

import importlib

SOURCES = ("digits", "shapes")
PATH_SOURCES = (
    "an image folder (one sub-folder per class)",
    "a folder with images/ and masks/ (segmentation pairs)",
    "a COCO annotations .json (or a folder holding annotations.json)",
    "a PASCAL VOC folder of .xml annotations",
    "an .npz file with arrays x and y",
)
TASKS = ("classify", "detect", "segment", "objects")  # objects: every box (object_samples)


class DataError(Exception):
    """A problem with the user's data or data options; `hint` says how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


_EXPORTS = {
    "Dataset": "cnnspec.data.dataset",
    "load": "cnnspec.data.sources",
    "index": "cnnspec.data.sources",
    "Samples": "cnnspec.data.samples",
    "write_shapes": "cnnspec.data.writers",
    "generate_shapes": "cnnspec.data.shapes",
    "augment": "cnnspec.data.augmentation",
    "augment_batch": "cnnspec.data.augmentation",
    "parse_ops": "cnnspec.data.augmentation",
    "Op": "cnnspec.data.augmentation",
    "batches": "cnnspec.data.batching",
    "resize": "cnnspec.data.imaging",
    "to_channels": "cnnspec.data.imaging",
}

__all__ = [
    "PATH_SOURCES",
    "SOURCES",
    "TASKS",
    "DataError",
    "Dataset",
    "Op",
    "Samples",
    "augment",
    "augment_batch",
    "batches",
    "generate_shapes",
    "index",
    "load",
    "parse_ops",
    "resize",
    "to_channels",
    "write_shapes",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cnnspec.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # cache so the next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
