"""The input normalisation a training fitted, carried by the weights file beside the fingerprint.

A spec without declared preprocessing (cnnspec/layers/preprocess.py) trained with a bare
`augment normalize` learns on standardised images; the mean and std come from the training
data, so they travel IN the weights file, where predict and evaluate read them, and a file
copied anywhere predicts as in its run folder:

    safetensors   metadata {"cnnspec.normalize": "{\"mean\": [...], \"std\": [...]}"} or "null"
    .weights.h5   the root attribute "cnnspec.normalize", the same JSON

Files that cnnspec's trainer writes always carry the key ("null": no normalisation). Files
without it (older runs, converted or foreign weights) fall back to the run folder's
result.json, as before.
"""

from __future__ import annotations

import json

from .fingerprint import read_value

KEY = "cnnspec.normalize"
ABSENT = object()  # the file does not say


def entry(norm: dict | None) -> dict[str, str]:
    """The metadata entry for `norm` ({"mean": [...], "std": [...]} or None)."""
    return {KEY: json.dumps(norm)}


def read(path):
    """The normalisation the weights file carries: a dict, None (trained without one), or
    ABSENT (the file does not say, or is not one cnnspec reads metadata from)."""
    text = read_value(path, KEY)
    if text is None:
        return ABSENT
    try:
        value = json.loads(text)
    except ValueError:
        return ABSENT
    if value is None:
        return None
    if not isinstance(value, dict) or not {"mean", "std"} <= set(value):
        return ABSENT
    return {"mean": [float(v) for v in value["mean"]], "std": [float(v) for v in value["std"]]}
