"""Readers for plain folder layouts: class sub-folders and image/mask pairs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnspec.data import DataError
from cnnspec.data.dataset import Dataset
from cnnspec.data.imaging import (
    IMAGE_SUFFIXES,
    fit_images,
    is_image,
    read_image,
    read_mask,
    resize_masks,
)
from cnnspec.data.shapes import boxes_from_masks

CLASSES_FILE = "classes.txt"


def read_image_folder(root: Path, size: tuple[int, int], channels: int) -> Dataset:
    """root/<class>/**/<image>: classes are the sub-folder names, sorted as
    torchvision's ImageFolder sorts them, so class indices agree with it."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise DataError(
            f"image folder {root} has no class sub-folders",
            hint="put each class's images in its own sub-folder: root/cat/1.png, root/dog/2.png",
        )
    files, labels = [], []
    for index, name in enumerate(classes):
        found = _images_under(root / name)
        files += found
        labels += [index] * len(found)
    x = np.stack([read_image(path, size, channels) for path in files])
    return Dataset(x=x, y=np.array(labels), classes=classes, task="classify")


def _images_under(folder: Path) -> list[Path]:
    # Same walk order as torchvision's make_dataset, so sample i is the same image.
    found = [
        Path(dirpath) / name
        for dirpath, names in sorted(_walk(folder))
        for name in sorted(names)
        if name.lower().endswith(IMAGE_SUFFIXES)
    ]
    if not found:
        raise DataError(
            f"class folder {folder} holds no images",
            hint=f"image files must end in one of {', '.join(IMAGE_SUFFIXES)}",
        )
    return found


def _walk(folder: Path):
    """(dirpath, file names) under `folder`, following links as torchvision does, but never
    into a folder that is its own ancestor: two links to `.` would otherwise make 2^depth
    paths (a cycle is told by (device, inode), so link spellings do not matter)."""
    ancestors: dict[str, tuple] = {}   # dirpath -> (device, inode) of it and its parents
    for dirpath, dirnames, names in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        parent = ancestors.get(os.path.dirname(dirpath), ())
        chain = (*parent, (st.st_dev, st.st_ino))
        ancestors[dirpath] = chain
        kept = []
        for name in dirnames:
            try:
                sub = os.stat(os.path.join(dirpath, name))
            except OSError:   # a dangling link: nothing to read
                continue
            if (sub.st_dev, sub.st_ino) not in chain:
                kept.append(name)
        dirnames[:] = kept
        yield dirpath, names


def read_segmentation_pairs(
    root: Path, size: tuple[int, int], channels: int, classes: list[str] | None = None
) -> Dataset:
    """root/images/<stem>.* with root/masks/<stem>.png holding class indices per pixel.

    Class names come from the `classes` option, else root/classes.txt (one per
    line, background first), else "background", "class1", ...
    """
    images = sorted(path for path in (root / "images").iterdir() if is_image(path))
    if not images:
        raise DataError(
            f"{root / 'images'} holds no images", hint=f"use {', '.join(IMAGE_SUFFIXES)}"
        )
    masks_by_stem = {path.stem: path for path in (root / "masks").iterdir() if path.is_file()}
    pairs = [(image, _mask_for(image, masks_by_stem, root / "masks")) for image in images]
    x, masks, boxes = zip(*(_read_pair(image, mask, size, channels) for image, mask in pairs))
    masks = np.stack(masks)
    names = classes or read_class_names(root) or _default_names(int(masks.max()) + 1)
    _check_labels(masks, names, [mask for _, mask in pairs])
    return Dataset(
        x=np.stack(x),
        y=np.array([_dominant_label(m) for m in masks]),
        classes=names,
        task="segment",
        boxes=np.concatenate(boxes),
        masks=masks,
        present=(masks.reshape(len(masks), -1) > 0).any(axis=1),
    )


def _mask_for(image: Path, masks_by_stem: dict[str, Path], masks_dir: Path) -> Path:
    if image.stem not in masks_by_stem:
        raise DataError(
            f"image {image} has no mask in {masks_dir}",
            hint=f"each image needs a mask with the same stem: {masks_dir / image.stem}.png",
        )
    return masks_by_stem[image.stem]


def _read_pair(image: Path, mask: Path, size, channels):
    pixels = read_image(image)
    labels = read_mask(mask)
    if labels.shape != pixels.shape[:2]:
        raise DataError(
            f"mask {mask} is {labels.shape[1]}x{labels.shape[0]} but image {image} is "
            f"{pixels.shape[1]}x{pixels.shape[0]}",
            hint="a mask must have exactly the size of its image",
        )
    # Boxes come from the full-resolution mask, before resizing loses detail.
    boxes = boxes_from_masks(labels[None])
    return fit_images(pixels, size, channels), resize_masks(labels, size), boxes


def _dominant_label(mask: np.ndarray) -> int:
    counts = np.bincount(mask.ravel())
    counts[0] = 0  # background never names the image unless nothing else is there
    return int(counts.argmax()) if counts.any() else 0


def _check_labels(masks: np.ndarray, names: list[str], paths: list[Path]) -> None:
    for mask, path in zip(masks, paths):
        if mask.max() >= len(names):
            raise DataError(
                f"mask {path} holds class {int(mask.max())} but {len(names)} classes are named",
                hint=f"list every class name, background first, in {CLASSES_FILE} or `classes`",
            )


def _default_names(count: int) -> list[str]:
    return ["background", *(f"class{i}" for i in range(1, max(count, 2)))]


def read_class_names(root: Path) -> list[str] | None:
    """Class names from root/classes.txt, one per line, or None if there is no such file."""
    path = root / CLASSES_FILE
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path} lists no class names", hint="write one class name per line")
    return names
