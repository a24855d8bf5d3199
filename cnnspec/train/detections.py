"""`cnnspec predict` for dense detection heads: every object found in each image, as JSON
(class, score, box in the image's own pixels) and as a copy of the image with the boxes
drawn (IMAGE.boxes.png beside it, or in --out), written atomically.

Images reach the network's input as in training (read_object_images: stretched, or
letterboxed by the compile section's `resize letterbox`); boxes are decoded and filtered
there (detection.reading: class-aware NMS with the backend's own kernel) and mapped back to
each image's own pixels through its frame (imaging.unfit_boxes: the inverse of the scale and
the padding), as the evaluator maps them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnspec.detection.reading import Settings, detect
from cnnspec.train.dense import object_classes

# one colour per class, cycled (matplotlib's tab10)
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def predict_objects(
    plan,
    backend,
    x: np.ndarray,
    images: list[str],
    drawn: list[Path],
    names: list[str] | None = None,
    settings: Settings | None = None,
    frames: list | None = None,
) -> list[dict]:
    """Per image {"image", "drawn", "detections": [{"class", "index", "score", "box"}]},
    best score first; `x` are the images at the input size, as the network takes them, and
    `frames` how each sits there (read_object_images; None: stretched)."""
    from cnnspec.data.imaging import image_size, stretch_frame, unfit_boxes

    head = next(h for h in plan.heads if h.role == "dense")
    raw = backend.predict(x)[plan.heads.index(head)]
    height, width = x.shape[1:3]
    found = detect(
        head.info,
        raw.reshape(len(raw), -1, head.info.columns),
        framework=backend.name,
        settings=settings or Settings(),
        image_size=(height, width),
    )
    names = list(names or plan.class_names or [str(k) for k in range(object_classes(head.info))])
    results = []
    if frames is None:
        frames = [stretch_frame(*image_size(path), (height, width)) for path in images]
    for path, kept, target, frame in zip(images, found, drawn, frames):
        objects = [
            {
                "class": names[int(c)] if int(c) < len(names) else str(int(c)),
                "index": int(c),
                "score": round(float(s), 5),
                "box": [round(float(v), 2) for v in box],
            }
            for box, s, c in zip(unfit_boxes(kept.boxes, frame), kept.scores, kept.classes)
        ]
        draw(path, objects, target)
        results.append({"image": path, "drawn": str(target), "detections": objects})
    return results


def read_object_images(paths: list[str], shape, resize: str = "stretch"):
    """(images (N, H, W, C) float32 in [0, 1] as the network takes them, their frames).
    Letterboxed images are decoded as the training workers decode them (imaging.decode_image);
    stretched ones as `predict` always read them (imaging.read_images)."""
    from cnnspec.data.imaging import (
        decode_image,
        image_size,
        letterbox_frame,
        read_images,
        stretch_frame,
    )

    height, width, channels = shape
    if resize != "letterbox":
        frames = [stretch_frame(*image_size(p), (height, width)) for p in paths]
        return read_images(paths, shape), frames
    x = np.stack(
        [decode_image(p, (height, width), channels, fit="letterbox") for p in paths]
    ).astype(np.float32)
    return x / 255.0, [letterbox_frame(*image_size(p), (height, width)) for p in paths]


def draw(image: str, objects: list[dict], path: Path) -> None:
    """A copy of `image` with each object's box and "class score" label drawn (Pillow)."""
    from PIL import Image, ImageDraw

    from cnnspec.outputs import write_with

    with Image.open(image) as opened:
        picture = opened.convert("RGB")
    pen = ImageDraw.Draw(picture)
    line = max(1, round(min(picture.size) / 200))
    for obj in objects:
        colour = PALETTE[obj["index"] % len(PALETTE)]
        x0, y0, x1, y1 = obj["box"]
        pen.rectangle([x0, y0, x1, y1], outline=colour, width=line)
        label = f"{obj['class']} {obj['score']:.2f}"
        left, top, right, bottom = pen.textbbox((x0, y0), label)
        lift = bottom - top + 2
        pen.rectangle([x0, y0 - lift, x0 + right - left + 2, y0], fill=colour)
        pen.text((x0 + 1, y0 - lift), label, fill=(255, 255, 255))
    write_with(path, lambda tmp: picture.save(tmp, format="PNG"))
