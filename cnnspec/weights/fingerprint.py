"""A spec's fingerprint, carried by the weights files cnnspec writes, checked when they load.

The fingerprint hashes the canonical IR of the network: every node's name, kind, arguments,
inputs and output shape. The file name, the model name, comments, layout of the text, the
compile and transfer sections are left out: they do not change which weights fit. So a
weights file is refused by a spec whose network differs, and accepted by a copy of its spec.

    safetensors   metadata {"cnnspec.fingerprint": ...}
    .weights.h5   the root attribute "cnnspec.fingerprint" (Keras 3 reads only the groups)

Files without one (torchvision, keras.applications, older runs) still load where the
shapes fit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

KEY = "cnnspec.fingerprint"


class ForeignWeights(ValueError):
    """Weights written for another network."""


def fingerprint(model) -> str:
    """sha256 (first 16 hex digits) of the network's canonical IR."""
    nodes = [
        {
            "name": n.name,
            "layer": n.layer.model_dump(mode="json"),
            "inputs": list(n.inputs),
            "shape": list(n.shape),
        }
        for n in model.nodes
    ]
    text = json.dumps(
        {"nodes": nodes, "outputs": list(model.outputs)}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def metadata(model) -> dict[str, str]:
    """The metadata a safetensors file of this network carries."""
    return {KEY: fingerprint(model)}


def read(path) -> str | None:
    """The fingerprint a weights file carries, or None (none, or not a file cnnspec reads
    metadata from). Reading it never unpickles anything."""
    return read_value(path, KEY)


def read_value(path, key: str) -> str | None:
    """The metadata entry `key` of a weights file (safetensors metadata, or a root attribute
    of a .weights.h5 file), or None."""
    path = Path(path)
    try:
        if path.name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as fh:
                return (fh.metadata() or {}).get(key)
        if path.name.endswith((".h5", ".hdf5")):
            import h5py

            with h5py.File(path, "r") as h5:
                value = h5.attrs.get(key)
            return value.decode() if isinstance(value, bytes) else value
    except Exception:  # noqa: BLE001 - unreadable: the loader that reads it says why
        return None
    return None


def stamp_h5(path, model, notes: dict[str, str] | None = None) -> None:
    """Write the network's fingerprint (and `notes`, more metadata entries) into a Keras
    .weights.h5 file (callers pass the temporary file, before it is renamed into place)."""
    import h5py

    with h5py.File(path, "a") as h5:
        h5.attrs[KEY] = fingerprint(model)
        for key, value in (notes or {}).items():
            h5.attrs[key] = value


def check(path, model, label: str | None = None) -> None:
    """Raise ForeignWeights when the file carries another network's fingerprint."""
    found = read(path)
    if found is None or found == fingerprint(model):
        return
    spec = model.source or model.name or "the spec"
    raise ForeignWeights(
        f"{label or path} was written for another network (fingerprint "
        f"{found}) than {spec} (fingerprint {fingerprint(model)}); give the "
        "weights of this spec, or the spec those weights were trained with"
    )
