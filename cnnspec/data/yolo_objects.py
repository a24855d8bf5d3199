"""YOLO txt folders -> ObjectIndex, keeping every object.

The layout Ultralytics and Darknet use: root/images/**/<name>.<ext> with root/labels/**/
<name>.txt beside it in a mirrored tree (or images and .txt files together in root), one
line per object "class cx cy w h", the centre and size normalised by the image's width and
height. An image without a label file, or with an empty one, is a negative (Ultralytics'
rule). The format has no class names: they come from `classes` or root/classes.txt. Image
sizes are read from the file headers (no pixels are decoded). See object_index for bad input.
"""

from __future__ import annotations

from pathlib import Path

from cnnspec.data import DataError
from cnnspec.data.folders import read_class_names
from cnnspec.data.imaging import IMAGE_SUFFIXES, image_size
from cnnspec.data.object_index import ObjectIndex, Problems, make_image


def index_yolo(
    root: str | Path, classes: list[str] | None = None, invalid: str = "error"
) -> ObjectIndex:
    root = Path(root)
    names = list(classes or read_class_names(root) or [])
    if not names:
        raise DataError(
            f"YOLO folder {root} has no class names",
            hint="write them to classes.txt, one per line in class-index order, "
            "or pass the classes option",
        )
    images_dir, labels_dir = (
        (root / "images", root / "labels") if (root / "images").is_dir() else (root, root)
    )
    images = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    problems = Problems(invalid)
    labels_of = {p: labels_dir / p.relative_to(images_dir).with_suffix(".txt") for p in images}
    _report_orphans(labels_dir, set(labels_of.values()), problems, images_dir)
    indexed = []
    for image in images:
        label_file = labels_of[image]
        width, height = image_size(image)
        objects = (
            _read_labels(label_file, len(names), width, height) if label_file.is_file() else []
        )
        indexed.append(make_image(image, (width, height), objects, str(label_file), problems))
    if not indexed:
        raise DataError(
            f"YOLO folder {root} holds no images",
            hint="put them in images/ and their .txt labels in labels/",
        )
    return ObjectIndex(indexed, names, root, problems.skipped)


def _read_labels(path: Path, n_classes: int, width: int, height: int) -> list[dict]:
    objects = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}: line {number}"
        if len(fields) != 5:
            raise DataError(
                f"{where} has {len(fields)} values: {line.strip()!r}",
                hint="a detection label is 'class cx cy w h' (segment polygons are not read)",
            )
        try:
            label = int(fields[0])
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError as exc:
            raise DataError(
                f"{where} is not 'class cx cy w h' with an integer class: {line.strip()!r}"
            ) from exc
        if not 0 <= label < n_classes:
            raise DataError(
                f"{where} has class {label}, but there are {n_classes} classes "
                f"(0..{n_classes - 1})",
                hint="add the class name to classes.txt",
            )
        box = (
            (cx - w / 2) * width,
            (cy - h / 2) * height,
            (cx + w / 2) * width,
            (cy + h / 2) * height,
        )
        objects.append({"box": box, "class": label, "id": f"line {number}"})
    return objects


def _report_orphans(labels_dir: Path, expected: set, problems: Problems, images_dir: Path) -> None:
    for label_file in sorted(labels_dir.rglob("*.txt")):
        if label_file not in expected and label_file.name != "classes.txt":
            problems.report(
                f"{label_file}: its image was not found",
                hint=f"looked for {label_file.stem}.<image suffix> in "
                f"{images_dir / label_file.parent.relative_to(labels_dir)}",
            )
