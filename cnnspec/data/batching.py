"""Deterministic mini-batches for training loops in any framework."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from cnnspec.data import DataError
from cnnspec.data.augmentation import augment_batch, parse_ops
from cnnspec.data.dataset import Dataset


def batches(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    ops=None,
    train: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield dicts with "x", "y", "present", "index" (rows of `dataset`) and, when the
    dataset has them, "boxes" and "masks".

    The order depends only on (seed, epoch), so a resumed run sees the same batches.
    `ops` are augmentations (see augment_batch); a bare "normalize" is fitted to this
    dataset, so for validation pass ops parsed from the training images with
    train=False.
    """
    if int(batch_size) < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    order = _order(len(dataset), shuffle, seed, epoch)
    # Its own stream, so turning augmentation on does not change the batch order.
    rng = np.random.default_rng([seed, epoch, 1])
    ops = parse_ops(ops, dataset.x, classes=len(dataset.classes)) if ops else []
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        if drop_last and len(index) < batch_size:
            return
        batch = _gather(dataset, index)
        yield augment_batch(batch, ops, rng, train) if ops else batch


def _order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def _gather(dataset: Dataset, index: np.ndarray) -> dict[str, np.ndarray]:
    batch = {
        "x": dataset.x[index],
        "y": dataset.y[index],
        "present": dataset.present[index],
        "index": index,
    }
    if dataset.boxes is not None:
        batch["boxes"] = dataset.boxes[index]
    if dataset.masks is not None:
        batch["masks"] = dataset.masks[index]
    return batch
