"""Readers for plain folder layouts: class sub-folders and image/mask pairs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnspec.data import DataError
from cnnspec.data.imaging import IMAGE_SUFFIXES, image_size, is_image, read_mask
from cnnspec.data.samples import FileImages, Samples
from cnnspec.data.shapes import boxes_from_masks

CLASSES_FILE = "classes.txt"


def read_image_folder(root: Path, size: tuple[int, int], channels: int) -> Samples:
    """root/<class>/**/<image>: classes are the sub-folder names, sorted as
    torchvision's ImageFolder sorts them, so class indices agree with it. Only the
    file names are read here; the images are decoded per batch."""
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
    return Samples(
        FileImages(tuple(files), tuple(size), channels),
        y=np.array(labels),
        classes=classes,
        task="classify",
        input_shape=(*size, channels),
    )


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
    ancestors: dict[str, tuple] = {}  # dirpath -> (device, inode) of it and its parents
    for dirpath, dirnames, names in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        parent = ancestors.get(os.path.dirname(dirpath), ())
        chain = (*parent, (st.st_dev, st.st_ino))
        ancestors[dirpath] = chain
        kept = []
        for name in dirnames:
            try:
                sub = os.stat(os.path.join(dirpath, name))
            except OSError:  # a dangling link: nothing to read
                continue
            if (sub.st_dev, sub.st_ino) not in chain:
                kept.append(name)
        dirnames[:] = kept
        yield dirpath, names


def read_segmentation_pairs(
    root: Path, size: tuple[int, int], channels: int, classes: list[str] | None = None
) -> Samples:
    """root/images/<stem>.* with root/masks/<stem>.png holding class indices per pixel.

    Class names come from the `classes` option, else root/classes.txt (one per
    line, background first), else "background", "class1", ...

    The masks are read once here, one at a time and not kept, for what must be known
    before training (each image's label, present flag and box, the class count); the
    images themselves are only measured (their headers) and decoded per batch.
    """
    images = sorted(path for path in (root / "images").iterdir() if is_image(path))
    if not images:
        raise DataError(
            f"{root / 'images'} holds no images", hint=f"use {', '.join(IMAGE_SUFFIXES)}"
        )
    masks_by_stem = {path.stem: path for path in (root / "masks").iterdir() if path.is_file()}
    pairs = [(image, _mask_for(image, masks_by_stem, root / "masks")) for image in images]
    facts = [_mask_facts(image, mask) for image, mask in pairs]
    top = max(f[0] for f in facts)
    names = classes or read_class_names(root) or _default_names(top + 1)
    for (_, mask), (most, *_) in zip(pairs, facts):
        if most >= len(names):
            raise DataError(
                f"mask {mask} holds class {most} but {len(names)} classes are named",
                hint=f"list every class name, background first, in {CLASSES_FILE} or `classes`",
            )
    return Samples(
        FileImages(tuple(images), tuple(size), channels, tuple(mask for _, mask in pairs)),
        y=np.array([f[1] for f in facts]),
        classes=names,
        task="segment",
        boxes=np.concatenate([f[2] for f in facts]),
        present=np.array([f[3] for f in facts]),
        has_masks=True,
        input_shape=(*size, channels),
    )


def _mask_facts(image: Path, mask: Path):
    """(largest class, dominant label, box, present) of one mask, checked against its
    image's size (read from the header, not decoded)."""
    labels = read_mask(mask)
    width, height = image_size(image)
    if labels.shape != (height, width):
        raise DataError(
            f"mask {mask} is {labels.shape[1]}x{labels.shape[0]} but image {image} is "
            f"{width}x{height}",
            hint="a mask must have exactly the size of its image",
        )
    # Boxes come from the full-resolution mask, before resizing loses detail.
    boxes = boxes_from_masks(labels[None])
    return int(labels.max()), _dominant_label(labels), boxes, bool((labels > 0).any())


def _mask_for(image: Path, masks_by_stem: dict[str, Path], masks_dir: Path) -> Path:
    if image.stem not in masks_by_stem:
        raise DataError(
            f"image {image} has no mask in {masks_dir}",
            hint=f"each image needs a mask with the same stem: {masks_dir / image.stem}.png",
        )
    return masks_by_stem[image.stem]


def _dominant_label(mask: np.ndarray) -> int:
    counts = np.bincount(mask.ravel())
    counts[0] = 0  # background never names the image unless nothing else is there
    return int(counts.argmax()) if counts.any() else 0


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
