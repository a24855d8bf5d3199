"""Image files decoded by TensorFlow's own ops for the Keras loader (loading.keras_batches).

Pillow holds the GIL for part of each file, so on tf.data's threads it ran at 0.44 of a
hand-written tf.data pipeline (bench/data_pipeline.py). For a folder of JPEG and PNG files
the per-sample work is done by tf.io and tf.image instead, in C++ on tf.data's threads, and
only the per-batch augmentation (keyed by rows, as everywhere) stays in numpy.

The result matches Pillow's (imaging.decode_image, the torch path) to one grey level:
  - JPEG is decoded with libjpeg's accurate integer DCT (the one Pillow uses; TF's default
    fast DCT is off by up to 5 levels); at the file's own size the pixels are identical;
  - the grey conversion is Pillow's fixed-point ITU-R 601 luma (libpng's own rgb-to-grey
    uses other weights), grey to RGB repeats the plane, alpha is dropped;
  - resizing is tf.image's antialiased bilinear (the triangle filter widened when shrinking,
    as Pillow's BILINEAR), computed in float and rounded, where Pillow rounds in fixed point:
    at most 1 level apart (tests/test_pipeline_keras.py holds both to 1/255).
A file TF cannot decode (a BMP named .png, a truncated file; CMYK JPEGs it converts) goes to
Pillow, which either reads it or raises the DataError that names it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from cnnspec.data import DataError
from cnnspec.data.augmentation import augment_batch
from cnnspec.data.samples import FileImages, Samples

SUFFIXES = (".jpg", ".jpeg", ".png")
# Pillow's convert("L"): L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 (Convert.c)
_LUMA16 = (19595, 38470, 7471)
PIXEL_MOVING = ("flip", "vflip", "crop")  # augmentation ops that never compute a pixel value


def decodable(samples: Samples) -> bool:
    """Whether every image of `samples` is a JPEG or PNG file TF can decode (masks, which
    are label maps with their own rules, stay with Pillow)."""
    reader = samples.reader
    return (
        isinstance(reader, FileImages)
        and reader.masks is None
        and reader.channels in (1, 3)
        and all(str(reader.paths[int(r)]).lower().endswith(SUFFIXES) for r in samples.rows)
    )


def decode(tf, path, size: tuple[int, int], channels: int):
    """One file as (H, W, channels) uint8 at `size` (a tf.data map function)."""
    raw = tf.io.read_file(path)
    image = tf.cond(
        tf.io.is_jpeg(raw),
        lambda: tf.io.decode_jpeg(raw, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_png(raw),  # 16-bit files come as their high byte
    )
    image = _channels(tf, image, channels)
    height, width = size
    same = tf.logical_and(tf.shape(image)[0] == height, tf.shape(image)[1] == width)
    image = tf.cond(same, lambda: image, lambda: _resized(tf, image, size))
    image.set_shape((height, width, channels))
    return image


def _channels(tf, image, channels: int):
    have = tf.shape(image)[-1]  # 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
    if channels == 3:
        return tf.cond(have < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3])

    def luma():
        rgb = tf.cast(image[..., :3], tf.int32)
        weighted = tf.reduce_sum(rgb * tf.constant(_LUMA16, tf.int32), axis=-1, keepdims=True)
        return tf.cast(tf.bitwise.right_shift(weighted + 0x8000, 16), tf.uint8)

    return tf.cond(have < 3, lambda: image[..., :1], luma)


def _resized(tf, image, size):
    resized = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def batches(
    samples: Samples,
    order: np.ndarray,
    batch_size: int,
    *,
    ops,
    seed,
    epoch,
    train,
    workers,
    pillow: Callable[[np.ndarray], dict],
):
    """The epoch's batches in `order` as numpy dicts: files decoded `workers` at a time by
    tf.data, batched, then augmented by `augment_batch` keyed by (seed, epoch, rows).
    `pillow(rows)` is the same batch made by Pillow (loading.prepare): the stand-in."""
    import tensorflow as tf

    reader = samples.reader
    paths = tf.constant([str(reader.paths[int(r)]) for r in samples.rows])
    size, channels = reader.size, reader.channels
    probe = pillow(order[:1])
    keys = list(probe)
    ops = list(ops or [])
    moving = _moving_prefix(ops)
    rest = ops[len(moving) :]
    # pixels stay uint8 through the ops that only move them (a quarter of the bytes to
    # copy under the GIL); the first op that computes with them gets float32 [0, 1]
    x_dtype = np.float32 if rest else np.uint8
    stand_in = {**probe, "x": np.zeros(probe["x"].shape, x_dtype)}  # a batch that failed
    dtypes = [tf.as_dtype(stand_in[k].dtype) for k in keys]
    at_x = keys.index("x")
    failed: list[DataError] = []  # tf would re-raise one as text with its traceback

    def finish(x, rows) -> list[np.ndarray]:
        """numpy: the batch dict of `prepare`, from the uint8 pixels TF decoded; the draws
        are those of `prepare` (one generator through all the ops, keyed by the rows)."""
        rows = np.asarray(rows)
        batch = {"x": x, **_targets(samples, rows)}
        rng = np.random.default_rng([seed, epoch, *(int(i) for i in rows)])
        try:
            if moving:
                batch = augment_batch(batch, moving, rng, train)
            if rest:
                batch["x"] = batch["x"].astype(np.float32) / 255.0  # as Samples.sample
                batch = augment_batch(batch, rest, rng, train)
        except DataError as exc:
            failed.append(exc)
            batch = stand_in
        return [batch[k] for k in keys]

    def as_float(*values):
        if rest:
            return values
        x = tf.cast(values[at_x], tf.float32) / 255.0  # as Samples.sample, in float32
        return (*values[:at_x], x, *values[at_x + 1 :])

    def stream(first: int):
        rows = tf.data.Dataset.from_tensor_slices(order[first * batch_size :])
        return (
            tf.data.Dataset.zip(
                rows.map(
                    lambda i: decode(tf, paths[i], size, channels),
                    num_parallel_calls=workers,
                    deterministic=True,
                ),
                rows,
            )
            .batch(batch_size)
            .map(
                lambda x, r: tf.numpy_function(finish, [x, r], dtypes),
                num_parallel_calls=workers,
                deterministic=True,
            )
            .map(as_float, num_parallel_calls=workers, deterministic=True)
            .prefetch(2)
            .as_numpy_iterator()
        )

    count, first = math.ceil(len(order) / batch_size), 0
    while first < count:
        made = 0
        try:
            for values in stream(first):
                if failed:
                    raise failed[0]
                made += 1
                yield dict(zip(keys, values))
            return
        except tf.errors.OpError:
            # a file TF cannot read: Pillow decodes this batch (or names the file), and
            # tf.data starts again after it
            bad = first + made
            rows = order[bad * batch_size : (bad + 1) * batch_size]
            yield pillow(rows)
            first = bad + 1


def _moving_prefix(ops: list) -> list:
    """The leading ops that only move pixels or pad them with zeros: the same on uint8
    as on float [0, 1] (tests/test_pipeline_keras.py holds each to that)."""
    for k, op in enumerate(ops):
        if op.name not in PIXEL_MOVING:
            return ops[:k]
    return ops


def _targets(samples: Samples, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Everything of Samples.batch(rows) but the pixels."""
    out = {"y": samples.y[rows], "present": samples.present[rows], "index": rows.astype(np.int64)}
    if samples.boxes is not None:
        out["boxes"] = samples.boxes[rows]
    return out
