"""PASCAL VOC XML -> ObjectIndex, keeping every object.

As the VOC development kit reads it: one .xml per image (root/Annotations, or root itself),
<bndbox> corners 1-based and inclusive (pixel columns xmin-1 .. xmax-1, so the box in pixel
edges is xmin-1, ymin-1, xmax, ymax), <difficult>1</difficult> kept with its flag (the
kit's evaluation neither rewards nor penalises detections of difficult objects; training
may use them or not), an image without <object> a negative. Images are found in
root/JPEGImages, root/images, beside the XML or in root. See object_index for bad input.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

from cnnspec.data import DataError
from cnnspec.data.folders import read_class_names
from cnnspec.data.imaging import IMAGE_SUFFIXES, image_size
from cnnspec.data.object_index import ObjectIndex, Problems, make_image


def index_voc(
    root: str | Path, classes: list[str] | None = None, invalid: str = "error"
) -> ObjectIndex:
    """Index a VOC folder. Class names come from `classes`, else root/classes.txt, else
    the sorted names the files use."""
    root = Path(root)
    folder = root / "Annotations" if (root / "Annotations").is_dir() else root
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DataError(
            f"no .xml annotations in {folder}",
            hint="a VOC folder holds one .xml per image in Annotations/",
        )
    parsed = [_parse(path) for path in files]
    names = list(
        classes
        or read_class_names(root)
        or sorted({o["name"] for p in parsed for o in p["objects"]})
    )
    problems = Problems(invalid)
    indexed = []
    for p in parsed:
        image = _find_image(root, p, problems)
        if image is None:
            continue
        for obj in p["objects"]:
            if obj["name"] not in names:
                raise DataError(
                    f"{p['xml']}: {obj['id']} is of class {obj['name']!r}, which "
                    f"is not among {names}",
                    hint="add it to classes.txt or the classes option",
                )
            obj["class"] = names.index(obj["name"])
        size = p["size"] if p["size"] else image_size(image)
        indexed.append(make_image(image, size, p["objects"], str(p["xml"]), problems))
    return ObjectIndex(indexed, names, root, problems.skipped)


def _parse(path: Path) -> dict:
    try:
        tree = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise DataError(f"cannot read VOC annotation {path}: {exc}") from exc
    objects = [_object(element, n, path) for n, element in enumerate(tree.iter("object"), 1)]
    size = tree.find("size")
    width, height = (
        (_number(size, "width"), _number(size, "height")) if size is not None else (0, 0)
    )
    return {
        "xml": path,
        "filename": (tree.findtext("filename") or "").strip(),
        "size": (int(width), int(height)) if width and height else None,
        "objects": objects,
    }


def _object(element, n: int, path: Path) -> dict:
    name = (element.findtext("name") or "").strip()
    box = element.find("bndbox")
    try:
        corners = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        difficult = int(float(element.findtext("difficult") or 0))
    except (AttributeError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: object {n} ({name or 'no name'}) has no numeric <bndbox> "
            "xmin, ymin, xmax, ymax, or a non-numeric <difficult>",
            hint="each <object> needs <name> and <bndbox>",
        ) from exc
    if not name:
        raise DataError(f"{path}: object {n} has no <name>")
    xmin, ymin, xmax, ymax = corners
    return {
        "name": name,
        "box": (xmin - 1.0, ymin - 1.0, xmax, ymax),
        "id": f"object {n}",
        "difficult": difficult == 1,
    }


def _number(element, tag: str) -> float:
    try:
        return float(element.findtext(tag) or 0)
    except ValueError:
        return 0.0


def _find_image(root: Path, parsed: dict, problems: Problems) -> Path | None:
    xml = parsed["xml"]
    folders = [root / "JPEGImages", root / "images", xml.parent, root]
    names = (
        [parsed["filename"]]
        if parsed["filename"]
        else [xml.stem + suffix for suffix in IMAGE_SUFFIXES]
    )
    for candidate in (folder / name for name in names for folder in folders):
        if candidate.is_file():
            return candidate
    ids = ", ".join(o["id"] for o in parsed["objects"]) or "no objects"
    problems.report(
        f"{xml}: image {parsed['filename'] or xml.stem} was not found ({ids})",
        hint=f"looked in {', '.join(str(f) for f in folders)}",
    )
    return None
