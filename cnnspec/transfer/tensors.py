"""Read a weights file into framework-neutral layers: numpy arrays in PyTorch's layout.

One layout for every source keeps the matching simple; Keras arrays are turned round once
here and back again when loading into Keras:
    conv kernel      Keras (kh, kw, in, out)   -> torch (out, in, kh, kw)
    deconv kernel    Keras (kh, kw, out, in)   -> torch (in, out, kh, kw)   (same transpose)
    depthwise        Keras (kh, kw, in, mult)  -> torch (in*mult, 1, kh, kw)
    dense kernel     Keras (in, out)           -> torch (out, in)
    batch norm       gamma, beta, moving_mean, moving_variance -> weight, bias, running_mean,
                     running_var
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SpecError
from .sources import Source

KERAS_ROLES = {"kernel": "weight", "depthwise_kernel": "weight", "gamma": "weight",
               "beta": "bias", "bias": "bias", "moving_mean": "running_mean",
               "moving_variance": "running_var"}
TORCH_SKIP = ("num_batches_tracked",)
# Keras class (snake case, as Keras 3 names the groups of a .weights.h5) -> cnnspec kind
KERAS_KINDS = {"conv2d": "conv", "dense": "dense", "batch_normalization": "bn",
               "depthwise_conv2d": "dwconv", "conv2d_transpose": "deconv",
               "separable_conv2d": "sepconv"}


@dataclass
class SourceLayer:
    name: str
    tensors: dict[str, np.ndarray]        # role (torch suffix) -> array in torch layout
    kind: str | None = None               # cnnspec kind when the file says (Keras classes)


@dataclass
class SourceWeights:
    source: Source
    layers: list[SourceLayer] = field(default_factory=list)
    framework: str = "torch"              # who wrote the file: "torch" or "keras"
    # Keras 3 files name groups after classes (conv2d, conv2d_1, ...): the order holds within
    # a kind, not across kinds, so matching pairs them per kind.
    by_kind: bool = False

    def count(self) -> int:
        return sum(len(layer.tensors) for layer in self.layers)


def read(source: Source, span=None) -> SourceWeights:
    path = source.path
    name = path.name
    try:
        if name.endswith((".pt", ".pth", ".bin")):
            return _torch_layers(source, _torch_load(path))
        if name.endswith(".safetensors"):
            from safetensors.numpy import load_file
            return _named_layers(source, load_file(str(path)))
        if name.endswith(".keras"):
            with zipfile.ZipFile(path) as zf, zf.open("model.weights.h5") as fh:
                return _h5_layers(source, fh)
        return _h5_layers(source, str(path))
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: say so, no traceback
        raise SpecError("E412", f"cannot read weights from {path}: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}", span,
                        hint="torch files are read with torch.load(weights_only=True); "
                        "Keras files must be .keras, .weights.h5 or keras.applications .h5"
                        ) from None


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


def _torch_layers(source: Source, flat: dict) -> SourceWeights:
    """Group 'a.b.weight' style keys by module path, keeping the file's order."""
    layers: dict[str, SourceLayer] = {}
    for key, value in flat.items():
        prefix, _, role = key.rpartition(".")
        if role in TORCH_SKIP:
            continue
        layers.setdefault(prefix, SourceLayer(prefix, {})).tensors[role] = np.asarray(value)
    return SourceWeights(source, list(layers.values()), "torch")


def _named_layers(source: Source, flat: dict) -> SourceWeights:
    """safetensors: torch names ('x.weight') or Keras ones ('x/kernel', 'x.kernel')."""
    keras_style = any(re.search(r"[./](kernel|gamma|moving_mean|depthwise_kernel)$", k)
                      for k in flat)
    if not keras_style:
        return _torch_layers(source, flat)
    layers: dict[str, SourceLayer] = {}
    for key, value in flat.items():
        prefix, role = re.split(r"[./](?=[^./]+$)", key) if re.search(r"[./]", key) else \
            ("", key)
        layer = layers.setdefault(prefix, SourceLayer(prefix, {}))
        _add_keras(layer, role, np.asarray(value))
    return SourceWeights(source, list(layers.values()), "keras")


