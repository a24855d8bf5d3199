"""What the network reads: the pixels a spec's input expects, for training, evaluate and predict.

The data package hands over images in [0, 1]. A spec that declares its input preprocessing
(`input 28x28x1 scale=1/255 mean=0.13 std=0.31`, cnnspec/layers/preprocess.py) standardises
inside the network and reads the pixel values 0..255, so the trainer feeds those and leaves
out the compile section's `normalize` (it would standardise twice). A spec that does not
declare it reads [0, 1] images, standardised by a bare `normalize` fitted to the training
data; that normalisation travels in the weights file (cnnspec/weights/normalization.py), so
predict and evaluate read it there, not from the run folder beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..ir import Model
from ..layers.preprocess import preprocessing
from ..weights import normalization

# [0, 1] -> 0..255, as a data-pipeline op (x - 0) / (1/255): the loaders of both backends
# and evaluation already run `normalize MEAN STD`
TO_PIXELS = f"normalize 0 {1 / 255!r}"


def declares(model: Model) -> bool:
    """Whether the spec standardises its input itself."""
    return preprocessing(model) is not None


def augment_words(model: Model, words: list[str], log=None) -> list[str]:
    """The compile section's augmentation for this spec: unchanged without declared
    preprocessing; with it, `normalize` left out and the images scaled to 0..255 last
    (after the ops that work on [0, 1], as torchvision's colour ops do)."""
    if not declares(model):
        return list(words)
    from .driver import augment_ops

    ops = augment_ops(list(words))
    kept = [op for op in ops if op.split()[0] not in ("normalize", "normalise")]
    if len(kept) < len(ops) and log is not None:
        log("augment normalize left out: the spec's input line standardises the pixels")
    return [*kept, TO_PIXELS]


def weights_normalization(weights: str) -> dict | None:
    """The normalisation the weights were trained with: from the weights file, or for a file
    that does not say (older runs, converted weights), from result.json beside it."""
    found = normalization.read(weights)
    if found is not normalization.ABSENT:
        return found
    return run_info(weights).get("normalize")


def to_network(model: Model, x: np.ndarray, weights: str) -> np.ndarray:
    """[0, 1] images (predict's) as the network reads them."""
    if declares(model):
        return (x * np.float32(255)).astype(np.float32)
    norm = weights_normalization(weights)
    if not norm:
        return x
    mean, std = (np.asarray(norm[k], np.float32) for k in ("mean", "std"))
    return ((x - mean) / std).astype(np.float32)


def eval_words(model: Model, words: list[str], weights: str) -> list[str] | None:
    """evaluate's data ops for these weights: the pixel scaling of a declaring spec, the
    weights file's normalisation, or None when the file does not say (the caller then fits
    `normalize` to the training split as training did)."""
    if declares(model):
        return [TO_PIXELS]
    found = normalization.read(weights)
    if found is normalization.ABSENT:
        return None
    if found is None:
        return []
    return [f"normalize {_list(found['mean'])} {_list(found['std'])}"]


def _list(values) -> str:
    return ",".join(repr(float(v)) for v in values)


def run_info(weights: str) -> dict:
    """result.json (or checkpoint.json) of the run the weights come from, or {}."""
    for name in ("result.json", "checkpoint.json"):
        path = Path(weights).parent / name
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                return {}
    return {}
