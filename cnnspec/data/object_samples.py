"""Samples that keep every object of each image: the data of dense detection heads.

`index_objects` reads a COCO JSON, a YOLO folder or a VOC folder through their object
readers (coco_objects, yolo_objects, voc_objects: every object, crowd and difficult flags
honoured) or generates the multi-object `shapes_multi` set in memory, and returns Samples
with ObjectArrays: boxes normalised to [0, 1] of the network's input (the pixels of the
input are box x input size). Image files reach the input in one of two ways, the compile
section's `resize` (imaging.FITS): "stretch" (the default) resizes each axis on its own, so
a box normalised to its image is unchanged; "letterbox" keeps the aspect ratio and pads
(imaging.letterbox), and the boxes move with the pixels. Each image's frame (how it sits in
the input) rides with its objects, so the evaluator scores in the image's own pixels.
What the readers skipped (invalid="skip") is kept in Samples.notes for the training log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnspec.data import DataError
from cnnspec.data.imaging import (
    FITS,
    decode_image,
    fit_boxes,
    letterbox_frame,
    stretch_frame,
    to_channels,
    unfit_boxes,
)
from cnnspec.data.object_index import ObjectIndex
from cnnspec.data.samples import (
    ArrayImages,
    FileImages,
    ObjectArrays,
    PathArray,
    Samples,
    path_array,
)
from cnnspec.detection.assign import pad_objects
from cnnspec.detection.objects import Truth

GENERATED = ("shapes_multi",)
OPTIONS = {
    "shapes_multi": ("n", "objects"),
    "file": ("invalid", "classes", "images", "format"),
}
FORMATS = ("coco", "yolo", "voc")


def index_objects(
    source, input_shape, seed: int = 0, resize: str = "stretch", **options
) -> Samples:
    """Samples of every object in `source` for a network taking (H, W, C) images:
    "shapes_multi" (options n=4000, objects=MIN-MAX), or the path of a COCO .json (or a
    folder holding annotations.json), a YOLO folder (classes.txt, images/, labels/) or a
    VOC folder (Annotations/). File options: invalid=error|skip, classes=a,b,c, and
    format=coco|yolo|voc for a folder that holds several (COCO, then YOLO, then VOC).
    `resize`: how image files reach the input, stretch or letterbox (the compile
    section's `resize`; shapes_multi is drawn at the input size and ignores it)."""
    height, width, channels = (int(v) for v in input_shape)
    if resize not in FITS:
        raise DataError(f"unknown resize {resize!r}", hint=f"use one of {', '.join(FITS)}")
    if isinstance(source, str) and source in GENERATED:
        _check_options("shapes_multi", options)
        return _shapes_multi((height, width), channels, seed, **options)
    _check_options("file", options)
    index = _read_index(Path(os.path.expanduser(os.fspath(source))), options)
    return samples_of(index, (height, width, channels), resize)


@dataclass(frozen=True, eq=False)
class LetterboxImages:
    """Image files decoded to uint8 and letterboxed to `size` per sample (a reader of
    Samples, like FileImages; not one, so that the Keras loader's TF decoding, which
    stretches, leaves these to Pillow)."""

    paths: PathArray
    size: tuple[int, int]
    channels: int
    masks = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", path_array(self.paths))

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, row: int) -> np.ndarray:
        return decode_image(self.paths[row], self.size, self.channels, fit="letterbox")


def samples_of(index: ObjectIndex, input_shape, resize: str = "stretch") -> Samples:
    """Samples streaming the indexed image files, stretched or letterboxed to the input."""
    height, width, channels = input_shape
    framed = letterbox_frame if resize == "letterbox" else stretch_frame
    frames = np.array(
        [framed(i.width, i.height, (height, width)) for i in index.images], np.float64
    ).reshape(-1, 6)
    scale = np.array([width, height] * 2, np.float32)
    per_image = [
        (fit_boxes(i.boxes, frame) / scale, i.classes) for i, frame in zip(index.images, frames)
    ]
    crowd = [i.iscrowd | i.difficult for i in index.images]
    paths = tuple(str(i.path) for i in index.images)
    reader = (LetterboxImages if resize == "letterbox" else FileImages)(
        paths, (height, width), channels
    )
    notes = (f"{index.source}: {index.describe()}", *index.skipped)
    return _samples(
        reader, per_image, crowd, index.classes, (height, width, channels), notes, frames
    )


