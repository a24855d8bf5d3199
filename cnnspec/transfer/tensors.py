"""Read a weights file into framework-neutral layers: numpy arrays in PyTorch's layout.

One layout for every source keeps the matching simple: Keras arrays are turned round once
here (cnnspec.weights.layouts says how, per kind) and back again when loading into Keras.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from ..errors import SpecError
from ..weights import fingerprint as fp
from ..weights.layouts import KERAS_KINDS, LAYOUTS, keras_order, keras_tensor, to_torch
from ..weights.matching import SourceLayer, SourceWeights
from .sources import Source

TORCH_SKIP = ("num_batches_tracked",)


def read(source: Source, span=None) -> SourceWeights:
    path = source.path
    name = path.name
    try:
        weights = _read(source, path, name)
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: say so, no traceback
        raise SpecError(
            "E412",
            f"cannot read weights from {path}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}",
            span,
            hint="torch files are read with torch.load(weights_only=True); "
            "Keras files must be .keras, .weights.h5 or keras.applications .h5",
        ) from None
    weights.label, weights.fingerprint = source.text, fp.read(path)
    # A torch model flattens its maps C, H, W, unless cnnspec wrote the file (a run folder,
    # or a file carrying a spec's fingerprint): then H, W, C, as the spec says.
    foreign_torch = (
        weights.framework == "torch" and source.origin != "run" and weights.fingerprint is None
    )
    weights.flatten = "chw" if foreign_torch else source.flatten
    return weights


def _read(source: Source, path: Path, name: str) -> SourceWeights:
    if name.endswith((".pt", ".pth", ".bin")):
        return torch_layers(source.text, _torch_load(path))
    if name.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return _named_layers(source.text, load_file(str(path)))
    if name.endswith(".keras"):
        with zipfile.ZipFile(path) as zf, zf.open("model.weights.h5") as fh:
            return _h5_layers(source.text, fh)
    return _h5_layers(source.text, str(path))


def _torch_load(path: Path) -> dict:
    import torch

    data = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict):
        raise TypeError(f"expected a state_dict, found {type(data).__name__}")
    return {k: v.detach().cpu().numpy() for k, v in data.items() if hasattr(v, "numpy")}


def torch_layers(label: str, flat: dict, skip=TORCH_SKIP) -> SourceWeights:
    """Group 'a.b.weight' style keys by the module that owns them, keeping the file's order
    (torch's registration order)."""
    layers: dict[str, SourceLayer] = {}
    for key, value in flat.items():
        prefix, _, role = key.rpartition(".")
        if role in skip:
            continue
        layers.setdefault(prefix, SourceLayer(prefix, {})).tensors[role] = value
    return SourceWeights(label, list(layers.values()), "torch")


def _named_layers(label: str, flat: dict) -> SourceWeights:
    """safetensors: torch names ('x.weight') or Keras ones ('x/kernel', 'x.kernel')."""
    keras_style = any(
        re.search(r"[./](kernel|gamma|moving_mean|depthwise_kernel)$", k) for k in flat
    )
    if not keras_style:
        return torch_layers(label, flat)
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        prefix, role = re.split(r"[./](?=[^./]+$)", key) if re.search(r"[./]", key) else ("", key)
        groups.setdefault(prefix, {})[role] = np.asarray(value)
    return SourceWeights(label, [keras_layer(k, v) for k, v in groups.items()], "keras")


def keras_layer(
    name: str, variables: dict[str, np.ndarray], kind: str | None = None
) -> SourceLayer:
    """A Keras layer's variables (Keras name -> array) as torch-layout tensors."""
    kind = kind or _keras_kind(variables)
    tensors = {}
    for role, value in variables.items():
        t = keras_tensor(kind, role, np.ndim(value))
        tensors[t.torch] = to_torch(t, value)
    return SourceLayer(name, tensors, kind)


def _keras_kind(variables) -> str | None:
    """The cnnspec kind a Keras layer's variable names give away, where they do."""
    if "pointwise_kernel" in variables:
        return "sepconv"
    if "depthwise_kernel" in variables:
        return "dwconv"
    if "gamma" in variables or "moving_mean" in variables:
        return "bn"
    return None


def _h5_layers(label: str, file) -> SourceWeights:
    import h5py

    with h5py.File(file, "r") as h5:
        if "layer_names" in h5.attrs:  # Keras 2 / keras.applications files
            return _legacy_h5(label, h5)
        if "layers" in h5:  # Keras 3 .weights.h5 / inside .keras
            return _keras3_h5(label, h5["layers"])
    raise ValueError("no Keras weights in this HDF5 file (no 'layer_names', no 'layers')")


def _legacy_h5(label: str, h5) -> SourceWeights:
    layers = []
    for raw in h5.attrs["layer_names"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        group = h5[name]
        names = [
            w.decode() if isinstance(w, bytes) else str(w)
            for w in group.attrs.get("weight_names", [])
        ]
        if names:
            layers.append(
                keras_layer(
                    name, {w.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[w]) for w in names}
                )
            )
    return SourceWeights(label, layers, "keras")


def _keras3_h5(label: str, root) -> SourceWeights:
    layers = []
    for gname in sorted(root.keys(), key=_natural):
        group = root[gname]
        if "vars" not in group or not len(group["vars"]):
            continue
        values = [np.asarray(group["vars"][str(i)]) for i in range(len(group["vars"]))]
        kind = KERAS_KINDS.get(re.sub(r"_\d+$", "", gname))
        layers.append(keras_layer(gname, dict(zip(_keras3_roles(kind, values), values)), kind))
    return SourceWeights(label, layers, "keras", by_kind=True)


def _keras3_roles(kind: str | None, values: list[np.ndarray]) -> list[str]:
    """Keras 3 stores variables as vars/0, vars/1 ...; their order is the layer's build order,
    the order of the kind's layout (a bn without scale or center drops from the front)."""
    if kind in LAYOUTS:
        names = keras_order(kind)
        return names[len(names) - len(values) :] if kind == "bn" else names[: len(values)]
    return ["kernel" if v.ndim >= 2 else "bias" for v in values]


def _natural(name: str):
    """conv2d, conv2d_1, conv2d_2, ..., conv2d_10: the order Keras created them in."""
    match = re.match(r"(.*?)(?:_(\d+))?$", name)
    return (match.group(1), int(match.group(2) or 0))
