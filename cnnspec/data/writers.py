"""Write the shapes dataset in the on-disk layouts that `load` reads.

This gives users a template of each layout to copy, and lets the tests check every
reader against real files whose true labels are known.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from cnnspec.data import DataError
from cnnspec.data.dataset import Dataset
from cnnspec.data.folders import CLASSES_FILE
from cnnspec.data.imaging import save_image, save_mask
from cnnspec.data.shapes import generate_shapes

WRITE_FORMATS = ("folder", "segmentation", "coco", "voc")


def write_shapes(
    out_dir: str | Path,
    fmt: str,
    n: int = 200,
    size: int | tuple[int, int] = 64,
    seed: int = 0,
    empty_fraction: float = 0.0,
) -> Path:
    """Generate n shapes images (size x size, or size=(H, W)) and write them to out_dir as
    "folder" (out/<class>/<i>.png), "segmentation" (out/images, out/masks, classes.txt),
    "coco" (out/images + out/annotations.json) or "voc" (out/JPEGImages + out/Annotations).
    Images are PNG so pixels survive the round trip. Returns out_dir, ready for load().
    """
    if fmt not in WRITE_FORMATS:
        raise DataError(
            f"unknown output format {fmt!r}", hint=f"use one of: {', '.join(WRITE_FORMATS)}"
        )
    if fmt == "folder" and empty_fraction > 0:
        raise DataError(
            "an image folder cannot hold images without a class",
            hint="use empty_fraction=0 for folder, or write segmentation, coco or voc",
        )
    height, width = (size, size) if isinstance(size, int) else size
    dataset = generate_shapes(n, (height, width), seed, empty_fraction)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _WRITERS[fmt](dataset, out)
    return out


def _stem(i: int) -> str:
    return f"{i:05d}"


def _pixel_box(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    # Boxes are whole pixels (from the mask), so rounding only removes float noise.
    x0, y0, x1, y1 = np.rint(box * [width, height, width, height]).astype(int).tolist()
    return x0, y0, x1, y1


def _object_names(dataset: Dataset) -> list[str]:
    return dataset.classes[1:]  # the generator's classes start with "background"


def _write_folder(dataset: Dataset, out: Path) -> None:
    for name in _object_names(dataset):
        (out / name).mkdir(exist_ok=True)
    for i, (image, label) in enumerate(zip(dataset.x, dataset.y)):
        save_image(out / dataset.classes[label] / f"{_stem(i)}.png", image)


def _write_segmentation(dataset: Dataset, out: Path) -> None:
    (out / "images").mkdir(exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    for i, (image, mask) in enumerate(zip(dataset.x, dataset.masks)):
        save_image(out / "images" / f"{_stem(i)}.png", image)
        save_mask(out / "masks" / f"{_stem(i)}.png", mask)
    (out / CLASSES_FILE).write_text("\n".join(dataset.classes) + "\n", encoding="utf-8")


def _write_coco(dataset: Dataset, out: Path) -> None:
    (out / "images").mkdir(exist_ok=True)
    height, width = dataset.x.shape[1:3]
    images, annotations = [], []
    for i, image in enumerate(dataset.x):
        save_image(out / "images" / f"{_stem(i)}.png", image)
        images.append(
            {"id": i + 1, "file_name": f"{_stem(i)}.png", "width": width, "height": height}
        )
        if dataset.present[i] > 0:
            x0, y0, x1, y1 = _pixel_box(dataset.boxes[i], height, width)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(dataset.y[i]),  # COCO ids start at 1, like y here
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": int((dataset.masks[i] > 0).sum()),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(_object_names(dataset))]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    (out / "annotations.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")


def _write_voc(dataset: Dataset, out: Path) -> None:
    # VOC calls the folder JPEGImages whatever the format; PNG keeps pixels exact.
    (out / "JPEGImages").mkdir(exist_ok=True)
    (out / "Annotations").mkdir(exist_ok=True)
    for i, image in enumerate(dataset.x):
        save_image(out / "JPEGImages" / f"{_stem(i)}.png", image)
        tree = ElementTree.ElementTree(_voc_annotation(dataset, i))
        ElementTree.indent(tree)
        tree.write(out / "Annotations" / f"{_stem(i)}.xml", encoding="utf-8")


def _voc_annotation(dataset: Dataset, i: int) -> ElementTree.Element:
    height, width, depth = dataset.x.shape[1:]
    root = ElementTree.Element("annotation")
    _child(root, "folder", "JPEGImages")
    _child(root, "filename", f"{_stem(i)}.png")
    size = _child(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", depth)):
        _child(size, tag, value)
    if dataset.present[i] > 0:
        obj = _child(root, "object")
        _child(obj, "name", dataset.classes[dataset.y[i]])
        for tag in ("pose", "truncated", "difficult"):
            _child(obj, tag, "Unspecified" if tag == "pose" else 0)
        box = _child(obj, "bndbox")
        x0, y0, x1, y1 = _pixel_box(dataset.boxes[i], height, width)
        # VOC pixels are 1-based and xmax/ymax are inclusive.
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            _child(box, tag, value)
    return root


def _child(parent: ElementTree.Element, tag: str, text=None) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


_WRITERS = {
    "folder": _write_folder,
    "segmentation": _write_segmentation,
    "coco": _write_coco,
    "voc": _write_voc,
}