def _shapes_multi(size, channels, seed, n=4000, objects="1-5") -> Samples:
    from cnnspec.data.shapes import SHAPE_CLASSES
    from cnnspec.data.shapes_multi import generate_multi_shapes

    try:
        low, high = (int(v) for v in str(objects).split("-"))
        n = int(n)
    except ValueError:
        raise DataError(
            f"shapes_multi options n={n!r} objects={objects!r} are not understood",
            hint="e.g. n=4000 objects=1-5",
        ) from None
    images, truths = generate_multi_shapes(n, size, seed, (low, high))
    scale = np.array([size[1], size[0]] * 2, np.float32)
    per_image = [(t.boxes / scale, t.classes) for t in truths]
    crowd = [np.zeros(len(t.classes), bool) for t in truths]
    # uint8 in memory: a quarter of float32 (4,000 images of 96x96: 110 MB, not 440)
    pixels = np.round(to_channels(images, channels) * 255).astype(np.uint8)
    reader = ArrayImages(pixels)
    return _samples(reader, per_image, crowd, list(SHAPE_CLASSES), (*size, channels), ())


def _samples(reader, per_image, crowd, classes, input_shape, notes, frames=None) -> Samples:
    # at least one column, so that batches of images without objects keep their shape
    boxes, labels = pad_objects(per_image, max(1, *(len(c) for _, c in per_image)))
    flags = np.zeros(labels.shape, bool)
    for i, c in enumerate(crowd):
        flags[i, : len(c)] = c
    targets = (labels >= 0) & ~flags
    # y and present only stratify the validation split: an image's first object's class
    first = np.where(targets.any(1), labels[np.arange(len(labels)), targets.argmax(1)], 0)
    return Samples(
        reader,
        y=np.maximum(first, 0),
        classes=list(classes),
        task="objects",
        present=targets.any(1).astype(np.float32),
        input_shape=tuple(input_shape),
        objects=ObjectArrays(
            boxes.astype(np.float32),
            labels,
            flags,
            None if frames is None else np.asarray(frames, np.float32),
        ),
        notes=tuple(notes),
    )


def _read_index(path: Path, options: dict) -> ObjectIndex:
    from cnnspec.data.coco_objects import index_coco
    from cnnspec.data.voc_objects import index_voc
    from cnnspec.data.yolo_objects import index_yolo

    invalid = options.get("invalid", "error")
    classes = options.get("classes")
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",")]
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    form = options.get("format")
    if form is not None and form not in FORMATS:
        raise DataError(
            f"unknown detection format {form!r}", hint=f"use one of {', '.join(FORMATS)}"
        )
    if form == "coco" or (
        form is None and (path.suffix.lower() == ".json" or (path / "annotations.json").is_file())
    ):
        return index_coco(path, options.get("images"), invalid)
    if form == "yolo" or (form is None and (path / "labels").is_dir()):
        return index_yolo(path, classes, invalid)
    if form == "voc" or (path / "Annotations").is_dir() or any(path.glob("*.xml")):
        return index_voc(path, classes, invalid)
    raise DataError(
        f"{path} is not a detection dataset",
        hint="use shapes_multi, a COCO .json (or a folder with annotations.json), a YOLO "
        "folder (images/, labels/, classes.txt) or a VOC folder (Annotations/)",
    )


def _check_options(kind: str, options: dict) -> None:
    unknown = sorted(set(options) - set(OPTIONS[kind]))
    if unknown:
        raise DataError(
            f"option {unknown[0]!r} is not understood by {kind} detection data",
            hint=f"it accepts: {', '.join(OPTIONS[kind])}",
        )


def truths_of(batch: dict, size: tuple[int, int]) -> list[Truth]:
    """The ground truth of each image of a batch, in input pixels ((height, width)), or in
    each image's own pixels where the batch says how it sits in the input (object_frame)."""
    from cnnspec.detection.objects import make_truth

    scale = np.array([size[1], size[0]] * 2, np.float32)
    frames = _frames(batch)
    found = []
    for boxes, classes, crowd, frame in zip(
        batch["object_boxes"], batch["object_classes"], batch["object_crowd"], frames
    ):
        real = classes >= 0
        pixels = boxes[real] * scale
        if frame is not None:
            pixels = unfit_boxes(pixels, frame)
        found.append(make_truth(pixels, classes[real], crowd[real]))
    return found


def in_image_pixels(found: list, batch: dict) -> list:
    """Detections (detection.objects.Detections, in input pixels) of a batch's images, in
    each image's own pixels where the batch carries its frame: the evaluator then scores
    what predict reports."""
    return [
        kept if frame is None else kept._replace(boxes=unfit_boxes(kept.boxes, frame))
        for kept, frame in zip(found, _frames(batch))
    ]


def _frames(batch: dict) -> list:
    frames = batch.get("object_frame")
    n = len(batch["object_classes"])
    return [None] * n if frames is None else list(np.asarray(frames))
