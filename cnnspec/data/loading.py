"""Batches from Samples, decoded and augmented in worker processes by the frameworks' own
loaders: torch.utils.data.DataLoader (torch_loader.py, with a DistributedSampler, so each
rank of a torchrun group reads its own shard) and tf.data for Keras (here). Both yield the
numpy batch dicts the training backends take.

Randomness is keyed by (seed, epoch, row), never by worker or rank: a sample is augmented
alike whatever the number of workers or processes, and a resumed run repeats its epochs.
Frameworks are imported only by the functions that need them.
"""

from __future__ import annotations

import math
import os

import numpy as np

from cnnspec.data import DataError, tf_images
from cnnspec.data.augmentation import augment_batch
from cnnspec.data.samples import Samples

WORKER_HINT = "--workers 0 decodes in the main process, where the full traceback shows"


def default_workers(samples: Samples) -> int:
    """Decoding processes when --workers is not given: none for data already in memory (a
    process would only copy it), else up to 4, leaving a core to the training loop."""
    if samples.cached:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def prepare(samples: Samples, rows, ops, seed: int, epoch: int, train: bool) -> dict:
    """Rows decoded into one batch and augmented (`ops`: parsed augmentation ops, or None).
    The draws are keyed by (seed, epoch, the rows): the same whichever worker makes it."""
    batch = samples.batch(rows)
    if not ops:
        return batch
    rng = np.random.default_rng([seed, epoch, *(int(i) for i in rows)])
    return augment_batch(batch, ops, rng, train)


def worker_rows(rows: np.ndarray, part: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Worker `part[0]` of `part[1]`'s contiguous share of one global batch's rows (Keras on
    several machines: keras_cluster). A batch with fewer rows than workers is padded by
    repeating its rows, as torch's DistributedSampler pads, so that no worker is empty."""
    index, count = part
    if count == 1:
        return rows
    if len(rows) < count:
        rows = np.resize(rows, count)
    return np.array_split(rows, count)[index]


def batch_order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The epoch's order of rows for one process (the Keras loader)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def plain_batches(
    samples: Samples,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    ops=None,
    part: tuple[int, int] = (0, 1),
):
    """One epoch of numpy batch dicts decoded in this process, in batch_order (`part`:
    this worker's share of each, worker_rows)."""
    order = batch_order(len(samples), train, seed, epoch)
    for start in range(0, len(order), batch_size):
        rows = worker_rows(order[start : start + batch_size], part)
        yield prepare(samples, rows, ops, seed, epoch, train)


# --- keras ---------------------------------------------------------------------------------
def keras_batches(
    samples: Samples,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    ops=None,
    workers: int | None = None,
    part: tuple[int, int] = (0, 1),
):
    """One epoch of numpy batch dicts for Keras, made on tf.data's threads and prefetched.
    A folder of JPEG and PNG files is decoded by TF's own ops, `workers` files at a time
    (tf_images.py: Pillow under the GIL ran at 0.44 of tf.data; the pixels agree with
    Pillow's to one grey level); other sources run `prepare` for `workers` batches at a
    time. With no workers, batches are made by Pillow in this thread. `part`: (this worker,
    workers) on several machines: each decodes only its share of every batch (worker_rows),
    through `prepare`. (keras.utils.PyDataset's process workers were measured 2x slower
    than no workers at all here: every batch is pickled through a pipe;
    bench/data_pipeline.py.)"""
    workers = default_workers(samples) if workers is None else int(workers)
    if workers == 0:
        yield from plain_batches(
            samples, batch_size, train=train, seed=seed, epoch=epoch, ops=ops, part=part
        )
        return
    order = batch_order(len(samples), train, seed, epoch)
    if part[1] == 1 and tf_images.decodable(samples):  # its batches are whole global ones
        yield from tf_images.batches(
            samples,
            order,
            batch_size,
            ops=ops,
            seed=seed,
            epoch=epoch,
            train=train,
            workers=workers,
            pillow=lambda rows: prepare(samples, rows, ops, seed, epoch, train),
        )
        return
    import tensorflow as tf

    probe = prepare(samples, order[:1], ops, seed, epoch, train)
    keys = list(probe)
    dtypes = [tf.as_dtype(probe[k].dtype) for k in keys]

    failed: list[DataError] = []  # tf would re-raise one as text with its traceback

    def make(b) -> list[np.ndarray]:
        rows = worker_rows(order[int(b) * batch_size : (int(b) + 1) * batch_size], part)
        try:
            batch = prepare(samples, rows, ops, seed, epoch, train)
        except DataError as exc:
            failed.append(exc)
            batch = probe
        return [batch[k] for k in keys]

    count = math.ceil(len(order) / batch_size)
    stream = (
        tf.data.Dataset.range(count)
        .map(
            lambda b: tf.numpy_function(make, [b], dtypes),
            num_parallel_calls=workers,
            deterministic=True,
        )
        .prefetch(2)
    )
    for values in stream.as_numpy_iterator():
        if failed:
            raise failed[0]
        yield dict(zip(keys, values))
