"""The torch loader of Samples: torch.utils.data.DataLoader with a DistributedSampler."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.utils.data as tud

from cnnspec.data import DataError
from cnnspec.data.loading import default_workers, prepare
from cnnspec.data.samples import Samples


def torch_loader(
    samples: Samples,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    ops=None,
    workers: int | None = None,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
    drop_last: bool = False,
):
    """A DataLoader of batch dicts over `samples` (numpy; CPU tensors when workers make
    them or memory is pinned). Call `set_epoch(loader, epoch)`
    before each pass. Under `world` processes each rank gets `batch_size // world` rows
    of every global batch from torch's DistributedSampler, which strides one permutation
    (seeded by seed + epoch) over the ranks: the ranks' batches together are the one-process
    batch of the same global size."""
    workers = default_workers(samples) if workers is None else int(workers)
    if world > 1 and batch_size % world:
        raise DataError(
            f"batch_size {batch_size} does not split over {world} processes",
            hint="use a batch size that is a multiple of the process count",
        )
    sampler = tud.DistributedSampler(
        range(len(samples)),
        num_replicas=world,
        rank=rank,
        shuffle=train,
        seed=seed,
        drop_last=False,
    )
    batches = _EpochBatches(sampler, max(1, batch_size // world), drop_last)
    return _Loader(
        _TorchSamples(samples, ops, seed, train),
        batch_sampler=batches,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        collate_fn=_as_tensors if pin_memory or workers > 0 else _as_is,
    )


def set_epoch(loader, epoch: int) -> None:
    loader.batch_sampler.set_epoch(epoch)


@dataclass(frozen=True)
class _Failed:
    """A DataError met in a worker, sent back as the batch: torch would re-raise it as text
    holding the worker's traceback, and the user is owed the message and its hint."""

    message: str
    hint: str | None


class _Loader(tud.DataLoader):
    """torch's DataLoader, with a worker's DataError or death turned into a DataError, and
    one set of worker processes alive at a time: a pass of this loader ends the persistent
    workers of the loader used before (the training set's while the validation set is
    read, and back). Each forked worker counts, in its RSS, every page the trainer held
    when it forked (torch alone: about 300 MiB of heap); two sets of 4 took the process
    tree of `cnnspec train` to 4.3-4.7 GiB (bench/data_pipeline.py). Starting 4 forked
    workers again delays a pass's first batch by about 0.35 s (load 6). forkserver or spawn
    would not help: each worker imports torch afresh (15 s to the first batch of 4 at load
    8) and holds its own copy of torch's heap (summed RSS 2.7 GiB against fork's 1.9, PSS
    1.7 against 0.5)."""

    _live: weakref.ref | None = None  # the loader whose persistent workers are running

    def __iter__(self):
        if self.num_workers > 0:
            _end_other_workers(self)
        batches = super().__iter__()
        try:
            for batch in batches:
                if isinstance(batch, _Failed):
                    _stop(batches)
                    raise DataError(batch.message, batch.hint)
                yield batch
        except (RuntimeError, ConnectionError, EOFError) as exc:
            if isinstance(exc, RuntimeError) and "DataLoader worker" not in str(exc):
                raise
            _stop(batches)
            # killed (out of memory, kill -9) or crashed in a library: the finished epochs
            # are saved, so the run can go on from them. A worker that dies while a batch's
            # shared memory is being handed over shows as a reset connection instead of
            # torch's RuntimeError, depending on when it died.
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise DataError(
                f"a decoding worker died: {first}",
                hint="continue with --resume; if memory ran out, use fewer "
                "--workers or --cache none",
            ) from None


def _end_other_workers(loader: _Loader) -> None:
    previous = _Loader._live() if _Loader._live is not None else None
    if previous is not None and previous is not loader and previous._iterator is not None:
        _stop(previous._iterator)
        previous._iterator = None  # its next pass forks new workers
    _Loader._live = weakref.ref(loader)


def _stop(batches) -> None:
    """End the iterator's workers now: torch watches them with a SIGCHLD handler until they
    are shut down, and a dead one left registered raises later, anywhere in the process.
    (`_shutdown_workers` is what the iterator's own __del__ calls, at an unknown time.)"""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is None:
        return
    try:
        shutdown()
    except (RuntimeError, ConnectionError, EOFError):
        # the dead worker's SIGCHLD can land again while the others are joined; torch has
        # already unregistered the workers (in a `finally`), and the caller is reporting
        # that death itself.
        pass


def _as_is(batch: dict) -> dict:
    return batch  # _TorchSamples.__getitems__ made the whole batch


def _as_tensors(batch: dict) -> dict:
    # From a worker, tensors travel through shared memory where numpy arrays would be
    # pickled through a pipe; and pin_memory pins tensors only.
    if isinstance(batch, _Failed):
        return batch
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in batch.items()}


class _TorchSamples(tud.Dataset):
    """The map-style torch Dataset: keys are (epoch, row), so workers that persist across
    epochs still draw each epoch's augmentation."""

    def __init__(self, samples: Samples, ops, seed: int, train: bool):
        self.samples, self.ops, self.seed, self.train = samples, ops, seed, train

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key) -> dict:
        return {k: v[0] for k, v in self.__getitems__([key]).items()}

    def __getitems__(self, keys: list) -> dict:
        """A whole batch (torch's fetcher calls this with the batch's keys)."""
        epoch = keys[0][0]
        rows = np.array([i for _, i in keys], dtype=np.int64)
        try:
            return prepare(self.samples, rows, self.ops, self.seed, epoch, self.train)
        except DataError as exc:
            return _Failed(exc.message, exc.hint)


class _EpochBatches(tud.Sampler):
    """torch's BatchSampler over a DistributedSampler, each index tagged with the epoch."""

    def __init__(self, sampler, batch_size: int, drop_last: bool):
        self.sampler, self.epoch = sampler, 0
        self.batches = tud.BatchSampler(sampler, batch_size, drop_last)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        for batch in self.batches:
            yield [(self.epoch, i) for i in batch]

    def __len__(self) -> int:
        return len(self.batches)
