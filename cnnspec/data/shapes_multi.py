"""The multi-object form of the `shapes` source: several circles, squares and triangles per
image, of several sizes, overlapping, with a box for every one.

Objects are painted in order, each over the ones before; a placement that would hide more
than half of an earlier object is drawn again (up to a few tries, then the image keeps the
objects it has), so every labelled object stays recognisable. As in COCO, an object's box
and area are those of its visible pixels. Everything is reproducible from the seed.
write_multi_shapes puts one set on disk in COCO JSON, YOLO txt and PASCAL VOC XML form at
once (the same images), so the readers are tested on real files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from cnnspec.data import DataError
from cnnspec.data.imaging import save_image
from cnnspec.data.shapes import NOISE, SHAPE_CLASSES, _pixel_centres, _rasterise
from cnnspec.detection.objects import Truth, make_truth

MIN_VISIBLE = 0.5  # the share of an object later objects may not hide
TRIES = 20
# Colours differ by at least this much in some channel from the background and from every
# other object, so that edges stay visible where objects overlap.
COLOUR_GAP = 0.3


def generate_multi_shapes(
    n: int,
    size: tuple[int, int] = (96, 96),
    seed: int = 0,
    objects: tuple[int, int] = (1, 5),
    scale: tuple[float, float] = (0.06, 0.22),
):
    """n RGB images (n, H, W, 3) float32 in [0, 1] and their Truth (xyxy pixel boxes,
    class indices into SHAPE_CLASSES, visible areas). Each image draws between objects[0]
    and objects[1] objects (0 allowed: negatives) of radius scale * min(H, W)."""
    _check(n, size, objects, scale)
    rng = np.random.default_rng(seed)
    grid = _pixel_centres(size)
    images = np.empty((n, *size, 3), dtype=np.float32)
    truths = []
    for i in range(n):
        count = int(rng.integers(objects[0], objects[1] + 1))
        images[i], truths_i = _draw_image(rng, grid, size, count, scale)
        truths.append(truths_i)
    return images, truths


def _check(n, size, objects, scale) -> None:
    if int(n) < 1:
        raise DataError(f"the multi-object shapes need n >= 1 images, got n={n}")
    if min(size) < 16:
        raise DataError(f"multi-object shapes images must be at least 16x16, got {size}")
    if not 0 <= objects[0] <= objects[1]:
        raise DataError(f"objects must be (min, max) with 0 <= min <= max, got {objects}")
    if not 0 < scale[0] <= scale[1] <= 0.5:
        raise DataError(
            f"scale must be (min, max) with 0 < min <= max <= 0.5, got {scale}",
            hint="a radius is scale * the image's shorter side",
        )


def _draw_image(rng, grid, size, count: int, scale) -> tuple[np.ndarray, Truth]:
    background = rng.uniform(0.0, 1.0, size=3)
    owner = np.full(size, -1)  # which object each pixel shows, -1 for background
    colours, kinds, full_areas = [background], [], []
    for _ in range(count):
        placed = _place(rng, grid, size, scale, owner, full_areas)
        if placed is None:
            break
        kind, inside = placed
        owner[inside] = len(kinds)
        kinds.append(kind)
        full_areas.append(int(inside.sum()))
        colours.append(_colour(rng, colours))
    image = np.array(colours)[owner + 1]  # owner -1 -> the background, colours[0]
    image = np.clip(image + rng.normal(0.0, NOISE, size=image.shape), 0.0, 1.0)
    boxes, areas = [], []
    for k in range(len(kinds)):
        rows, cols = np.nonzero(owner == k)
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        areas.append(len(rows))
    return image.astype(np.float32), make_truth(boxes, kinds, areas=areas)


def _place(rng, grid, size, scale, owner, full_areas):
    height, width = size
    for _ in range(TRIES):
        kind = int(rng.integers(len(SHAPE_CLASSES)))
        radius = rng.uniform(*scale) * min(height, width)
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        inside = _rasterise(kind, (cx, cy, radius), grid)
        # The objects this one would leave with too little showing.
        left = np.bincount(owner[~inside & (owner >= 0)], minlength=len(full_areas))
        if all(left[k] >= MIN_VISIBLE * full_areas[k] for k in range(len(full_areas))):
            return kind, inside
    return None


def _colour(rng, taken: list[np.ndarray]) -> np.ndarray:
    for _ in range(TRIES):
        colour = rng.uniform(0.0, 1.0, size=3)
        if all(np.abs(colour - other).max() >= COLOUR_GAP for other in taken):
            return colour
    return 1.0 - taken[0]  # the background's opposite, always far from it


def write_multi_shapes(
    out_dir: str | Path,
    n: int = 200,
    size: int | tuple[int, int] = 96,
    seed: int = 0,
    objects: tuple[int, int] = (1, 5),
    scale: tuple[float, float] = (0.06, 0.22),
) -> Path:
    """Generate n images and write out_dir/images/NNNNN.png, out_dir/annotations.json
    (COCO), out_dir/labels/NNNNN.txt (YOLO, an empty file for an image without objects),
    out_dir/Annotations/NNNNN.xml (VOC) and out_dir/classes.txt. Returns out_dir, which
    index_coco, index_yolo and index_voc all read.

    The set is built in a hidden folder beside out_dir and renamed into place when it is
    complete (one rename instead of an fsync per file, which took 60% of the time), so an
    interrupted run leaves no half set; out_dir must not exist or be empty."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(
            f"{out} already exists and is not an empty folder",
            hint="write the set to a new folder, or remove this one",
        )
    height, width = (size, size) if isinstance(size, int) else size
    images, truths = generate_multi_shapes(n, (height, width), seed, objects, scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        _write_all(building, images, truths)
        if out.exists():
            out.rmdir()
        os.replace(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return out


def _write_all(out: Path, images: np.ndarray, truths: list[Truth]) -> None:
    height, width = images.shape[1:3]
    for folder in ("images", "labels", "Annotations"):
        (out / folder).mkdir()
    coco_images, annotations = [], []
    for i, (image, truth) in enumerate(zip(images, truths)):
        name = f"{i:05d}"
        save_image(out / "images" / f"{name}.png", image)
        coco_images.append(
            {"id": i + 1, "file_name": f"{name}.png", "width": width, "height": height}
        )
        lines = []
        for box, label, area in zip(
            truth.boxes.tolist(), truth.classes.tolist(), truth.areas.tolist()
        ):
            x0, y0, x1, y1 = (int(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": int(area),
                    "iscrowd": 0,
                }
            )
            lines.append(
                f"{label} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}\n"
            )
        (out / "labels" / f"{name}.txt").write_text("".join(lines), encoding="utf-8")
        (out / "Annotations" / f"{name}.xml").write_text(
            _voc_document(name, truth, (width, height)), encoding="utf-8"
        )
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(SHAPE_CLASSES)]
    doc = {"images": coco_images, "annotations": annotations, "categories": categories}
    (out / "annotations.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    (out / "classes.txt").write_text("\n".join(SHAPE_CLASSES) + "\n", encoding="utf-8")


def _voc_document(name: str, truth: Truth, size: tuple[int, int]) -> str:
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "filename").text = f"{name}.png"
    dims = ElementTree.SubElement(root, "size")
    for tag, value in zip(("width", "height", "depth"), (*size, 3)):
        ElementTree.SubElement(dims, tag).text = str(value)
    for box, label in zip(truth.boxes.tolist(), truth.classes.tolist()):
        obj = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(obj, "name").text = SHAPE_CLASSES[label]
        ElementTree.SubElement(obj, "difficult").text = "0"
        corners = ElementTree.SubElement(obj, "bndbox")
        x0, y0, x1, y1 = (int(v) for v in box)
        # VOC pixels are 1-based and its xmax / ymax inclusive.
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1, y1)):
            ElementTree.SubElement(corners, tag).text = str(value)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode") + "\n"
