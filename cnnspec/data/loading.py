"""Batches from Samples, decoded and augmented in worker processes by the frameworks' own
loaders: torch.utils.data.DataLoader (torch_loader.py, with a DistributedSampler, so each
rank of a torchrun group reads its own shard) and keras.utils.PyDataset (here; workers
through Keras' own enqueuer). Both yield the numpy batch dicts the training backends take.

Randomness is keyed by (seed, epoch, row), never by worker or rank: a sample is augmented
alike whatever the number of workers or processes, and a resumed run repeats its epochs.
Frameworks are imported only by the functions that need them.
"""

from __future__ import annotations

import math
import os

import numpy as np

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


def batch_order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The epoch's order of rows for one process (the Keras loader)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def plain_batches(samples: Samples, batch_size: int, *, train: bool, seed: int = 0,
                  epoch: int = 0, ops=None):
    """One epoch of numpy batch dicts decoded in this process, in batch_order."""
    order = batch_order(len(samples), train, seed, epoch)
    for start in range(0, len(order), batch_size):
        yield prepare(samples, order[start:start + batch_size], ops, seed, epoch, train)


# --- keras ---------------------------------------------------------------------------------
def keras_batches(samples: Samples, batch_size: int, *, train: bool, seed: int = 0,
                  epoch: int = 0, ops=None, workers: int | None = None):
    """One epoch of numpy batch dicts from a keras.utils.PyDataset decoded by `workers`
    processes (Keras' enqueuer; none: in this process)."""
    import keras

    workers = default_workers(samples) if workers is None else int(workers)
    order = batch_order(len(samples), train, seed, epoch)

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=max(workers, 1), use_multiprocessing=workers > 0)

        def __len__(self) -> int:
            return math.ceil(len(order) / batch_size)

        def __getitem__(self, b: int) -> dict:
            return prepare(samples, order[b * batch_size:(b + 1) * batch_size], ops, seed,
                           epoch, train)

    if workers == 0:
        yield from plain_batches(samples, batch_size, train=train, seed=seed, epoch=epoch,
                                 ops=ops)
        return
    dataset = Batches()
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
    adapter = PyDatasetAdapter(dataset, shuffle=False)
    adapter.on_epoch_begin()
    try:
        yield from adapter.get_numpy_iterator()
    finally:
        adapter.on_epoch_end()