def _add_keras(layer: SourceLayer, role: str, value: np.ndarray) -> None:
    layer.tensors[KERAS_ROLES.get(role, role)] = keras_to_torch(role, value)
    if role == "depthwise_kernel":
        layer.kind = "dwconv"
    elif role in ("gamma", "moving_mean"):
        layer.kind = "bn"


def keras_to_torch(role: str, value: np.ndarray) -> np.ndarray:
    if role == "depthwise_kernel":
        kh, kw, cin, mult = value.shape
        return np.ascontiguousarray(value.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw))
    if role == "kernel" and value.ndim == 4:
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    if role == "kernel" and value.ndim == 2:
        return np.ascontiguousarray(value.T)
    return value


def torch_to_keras(role: str, value: np.ndarray, in_channels: int | None = None) -> np.ndarray:
    """The inverse of keras_to_torch, for a Keras variable called `role`."""
    if role == "depthwise_kernel":      # torch (in*mult, 1, kh, kw) -> Keras (kh, kw, in, mult)
        cm, _, kh, kw = value.shape
        cin = in_channels or cm
        return np.ascontiguousarray(value.reshape(cin, cm // cin, kh, kw).transpose(2, 3, 0, 1))
    if role == "kernel" and value.ndim == 4:
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if role == "kernel" and value.ndim == 2:
        return np.ascontiguousarray(value.T)
    return value


def _h5_layers(source: Source, file) -> SourceWeights:
    import h5py
    with h5py.File(file, "r") as h5:
        if "layer_names" in h5.attrs:                 # Keras 2 / keras.applications files
            return _legacy_h5(source, h5)
        if "layers" in h5:                            # Keras 3 .weights.h5 / inside .keras
            return _keras3_h5(source, h5["layers"])
    raise ValueError("no Keras weights in this HDF5 file (no 'layer_names', no 'layers')")


def _legacy_h5(source: Source, h5) -> SourceWeights:
    layers = []
    for raw in h5.attrs["layer_names"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        group = h5[name]
        names = [w.decode() if isinstance(w, bytes) else str(w)
                 for w in group.attrs.get("weight_names", [])]
        if not names:
            continue
        layer = SourceLayer(name, {})
        for wname in names:
            role = wname.rsplit("/", 1)[-1].split(":")[0]
            _add_keras(layer, role, np.asarray(group[wname]))
        layers.append(layer)
    return SourceWeights(source, layers, "keras")


def _keras3_h5(source: Source, root) -> SourceWeights:
    layers = []
    for gname in sorted(root.keys(), key=_natural):
        group = root[gname]
        if "vars" not in group or not len(group["vars"]):
            continue
        values = [np.asarray(group["vars"][str(i)]) for i in range(len(group["vars"]))]
        base = re.sub(r"_\d+$", "", gname)
        kind = KERAS_KINDS.get(base)
        layer = SourceLayer(gname, {}, kind)
        for role, value in zip(_keras3_roles(kind, values), values):
            _add_keras(layer, role, value)
        layer.kind = kind
        layers.append(layer)
    return SourceWeights(source, layers, "keras", by_kind=True)


def _keras3_roles(kind: str | None, values: list[np.ndarray]) -> list[str]:
    """Keras 3 stores variables as vars/0, vars/1 ...; their order is the layer's build order."""
    if kind == "bn" and len(values) == 4:
        return ["gamma", "beta", "moving_mean", "moving_variance"]
    if kind == "dwconv":
        return ["depthwise_kernel", "bias"][:len(values)]
    roles = []
    for v in values:
        roles.append("kernel" if v.ndim >= 2 and "kernel" not in roles else
                     "bias" if "bias" not in roles else f"var{len(roles)}")
    return roles


def _natural(name: str):
    """conv2d, conv2d_1, conv2d_2, ..., conv2d_10: the order Keras created them in."""
    match = re.match(r"(.*?)(?:_(\d+))?$", name)
    return (match.group(1), int(match.group(2) or 0))
