"""`load`: turn a source name or path into a Dataset shaped for one network."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cnnspec.data import PATH_SOURCES, SOURCES, TASKS, DataError
from cnnspec.data.annotations import read_coco, read_voc
from cnnspec.data.arrays import read_digits, read_npz
from cnnspec.data.dataset import Dataset, refuse_oversize
from cnnspec.data.folders import read_image_folder, read_segmentation_pairs
from cnnspec.data.imaging import to_channels
from cnnspec.data.samples import CACHES, Samples, from_dataset
from cnnspec.data.shapes import generate_shapes

TASK_ALIASES = {"classification": "classify", "detection": "detect", "segmentation": "segment"}
FORMATS = ("folder", "segmentation", "coco", "voc", "npz")


@dataclass(frozen=True)
class _Reader:
    read: Callable[..., Dataset]  # read(location, size, channels, seed, **options)
    options: tuple[str, ...]  # the source-specific options it accepts
    with_background: bool = False  # classes[0] is "background" (segmentation-style labels)


def load(source: str | os.PathLike, input_shape, task: str, seed: int = 0, **options) -> Dataset:
    """`index` then decode every image: the whole of `source` in memory, as a Dataset.
    Training streams instead (index); this is for small sets and inspection."""
    return index(source, input_shape, task, seed, **options).materialize()


def index(
    source: str | os.PathLike, input_shape, task: str, seed: int = 0, cache: str = "none", **options
) -> Samples:
    """Index `source` for a network taking `input_shape` = (H, W, C) images.

    source:  "digits", "shapes", or a path to an image folder, a segmentation folder
             (images/ + masks/), a COCO .json or folder with annotations.json, a VOC
             folder, or an .npz file. Option format=... forces the path's format.
    task:    "classify", "detect" or "segment" (the nouns work too).
    seed:    drives generated data (shapes); file sources are read in sorted order.
    options: shapes: n (2000), empty_fraction (0.0); segmentation sources: binary
             (masks become 0/1); segmentation folders and VOC: classes (names).

    cache:   "none" (decode per batch) or "ram" (decode once, keep uint8); the bundled
             sets and .npz files are in memory whatever it says.

    Images are decoded per sample, resized (bilinear) to H x W with C channels; masks are
    resized with nearest neighbour; boxes are normalised so resizing leaves them unchanged.
    Nothing but annotations, masks of segmentation folders and image headers is read here.
    """
    if cache not in CACHES:
        raise DataError(f"unknown cache {cache!r}", hint=f"use one of: {', '.join(CACHES)}")
    size, channels = _check_input_shape(input_shape)
    task = _check_task(task)
    if task == "objects":  # dense detection heads: every object (object_samples)
        from cnnspec.data.object_samples import index_objects

        samples = index_objects(source, input_shape, seed, **options)
        return samples.cache() if cache == "ram" else samples
    binary = _as_flag(options.pop("binary", False))
    name, location = _resolve(source, options.pop("format", None))
    reader = _READERS[name]
    _check_options(name, options, reader.options)
    dataset = reader.read(location, size, channels, seed, **options)
    if len(dataset) == 0:
        raise DataError(f"{source} holds no images", hint=_sources_hint())
    if isinstance(dataset, Dataset):
        dataset = from_dataset(dataset)
    samples = _shape_for_task(dataset, task, binary, reader.with_background, str(source))
    return samples.cache() if cache == "ram" else samples


def _check_input_shape(input_shape) -> tuple[tuple[int, int], int]:
    try:
        height, width, channels = (int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise DataError(f"input_shape must be (H, W, C), got {input_shape!r}") from None
    if min(height, width) < 1 or channels not in (1, 3):
        raise DataError(
            f"input_shape {tuple(input_shape)} is not a usable image shape",
            hint="H and W must be positive and C must be 1 (grey) or 3 (RGB)",
        )
    return (height, width), channels


def _check_task(task: str) -> str:
    task = TASK_ALIASES.get(task, task)
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}", hint=f"use one of: {', '.join(TASKS)}")
    return task


def _resolve(source, fmt: str | None) -> tuple[str, Path | None]:
    """(reader name, path or None) for a source string."""
    if isinstance(source, str) and source in SOURCES:
        return source, None
    path = Path(os.path.expanduser(os.fspath(source)))
    if not path.exists():
        if isinstance(source, str) and not _looks_like_path(source):
            raise DataError(f"unknown data source {source!r}", hint=_sources_hint())
        raise DataError(
            f"data path {os.fspath(source)} does not exist",
            hint=f"relative paths start from {Path.cwd()}; built-in sources: {', '.join(SOURCES)}",
        )
    if fmt is not None:
        return _forced_format(fmt, path)
    return _detect_format(path)


def _looks_like_path(source: str) -> bool:
    return (
        any(sep in source for sep in ("/", os.sep))
        or source.startswith((".", "~"))
        or bool(Path(source).suffix)
    )


def _sources_hint() -> str:
    return f"use {' or '.join(repr(s) for s in SOURCES)}, or the path of " + "; ".join(PATH_SOURCES)


def _forced_format(fmt: str, path: Path) -> tuple[str, Path]:
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")
    if fmt == "coco" and path.is_dir():
        path = path / "annotations.json"
    return fmt, path


def _detect_format(path: Path) -> tuple[str, Path]:
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".npz", ".json"):
            return ("npz" if suffix == ".npz" else "coco"), path
        raise DataError(f"cannot tell the dataset format of file {path}", hint=_sources_hint())
    if (path / "annotations.json").is_file():
        return "coco", path / "annotations.json"
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return "segmentation", path
    if (path / "Annotations").is_dir() or any(path.glob("*.xml")):
        return "voc", path
    if any(child.is_dir() for child in path.iterdir()):
        return "folder", path
    raise DataError(f"cannot tell what kind of dataset folder {path} is", hint=_sources_hint())


def _check_options(name: str, options: dict, accepted: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(
            f"option {unknown[0]!r} is not understood by the {name} source",
            hint=f"{name} accepts: {', '.join(accepted) or 'no options'} (and format, binary)",
        )


def _shape_for_task(dataset: Dataset, task: str, binary: bool, with_background: bool, source: str):
    if binary:
        if task != "segment" or not dataset.has_masks:
            raise DataError(
                "option binary only applies to segmentation data",
                hint="drop binary, or load with task segment",
            )
        dataset = _binarise(dataset)
    if task == "segment":
        if not dataset.has_masks:
            raise DataError(
                f"{source} has no masks, so it cannot train segmentation",
                hint="use 'shapes', a folder with images/ and masks/, or an .npz with masks",
            )
        return replace(dataset, task=task)
    if with_background:
        dataset = _drop_background(dataset)
    if task == "detect":
        if dataset.boxes is None:
            raise DataError(
                f"{source} has no boxes, so it cannot train detection",
                hint="use 'shapes', COCO or VOC annotations, or an .npz with boxes",
            )
        return replace(dataset, task=task)
    return _objects_only(replace(dataset, task=task), source)


def _binarise(dataset: Samples) -> Samples:
    return replace(
        dataset,
        binary=True,  # masks become 0/1 as each is decoded
        y=(dataset.present > 0).astype(np.int64),
        classes=["background", "foreground"],
    )


def _drop_background(dataset: Samples) -> Samples:
    # Detection and classification predict object classes only; "nothing here" is
    # the present flag, not a class. Masks would index the old list, so they go.
    y = np.where(dataset.present > 0, dataset.y - 1, 0)
    return replace(dataset, y=np.maximum(y, 0), classes=dataset.classes[1:], has_masks=False)


def _objects_only(dataset: Samples, source: str) -> Samples:
    # An image with no object has no class to learn, so classification skips it.
    keep = np.flatnonzero(dataset.present > 0)
    if len(keep) == 0:
        raise DataError(f"{source} has no images with a labelled object to classify")
    return dataset if len(keep) == len(dataset) else dataset.subset(keep)


def _as_flag(value) -> bool:
    # Options may arrive as text from a spec file or command line, where bool("false") is True.
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _as_number(options: dict, key: str, default, kind=int):
    value = options.get(key, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise DataError(f"option {key} must be a number, got {value!r}") from None


def _read_shapes(_, size, channels, seed, **options) -> Dataset:
    n = _as_number(options, "n", 2000)
    empty_fraction = _as_number(options, "empty_fraction", 0.0, float)
    if n < 1:
        raise DataError(f"option n must be at least 1, got {n}")
    if not 0.0 <= empty_fraction < 1.0:
        raise DataError(f"option empty_fraction must be in [0, 1), got {empty_fraction}")
    # images (float32) and masks (int64, 3 channels' worth of RGB drawing besides)
    refuse_oversize(
        n * size[0] * size[1] * (4 * max(channels, 3) + 8),
        f"shapes n={n} at {size[1]}x{size[0]}",
        "use a smaller n",
    )
    dataset = generate_shapes(n, size, seed, empty_fraction)
    return replace(dataset, x=to_channels(dataset.x, channels))


def _read_segmentation(path, size, channels, seed, classes=None) -> Dataset:
    return read_segmentation_pairs(path, size, channels, _as_names(classes))


def _read_voc(path, size, channels, seed, classes=None) -> Dataset:
    return read_voc(path, size, channels, _as_names(classes))


def _as_names(classes) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str):  # "a,b,c" from a command line or spec file
        classes = [name.strip() for name in classes.split(",")]
    return [str(name) for name in classes]


_READERS = {
    "digits": _Reader(lambda _, size, channels, seed: read_digits(size, channels), ()),
    "shapes": _Reader(_read_shapes, ("n", "empty_fraction"), with_background=True),
    "folder": _Reader(
        lambda path, size, channels, seed: read_image_folder(path, size, channels), ()
    ),
    "segmentation": _Reader(_read_segmentation, ("classes",), with_background=True),
    "coco": _Reader(lambda path, size, channels, seed: read_coco(path, size, channels), ()),
    "voc": _Reader(_read_voc, ("classes",)),
    "npz": _Reader(lambda path, size, channels, seed: read_npz(path, size, channels), ()),
}
