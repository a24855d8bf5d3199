"""Weights between the PyTorch and Keras backends, mapped by the IR's node names.

A node's weights live in the torch module at the node's attribute path (the torch backend's
plan: `layer1.conv1` -> `layer1.conv1.weight`) and in the Keras layer named after the node
(`layer1_conv1`). Which tensors each kind holds and how their layouts differ is written once,
in cnnspec.weights.layouts; this module walks the network with it.

Also: loading keras.applications weights into a cnnspec Keras model, by graph position.
numpy only at import; torch and keras are imported where they are needed.
"""

from __future__ import annotations

import os

import numpy as np

from .ir import Model
from .weights import fingerprint
from .weights.layouts import LayoutError, to_keras, to_torch
from .weights.layouts import tensors as layout_of


class ConversionError(LayoutError):
    """Weights that do not fit: names the node, the tensor and the shapes."""


def _layout(node):
    try:
        return layout_of(node)
    except LayoutError as exc:
        raise ConversionError(str(exc)) from None


def torch_paths(model: Model) -> dict[str, str]:
    """Node name -> the torch module's attribute path (state_dict key prefix)."""
    from .backends.torch import module_paths

    return module_paths(model)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def torch_to_keras(model: Model, state_dict) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> its weights (get_weights() order), from a torch state_dict."""
    from .backends.keras import keras_names

    paths, names = torch_paths(model), keras_names(model)
    out, used = {}, set()
    for node in model.nodes:
        arrays = []
        for t in _layout(node):
            key = f"{paths[node.name]}.{t.torch}"
            if key not in state_dict:
                raise ConversionError(f"{node.name}: the torch weights have no {key!r}")
            arrays.append(to_keras(t, _numpy(state_dict[key])))
            used.add(key)
        if arrays:
            out[names[node.name]] = arrays
    extra = [k for k in state_dict if k not in used and not k.endswith("num_batches_tracked")]
    if extra:
        raise ConversionError(f"torch weights not in the spec: {', '.join(extra[:5])}")
    return out


def keras_to_torch(model: Model, weights: dict[str, list]) -> dict[str, np.ndarray]:
    """A torch state_dict (numpy arrays) from Keras layer name -> get_weights() lists."""
    from .backends.keras import keras_names

    paths, names = torch_paths(model), keras_names(model)
    out = {}
    for node in model.nodes:
        entries = _layout(node)
        if not entries:
            continue
        arrays = weights.get(names[node.name])
        if arrays is None or len(arrays) != len(entries):
            raise ConversionError(
                f"{node.name}: expected {len(entries)} Keras weights in "
                f"layer {names[node.name]!r}, got "
                f"{'none' if arrays is None else len(arrays)}"
            )
        for t, value in zip(entries, arrays):
            out[f"{paths[node.name]}.{t.torch}"] = to_torch(t, _numpy(value))
        if node.kind == "bn":
            out[f"{paths[node.name]}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    return out


def keras_weights(kmodel, model: Model) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> get_weights(), for the nodes that have weights."""
    from .backends.keras import keras_names

    names = keras_names(model)
    return {
        names[n.name]: kmodel.get_layer(names[n.name]).get_weights()
        for n in model.nodes
        if n.params
    }


def set_keras_weights(kmodel, weights: dict[str, list]) -> None:
    """Put weights (layer name -> list) into a Keras model, checking every shape."""
    for name, arrays in weights.items():
        layer = kmodel.get_layer(name)
        for var, value in zip(layer.weights, arrays, strict=True):
            if tuple(var.shape) != tuple(np.shape(value)):
                raise ConversionError(
                    f"{name}: {var.path} is {tuple(var.shape)}, the weights "
                    f"give {tuple(np.shape(value))}"
                )
        layer.set_weights(list(arrays))


def save_keras_weights(net, model, path: str, notes: dict[str, str] | None = None) -> None:
    """model.save_weights, plus the spec's fingerprint (and `notes`: the training's input
    normalisation) as root attributes of the HDF5 file (Keras 3 reads only its groups, so
    the attributes do not disturb it)."""
    net.save_weights(path)
    fingerprint.stamp_h5(path, model, notes)


