"""COCO detection JSON -> ObjectIndex, keeping every object.

Follows pycocotools' reading of the format: "bbox" is [x, y, width, height] in pixels,
"iscrowd" (default 0) marks a crowd region, kept with its flag so that training leaves it
out and evaluation ignores detections on it; categories are indexed by ascending id; an
image without annotations is a negative. See object_index for the rule on bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

from cnnspec.data import DataError
from cnnspec.data.imaging import image_size
from cnnspec.data.object_index import ObjectIndex, Problems, make_image

ANNOTATIONS_FILE = "annotations.json"
_SHAPE_HINT = (
    "a COCO file has 'images' (id, file_name, width, height), 'annotations' "
    "(id, image_id, category_id, bbox [x, y, w, h], iscrowd) and 'categories' "
    "(id, name)"
)


def index_coco(
    path: str | Path, images: str | Path | None = None, invalid: str = "error"
) -> ObjectIndex:
    """Index a COCO JSON file (or a folder holding annotations.json). Image files are looked
    up in `images` when given, else in images/ beside the JSON, else beside it."""
    path = Path(path)
    path = path / ANNOTATIONS_FILE if path.is_dir() else path
    problems = Problems(invalid)
    doc = _read(path)
    category_ids = sorted(_field(c, "id", path, "category") for c in _list(doc, "categories", path))
    names = {c["id"]: str(c.get("name", c["id"])) for c in doc["categories"]}
    class_of = {cid: k for k, cid in enumerate(category_ids)}
    listed = _images(doc, path)
    objects = {image_id: [] for image_id in listed}
    for ann in _list(doc, "annotations", path, required=False):
        image_id, obj = _object(ann, path, class_of)
        if image_id not in objects:
            raise DataError(
                f"{path}: annotation {obj['id']} refers to image_id {image_id}, "
                "which is not in 'images'",
                hint=_SHAPE_HINT,
            )
        objects[image_id].append(obj)
    folders = [Path(images)] if images is not None else [path.parent / "images", path.parent]
    indexed = []
    for image_id, image in listed.items():
        found = next(
            (f / image["file_name"] for f in folders if (f / image["file_name"]).is_file()), None
        )
        if found is None:
            ids = ", ".join(str(o["id"]) for o in objects[image_id]) or "none"
            problems.report(
                f"{path}: image {image_id} ({image['file_name']}) was not found; its "
                f"annotations: {ids}",
                hint=f"looked in {', '.join(str(f) for f in folders)}",
            )
            continue
        size = _size(image, found)
        indexed.append(
            make_image(found, size, objects[image_id], f"{path} ({image['file_name']})", problems)
        )
    return ObjectIndex(indexed, [names[cid] for cid in category_ids], path, problems.skipped)


def _read(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"cannot read COCO annotations {path}: {exc}", hint="it must be a JSON file"
        ) from exc
    if not isinstance(doc, dict):
        raise DataError(
            f"{path} is not a COCO file: the top level must be an object", hint=_SHAPE_HINT
        )
    return doc


def _list(doc: dict, key: str, path: Path, required: bool = True) -> list:
    value = doc.get(key, None if required else [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DataError(f"{path}: '{key}' must be a list of objects", hint=_SHAPE_HINT)
    return value


def _field(entry: dict, key: str, path: Path, what: str):
    if key not in entry:
        name = f"{what} {entry['id']}" if "id" in entry else f"a {what} without an id"
        raise DataError(f"{path}: {name} has no '{key}'", hint=_SHAPE_HINT)
    return entry[key]


def _images(doc: dict, path: Path) -> dict:
    listed = {}
    for image in _list(doc, "images", path):
        image_id = _field(image, "id", path, "image")
        _field(image, "file_name", path, "image")
        if image_id in listed:
            raise DataError(f"{path}: image id {image_id} is listed twice", hint=_SHAPE_HINT)
        listed[image_id] = image
    return listed


def _object(ann: dict, path: Path, class_of: dict) -> tuple:
    ann_id = _field(ann, "id", path, "annotation")
    category = _field(ann, "category_id", path, "annotation")
    if category not in class_of:
        raise DataError(
            f"{path}: annotation {ann_id} has category_id {category}, which is not in "
            f"'categories' (ids {', '.join(str(c) for c in class_of)})",
            hint="add the category, or correct the annotation's category_id",
        )
    bbox = _field(ann, "bbox", path, "annotation")
    if not (
        isinstance(bbox, list)
        and len(bbox) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
    ):
        raise DataError(
            f"{path}: annotation {ann_id} has bbox {bbox!r}, not four numbers",
            hint="COCO boxes are [x, y, width, height] in pixels",
        )
    x, y, w, h = (float(v) for v in bbox)
    obj = {
        "box": (x, y, x + w, y + h),
        "class": class_of[category],
        "id": ann_id,
        "iscrowd": bool(ann.get("iscrowd", 0)),
    }
    if isinstance(ann.get("area"), (int, float)):
        obj["area"] = float(ann["area"])
    return _field(ann, "image_id", path, "annotation"), obj


def _size(image: dict, found: Path) -> tuple[int, int]:
    width, height = image.get("width"), image.get("height")
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return width, height
    return image_size(found)  # reads the header only
