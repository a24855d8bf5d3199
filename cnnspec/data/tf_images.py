"""Image files decoded by TensorFlow's own ops for the Keras loader (loading.keras_batches).

Pillow holds the GIL for part of each file, so on tf.data's threads it ran at 0.44 of a
hand-written tf.data pipeline (bench/data_pipeline.py). For a folder of JPEG and PNG files
the per-sample work is done by tf.io and tf.image instead, in C++ on tf.data's threads. The
augmentation's draws stay in numpy, keyed by rows as everywhere (augmentation.draw_moves,
made for the whole epoch before its first batch); the pixel-moving ops (flip, vflip, crop)
then move each image in TF on the decoding threads (_moved), since numpy flipping batches
under the GIL held the pipeline at 0.65-0.81 of tf.data. Ops that compute pixels run in
numpy after them, on the same generator.

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
from cnnspec.data.augmentation import RANDOM_OPS, augment_batch, draw_moves, move
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
    if channels == 3:
        # decode_jpeg reads PNG too (one kernel for both), and its RGB output is Pillow's
        # convert("RGB"): two tf.cond fewer per image (each a function call in tf.data)
        image = tf.io.decode_jpeg(raw, channels=3, dct_method="INTEGER_ACCURATE")
    else:
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
    """The epoch's batches in `order` as numpy dicts, files decoded `workers` at a time by
    tf.data. The pixel-moving ops' draws are made in numpy up front (epoch_draws: each
    batch's from its (seed, epoch, rows) generator, as augment_batch makes them) and their
    pixel work is done per image by TF on the decoding threads (_moved); the targets move
    in numpy with the same draws. Any other ops run in `augment_batch` after them, on the
    same generator. `pillow(rows)` is the same batch made by Pillow (loading.prepare): the
    stand-in."""
    import tensorflow as tf

    reader = samples.reader
    paths = tf.constant([str(reader.paths[int(r)]) for r in samples.rows])
    size, channels = reader.size, reader.channels
    probe = pillow(order[:1])
    keys = list(probe)
    ops = list(ops or [])
    moving = _moving_prefix(ops)
    # validation skips the random ops (augment_batch's train=False): nothing to draw or move
    rest = [op for op in ops[len(moving) :] if train or op.name not in RANDOM_OPS]
    moving = moving if train else []

    def generator(rows: np.ndarray):
        return np.random.default_rng([seed, epoch, *(int(i) for i in rows)])

    # per sample of the epoch, in `order`: the moving ops' draws, and the targets they moved
    # (every such op acts on each image alone, so the whole epoch moves at once)
    draws = epoch_draws(order, batch_size, moving, generator)
    targets = _targets(samples, order)
    for op, drawn in zip(moving, draws):
        move(op, targets, drawn, size)
    target_keys = list(targets)
    stand_in = {**probe, "x": np.zeros(probe["x"].shape, np.float32)}  # a batch that failed
    dtypes = [tf.as_dtype(stand_in[k].dtype) for k in keys]
    failed: list[DataError] = []  # tf would re-raise one as text with its traceback

    def finish(x, *values) -> list[np.ndarray]:
        """numpy: the ops after the pixel-moving ones, on float [0, 1] pixels, with the
        batch's generator past the moving ops' draws (drawn again: a few bytes)."""
        batch = {"x": x, **dict(zip(target_keys, values))}
        rng = generator(batch["index"])
        for op in moving:
            draw_moves(op, len(x), rng)
        try:
            batch = augment_batch(batch, rest, rng, train)
        except DataError as exc:
            failed.append(exc)
            batch = stand_in
        return [batch[k] for k in keys]

    def sample(i, drawn, target):
        # float per image on the decoding threads, as Samples.sample: a batch-level map
        # would be one more stage handing batches between threads
        image = _moved(tf, decode(tf, paths[i], size, channels), moving, drawn)
        return {"x": tf.cast(image, tf.float32) / 255.0, **target}

    def finish_batch(batch):
        values = [batch[k] for k in target_keys]
        out = tf.numpy_function(finish, [batch["x"], *values], dtypes)
        return dict(zip(keys, out))

    def stream(first: int):
        start = first * batch_size
        rest_of_epoch = (
            order[start:],
            tuple(d[start:] for d in draws),
            {k: v[start:] for k, v in targets.items()},
        )
        data = (
            tf.data.Dataset.from_tensor_slices(rest_of_epoch)
            .map(sample, num_parallel_calls=workers, deterministic=True)
            .batch(batch_size)
        )
        if rest:
            data = data.map(finish_batch, num_parallel_calls=workers, deterministic=True)
        return data.prefetch(2).as_numpy_iterator()

    count, first = math.ceil(len(order) / batch_size), 0
    while first < count:
        made = 0
        try:
            for values in stream(first):
                if failed:
                    raise failed[0]
                made += 1
                yield {k: values[k] for k in keys}
            return
        except tf.errors.OpError:
            # a file TF cannot read: Pillow decodes this batch (or names the file), and
            # tf.data starts again after it
            bad = first + made
            rows = order[bad * batch_size : (bad + 1) * batch_size]
            yield pillow(rows)
            first = bad + 1


def epoch_draws(order: np.ndarray, batch_size: int, moving: list, generator) -> list[np.ndarray]:
    """Each pixel-moving op's draws for every sample of the epoch, in `order`: batch by
    batch from `generator(rows)`, op after op, as augment_batch draws them (about 0.1 ms
    a batch, for the epoch before its first batch)."""
    per_op: list[list[np.ndarray]] = [[] for _ in moving]
    for start in range(0, len(order) if moving else 0, batch_size):
        rows = order[start : start + batch_size]
        rng = generator(rows)
        for drawn, op in zip(per_op, moving):
            drawn.append(draw_moves(op, len(rows), rng))
    return [np.concatenate(drawn) for drawn in per_op]


def _moved(tf, image, ops: list, params):
    """One decoded (H, W, C) image moved by the pixel-moving ops with its draws, on the
    decoding thread: augmentation.move's pixel work, exactly. (Moving whole batches in the
    graph was slower: tf.where + tf.reverse on 64 images of 128x128 took 20-25 ms of CPU,
    numpy's flip and float 15, at load 6.)"""
    height, width, _ = image.shape
    for op, drawn in zip(ops, params):
        if op.name == "crop":  # zero padding, then the (H, W) window at (dy, dx)
            padded = tf.pad(image, [[op.pad, op.pad], [op.pad, op.pad], [0, 0]])
            image = tf.slice(padded, [drawn[0], drawn[1], 0], [height, width, -1])
        else:
            axis = 1 if op.name == "flip" else 0
            image = tf.cond(drawn, lambda x=image, a=axis: tf.reverse(x, [a]), lambda x=image: x)
        image.set_shape((height, width, image.shape[-1]))
    return image


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
    if samples.objects is not None:
        out.update(samples.objects.rows(rows))
    return out