def load_keras_weights(net, model, path: str) -> None:
    """Keras weights into `net`: refused with a ValueError naming the file when it is not a
    .weights.h5 file, is missing or unreadable, or was written for another spec."""
    if not str(path).endswith(".weights.h5"):
        raise ValueError(
            f"{path}: Keras weights are .weights.h5 files (as 'cnnspec train "
            "--backend keras' writes them)"
        )
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    fingerprint.check(path, model)  # ForeignWeights: a ValueError naming both
    try:
        net.load_weights(path)
    except Exception as exc:  # noqa: BLE001 - a corrupt or mismatched file: say so, no traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(
            f"{path}: cannot load these weights into '{model.name}' ({first[:300]})"
        ) from None


def load_torch_into_keras(kmodel, model: Model, state_dict) -> None:
    set_keras_weights(kmodel, torch_to_keras(model, state_dict))


def load_keras_into_torch(module, model: Model, kmodel_or_weights) -> None:
    import torch

    weights = (
        kmodel_or_weights
        if isinstance(kmodel_or_weights, dict)
        else keras_weights(kmodel_or_weights, model)
    )
    state = {k: torch.from_numpy(v) for k, v in keras_to_torch(model, weights).items()}
    module.load_state_dict(state, strict=True)


# --- keras.applications weights ------------------------------------------------------------


def _graph_signatures(kmodel) -> list[tuple[object, int]]:
    """(layer, signature) for the layers with weights, in the model's order. A signature hashes
    the layer's weight shapes with the signatures of what feeds it, so two models of one
    architecture give their corresponding layers equal signatures, whatever the layer names,
    the order of branches or the weightless layers (activations, padding) between them."""
    import keras

    sig: dict[int, int] = {}
    out = []
    for layer in kmodel.operations:  # `x + 3.0` is an operation, not a layer
        inputs = []
        for node in layer._inbound_nodes[:1]:
            inputs = [sig[id(t._keras_history.operation)] for t in node.input_tensors]
        # a nested Sequential (keras.applications' ConvNeXt stem) is the chain of its layers,
        # as a spec imported from it writes them
        chain = layer.layers if isinstance(layer, keras.Sequential) else [layer]
        for part in chain:
            own = tuple(tuple(w.shape) for w in getattr(part, "weights", ()))
            if own or len(inputs) != 1:
                inputs = [hash((own, tuple(sorted(inputs))))]
            if own:
                out.append((part, inputs[0]))
        sig[id(layer)] = inputs[0] if len(inputs) == 1 else hash(((), tuple(sorted(inputs))))
    return out


def load_keras_applications_weights(kmodel, model: Model, source) -> int:
    """Copy the weights of a keras.applications model (or a saved Keras model file) into the
    cnnspec Keras model `kmodel` built from `model`. Layers are matched by their place in the
    graph (weight shapes plus what feeds them), then by order among equals; every weight of
    both models must be used. Returns the number of layers copied. For a weights-only .h5 of
    keras.applications, build the application with `weights=path` and pass the model."""
    import keras

    if isinstance(source, str) or hasattr(source, "__fspath__"):
        source = keras.saving.load_model(source, compile=False)
    pool: dict[int, list] = {}
    for layer, s in _graph_signatures(source):
        pool.setdefault(s, []).append(layer)
    pairs = []
    for layer, s in _graph_signatures(kmodel):
        if not pool.get(s):
            shapes = [tuple(w.shape) for w in layer.weights]
            raise ConversionError(
                f"layer {layer.name!r} has no counterpart in "
                f"{source.name!r} (weight shapes {shapes})"
            )
        pairs.append((layer, pool[s].pop(0)))
    left = [la.name for group in pool.values() for la in group]
    if left:
        raise ConversionError(
            f"{source.name!r} layers with no counterpart in {model.name!r}: {', '.join(left[:5])}"
        )
    for ours, theirs in pairs:
        ours.set_weights(theirs.get_weights())
    return len(pairs)
