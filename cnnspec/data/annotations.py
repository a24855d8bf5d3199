"""Readers for detection annotations: COCO JSON and PASCAL VOC XML.

The networks cnnspec builds predict one box per image, so each image keeps its
largest object (the first on ties); images without objects get present == 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from cnnspec.data import DataError
from cnnspec.data.dataset import box_problem
from cnnspec.data.folders import read_class_names
from cnnspec.data.imaging import IMAGE_SUFFIXES, image_size
from cnnspec.data.samples import FileImages, Samples

COCO_FILE = "annotations.json"


def read_coco(path: Path, size: tuple[int, int], channels: int) -> Samples:
    """A COCO detection JSON; image files are looked up beside it or in images/."""
    doc = _read_json(path)
    try:
        categories = sorted(doc["categories"], key=lambda c: c["id"])
        index = {c["id"]: i for i, c in enumerate(categories)}
        largest = _largest_coco_objects(doc.get("annotations", []), index, path)
        records = [_coco_record(path, image, largest.get(image["id"])) for image in doc["images"]]
    except (KeyError, TypeError) as exc:
        raise DataError(
            f"{path} is not a COCO detection file: missing or malformed field {exc}",
            hint="it needs 'images' (id, file_name), 'annotations' (image_id, category_id, "
            "bbox [x, y, w, h]) and 'categories' (id, name)",
        ) from exc
    return _objects_dataset(records, [str(c["name"]) for c in categories], size, channels)


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"cannot read COCO annotations {path}: {exc}", hint="it must be valid JSON"
        ) from exc
    if not isinstance(doc, dict):
        raise DataError(f"{path} is not a COCO file: the top level must be a JSON object")
    return doc


def _largest_coco_objects(annotations, index: dict, path: Path) -> dict:
    largest = {}
    for ann in annotations:
        if ann["category_id"] not in index:
            raise DataError(
                f"{path}: annotation {ann.get('id')} uses category_id {ann['category_id']}, "
                "which is not in 'categories'"
            )
        x, y, w, h = (float(v) for v in ann["bbox"])
        best = largest.get(ann["image_id"])
        if best is None or w * h > best[1]:
            largest[ann["image_id"]] = (index[ann["category_id"]], w * h, (x, y, x + w, y + h))
    return largest


def _coco_record(path: Path, image: dict, best) -> dict:
    candidates = [path.parent / "images" / image["file_name"], path.parent / image["file_name"]]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DataError(
            f"image {image['file_name']} listed in {path} was not found",
            hint=f"looked for {candidates[0]} and {candidates[1]}",
        )
    declared = (image.get("width"), image.get("height"))
    label, pixel_box = (best[0], best[2]) if best else (None, None)
    return {"path": found, "label": label, "box": pixel_box, "declared": declared, "source": path}


def read_voc(root: Path, size: tuple[int, int], channels: int, classes: list[str] | None = None):
    """PASCAL VOC: root/Annotations/*.xml (or root/*.xml), images in root/JPEGImages,
    root/images or beside the XML. Class names come from the `classes` option, else
    root/classes.txt, else the sorted object names."""
    folder = root / "Annotations" if (root / "Annotations").is_dir() else root
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DataError(
            f"no .xml annotations in {folder}", hint="VOC folders hold one .xml per image"
        )
    parsed = [_parse_voc(path) for path in files]
    names = classes or read_class_names(root) or sorted({p["name"] for p in parsed if p["name"]})
    records = [_voc_record(root, p, names) for p in parsed]
    return _objects_dataset(records, names, size, channels)


def _parse_voc(path: Path) -> dict:
    try:
        tree = ElementTree.parse(path).getroot()
        objects = [_voc_object(obj) for obj in tree.iter("object")]
    except (ElementTree.ParseError, OSError) as exc:
        raise DataError(f"cannot read VOC annotation {path}: {exc}") from exc
    except (AttributeError, TypeError, ValueError) as exc:
        raise DataError(
            f"VOC annotation {path} has an <object> without a proper <name> or <bndbox>",
            hint="each <object> needs <name> and <bndbox> with numeric xmin, ymin, xmax, ymax",
        ) from exc
    size = tree.find("size")
    declared = (
        (None, None)
        if size is None
        else (_int_or_none(size, "width"), _int_or_none(size, "height"))
    )
    best = max(
        objects, key=lambda o: o[2], default=(None, None, 0.0)
    )  # max keeps the first on ties
    return {
        "xml": path,
        "filename": tree.findtext("filename"),
        "declared": declared,
        "name": best[0],
        "box": best[1],
    }


def _voc_object(obj) -> tuple[str, tuple[float, ...], float]:
    box = obj.find("bndbox")
    xmin, ymin, xmax, ymax = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
    # VOC counts pixels from 1 and includes xmax: pixel columns xmin-1 .. xmax-1.
    pixel_box = (xmin - 1.0, ymin - 1.0, xmax, ymax)
    return obj.find("name").text.strip(), pixel_box, (xmax - xmin + 1) * (ymax - ymin + 1)


def _int_or_none(element, tag: str) -> int | None:
    text = element.findtext(tag)
    return int(float(text)) if text and text.strip() else None


def _voc_record(root: Path, parsed: dict, names: list[str]) -> dict:
    xml = parsed["xml"]
    if parsed["name"] is not None and parsed["name"] not in names:
        raise DataError(
            f"{xml} names class {parsed['name']!r}, which is not among {names}",
            hint="add it to classes.txt or the classes option",
        )
    label = None if parsed["name"] is None else names.index(parsed["name"])
    return {
        "path": _voc_image(root, xml, parsed["filename"]),
        "label": label,
        "box": parsed["box"],
        "declared": parsed["declared"],
        "source": xml,
    }


def _voc_image(root: Path, xml: Path, filename: str | None) -> Path:
    folders = [root / "JPEGImages", root / "images", xml.parent, root]
    names = [filename.strip()] if filename else [xml.stem + suffix for suffix in IMAGE_SUFFIXES]
    for candidate in (folder / name for name in names for folder in folders):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"image {filename or xml.stem} for {xml} was not found",
        hint=f"looked in {', '.join(str(f) for f in folders)}",
    )


def _objects_dataset(records: list[dict], classes: list[str], size, channels) -> Samples:
    """The records as Samples: boxes are checked against each image's size, read from its
    header (or its declaration), and the pixels are decoded per batch."""
    if not records:
        raise DataError("the annotations list no images")
    boxes = [_record_box(record) for record in records]
    labels = [0 if r["label"] is None else r["label"] for r in records]
    present = [r["label"] is not None for r in records]
    return Samples(
        FileImages(tuple(r["path"] for r in records), tuple(size), channels),
        y=np.array(labels),
        classes=classes,
        task="detect",
        boxes=np.stack(boxes),
        present=np.array(present),
        input_shape=(*size, channels),
    )


def _record_box(record: dict) -> np.ndarray:
    width, height = image_size(record["path"])
    declared = record["declared"]
    if declared[0] is not None and declared[1] is not None and declared != (width, height):
        raise DataError(
            f"{record['source']} says {record['path'].name} is {declared[0]}x{declared[1]} "
            f"but the file is {width}x{height}",
            hint="the annotations were made for a different version of the image",
        )
    box = np.zeros(4, dtype=np.float32)
    if record["box"] is not None:
        if width == 0 or height == 0:
            raise DataError(
                f"image {record['path']} is {width}x{height} pixels", hint="remove the empty image"
            )
        x0, y0, x1, y1 = record["box"]
        # a pixel past the edge is rounding (COCO has such boxes) and is clipped; more is
        # an annotation made for another image, NaN or a negative size is a broken one
        problem = box_problem(x0, y0, x1, y1, width, height, slack=1.0)
        if problem:
            raise DataError(
                f"{record['source']}: the box of {record['path'].name} "
                f"[{x0:g}, {y0:g}, {x1:g}, {y1:g}] (pixels, x0 y0 x1 y1) {problem}",
                hint="fix or remove that annotation",
            )
        box = np.clip(np.array([x0 / width, y0 / height, x1 / width, y1 / height]), 0.0, 1.0)
    return box.astype(np.float32)
