"""Weights between the PyTorch and Keras backends, mapped by the IR's node names.

A node's weights live in the torch module at the node's attribute path (the torch backend's
plan: `layer1.conv1` -> `layer1.conv1.weight`) and in the Keras layer named after the node
(`layer1_conv1`). Layouts differ, each by a fixed transpose:

    conv            torch (out, in/g, kh, kw)      keras (kh, kw, in/g, out)
    depthwise       torch (C*m, 1, kh, kw)         keras (kh, kw, C, m)       (channel c*m + j)
    transposed conv torch (in, out, kh, kw)        keras (kh, kw, out, in)    (no spatial flip:
                    both are the adjoint of the conv with that kernel; tests check numerically)
    separable       torch Sequential(depthwise, pointwise 1x1) -> depthwise_kernel,
                    pointwise_kernel, bias
    dense           torch (out, in)                keras (in, out)   (no permutation after
                    flatten: both backends flatten in H, W, C order, as the spec says)
    batch norm      weight, bias, running_mean, running_var <-> gamma, beta, moving_mean,
                    moving_variance (gamma / beta only where the spec has scale / center)

Also: loading keras.applications weights into a cnnspec Keras model, by graph position.
numpy only at import; torch and keras are imported where they are needed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .ir import Model, Node


class ConversionError(ValueError):
    """Weights that do not fit: names the node, the tensor and the shapes."""


def _same(a):
    return a


def _conv(w):
    return w.transpose(2, 3, 1, 0)


def _conv_back(k):
    return k.transpose(3, 2, 0, 1)


def _dense(w):
    return w.T


def _depthwise(multiplier: int):
    def to_keras(w):
        cm, _, kh, kw = w.shape
        return w.reshape(cm // multiplier, multiplier, kh, kw).transpose(2, 3, 0, 1)
    return to_keras


def _depthwise_back(k):
    kh, kw, c, m = k.shape
    return k.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)


Entry = tuple[str, Callable, Callable]   # torch leaf, torch -> keras, keras -> torch


def _bias(layer, leaf="bias") -> list[Entry]:
    return [(leaf, _same, _same)] if layer.bias else []


# layer kind -> the node's tensors in Keras' get_weights() order
TENSORS: dict[str, Callable[..., list[Entry]]] = {
    "conv": lambda la: [("weight", _conv, _conv_back), *_bias(la)],
    "deconv": lambda la: [("weight", _conv, _conv_back), *_bias(la)],
    "dwconv": lambda la: [("weight", _depthwise(la.multiplier), _depthwise_back), *_bias(la)],
    "sepconv": lambda la: [("0.weight", _depthwise(la.multiplier), _depthwise_back),
                           ("1.weight", _conv, _conv_back), *_bias(la, "1.bias")],
    "dense": lambda la: [("weight", _dense, _dense), *_bias(la)],
    "bn": lambda la: [*([("weight", _same, _same)] if la.scale else []),
                      *([("bias", _same, _same)] if la.center else []),
                      ("running_mean", _same, _same), ("running_var", _same, _same)],
}


def _entries(node: Node) -> list[Entry]:
    if node.params == 0:
        return []
    if node.kind not in TENSORS:
        raise ConversionError(f"{node.name}: no weight mapping for layer kind {node.kind!r}")
    return TENSORS[node.kind](node.layer)


def torch_paths(model: Model) -> dict[str, str]:
    """Node name -> the torch module's attribute path (state_dict key prefix)."""
    from .backends.torch import plan
    return {s.node: ".".join(s.attr) for s in plan(model).steps if s.attr is not None}


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
        for leaf, to_keras, _ in _entries(node):
            key = f"{paths[node.name]}.{leaf}"
            if key not in state_dict:
                raise ConversionError(f"{node.name}: the torch weights have no {key!r}")
            arrays.append(np.ascontiguousarray(to_keras(_numpy(state_dict[key]))))
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
        entries = _entries(node)
        if not entries:
            continue
        arrays = weights.get(names[node.name])
        if arrays is None or len(arrays) != len(entries):
            raise ConversionError(f"{node.name}: expected {len(entries)} Keras weights in "
                                  f"layer {names[node.name]!r}, got "
                                  f"{'none' if arrays is None else len(arrays)}")
        for (leaf, _, to_torch), value in zip(entries, arrays):
            out[f"{paths[node.name]}.{leaf}"] = np.ascontiguousarray(to_torch(_numpy(value)))
        if node.kind == "bn":
            out[f"{paths[node.name]}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    return out


def keras_weights(kmodel, model: Model) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> get_weights(), for the nodes that have weights."""
    from .backends.keras import keras_names
    names = keras_names(model)
    return {names[n.name]: kmodel.get_layer(names[n.name]).get_weights()
            for n in model.nodes if n.params}


def set_keras_weights(kmodel, weights: dict[str, list]) -> None:
    """Put weights (layer name -> list) into a Keras model, checking every shape."""
    for name, arrays in weights.items():
        layer = kmodel.get_layer(name)
        for var, value in zip(layer.weights, arrays, strict=True):
            if tuple(var.shape) != tuple(np.shape(value)):
                raise ConversionError(f"{name}: {var.path} is {tuple(var.shape)}, the weights "
                                      f"give {tuple(np.shape(value))}")
        layer.set_weights(list(arrays))


def load_torch_into_keras(kmodel, model: Model, state_dict) -> None:
    set_keras_weights(kmodel, torch_to_keras(model, state_dict))


def load_keras_into_torch(module, model: Model, kmodel_or_weights) -> None:
    import torch
    weights = (kmodel_or_weights if isinstance(kmodel_or_weights, dict)
               else keras_weights(kmodel_or_weights, model))
    state = {k: torch.from_numpy(v) for k, v in keras_to_torch(model, weights).items()}
    module.load_state_dict(state, strict=True)


# --- keras.applications weights ------------------------------------------------------------

def _graph_signatures(kmodel) -> list[tuple[object, int]]:
    """(layer, signature) for the layers with weights, in the model's order. A signature hashes
    the layer's weight shapes with the signatures of what feeds it, so two models of one
    architecture give their corresponding layers equal signatures, whatever the layer names,
    the order of branches or the weightless layers (activations, padding) between them."""
    sig: dict[int, int] = {}
    out = []
    for layer in kmodel.layers:
        inputs = []
        for node in layer._inbound_nodes[:1]:
            inputs = [sig[id(t._keras_history.operation)] for t in node.input_tensors]
        own = tuple(tuple(w.shape) for w in layer.weights)
        if not own and len(inputs) == 1:
            sig[id(layer)] = inputs[0]
        else:
            sig[id(layer)] = hash((own, tuple(sorted(inputs))))
        if own:
            out.append((layer, sig[id(layer)]))
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
            raise ConversionError(f"layer {layer.name!r} has no counterpart in "
                                  f"{source.name!r} (weight shapes {shapes})")
        pairs.append((layer, pool[s].pop(0)))
    left = [la.name for group in pool.values() for la in group]
    if left:
        raise ConversionError(f"{source.name!r} layers with no counterpart in {model.name!r}: "
                              f"{', '.join(left[:5])}")
    for ours, theirs in pairs:
        ours.set_weights(theirs.get_weights())
    return len(pairs)
