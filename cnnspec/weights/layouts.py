"""Which tensors each layer kind holds, under which names, in which layout: data, per kind.

A node's tensors live in the torch module at the node's attribute path (`layer1.conv1` ->
`layer1.conv1.weight`) and in the Keras layer named after the node (`layer1_conv1`, as
Keras' get_weights() lists them). The layouts differ by a fixed permutation per form:

    form       torch                          Keras                      used by
    kernel     (out, in/g, kh, kw)            (kh, kw, in/g, out)        conv, sepconv pointwise
               (in, out, kh, kw)              (kh, kw, out, in)          deconv (no spatial flip:
                                                                         both are the adjoint)
    depthwise  (C*m, 1, kh, kw)               (kh, kw, C, m)             dwconv, sepconv
               (output channel c*m + j in both frameworks)
    matrix     (out, in)                      (in, out)                  dense
    vector     (C,)                           (C,)                       biases, norms, statistics
    column     (C, 1, 1)                      (C,)                       layer scale (torchvision's
                                                                         ConvNeXt shape)

`features` names the torch axis that indexes the layer's input features: where that input
is a flattened feature map, a source that flattened C, H, W (torch) must have that axis
reordered to cnnspec's H, W, C (see cnnspec.weights.flatten). Pure numpy: no framework.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tensor:
    torch: str  # state_dict key under the node's module path
    keras: str  # the Keras variable's name
    form: str  # "kernel" | "depthwise" | "matrix" | "vector"
    features: int | None = None  # torch axis over the input features (flatten reorder)
    multiplier: int = 1  # depthwise: outputs per input channel


def _bias(layer, torch: str = "bias") -> list[Tensor]:
    return [Tensor(torch, "bias", "vector")] if layer.bias else []


def _bn(layer) -> list[Tensor]:
    # torch keeps scale and center apart as `weight` / `bias` parameters (affine or not)
    return [
        *([Tensor("weight", "gamma", "vector", 0)] if layer.scale else []),
        *([Tensor("bias", "beta", "vector", 0)] if layer.center else []),
        Tensor("running_mean", "moving_mean", "vector", 0),
        Tensor("running_var", "moving_variance", "vector", 0),
    ]


# layer kind -> the node's tensors, in Keras' get_weights() order. A kind with parameters
# needs a row here (tests/test_weights.py checks every registered kind).
LAYOUTS: dict[str, Callable[..., list[Tensor]]] = {
    "conv": lambda la: [Tensor("weight", "kernel", "kernel"), *_bias(la)],
    "deconv": lambda la: [Tensor("weight", "kernel", "kernel"), *_bias(la)],
    "dwconv": lambda la: [
        Tensor("weight", "depthwise_kernel", "depthwise", multiplier=la.multiplier),
        *_bias(la),
    ],
    "sepconv": lambda la: [
        Tensor("0.weight", "depthwise_kernel", "depthwise", multiplier=la.multiplier),
        Tensor("1.weight", "pointwise_kernel", "kernel"),
        *_bias(la, "1.bias"),
    ],
    "dense": lambda la: [Tensor("weight", "kernel", "matrix", 1), *_bias(la)],
    "bn": _bn,
    "layernorm": lambda la: [
        *([Tensor("weight", "gamma", "vector")] if la.scale else []),
        *([Tensor("bias", "beta", "vector")] if la.center else []),
    ],
    "groupnorm": lambda la: [Tensor("weight", "gamma", "vector"), Tensor("bias", "beta", "vector")],
    "layerscale": lambda la: [Tensor("gamma", "gamma", "column")],
    # Keras Normalization's sample count is a scalar; torch keeps it as a 0-d buffer
    "normalize": lambda la: [
        Tensor("mean", "mean", "vector"),
        Tensor("variance", "variance", "vector"),
        Tensor("count", "count", "vector"),
    ],
}


def _detect(la) -> list[Tensor]:
    """A detect head: torchvision's module paths (cnnspec/backends/torch/detect.py) and the
    Keras DenseHead's sub-layers (keras_layers.py), in both frameworks' registration order:
    classification (tower, predictor) per set of weights, then box (tower, box, extra)."""
    sets = 1 if la.shared else len(la.strides)
    extra = "bbox_ctrness" if la.extra == "centerness" else "objectness"
    out = []
    for branch, short, preds in (
        ("classification_head", "cls", (("cls_logits", "cls"),)),
        ("regression_head", "box", (("bbox_reg", "box"),) + ((extra, "extra"),) * la.extras),
    ):
        for i in range(sets):
            path = f"{branch}.conv" if la.shared else f"{branch}.module_list.{i}"
            for j in range(la.tower):
                conv, norm = f"{path}.{j}.0", f"{path}.{j}.1"
                form = "depthwise" if la.depthwise else "kernel"
                out.append(Tensor(f"{conv}.weight", f"{short}{i}_tower{j}/kernel", form))
                if la.norm != "bn":
                    out.append(Tensor(f"{conv}.bias", f"{short}{i}_tower{j}/bias", "vector"))
                keras = f"{short}{i}_norm{j}"
                if la.norm == "gn":
                    out += [
                        Tensor(f"{norm}.weight", f"{keras}/gamma", "vector"),
                        Tensor(f"{norm}.bias", f"{keras}/beta", "vector"),
                    ]
                elif la.norm == "bn":
                    out += [
                        Tensor(f"{norm}.weight", f"{keras}/gamma", "vector"),
                        Tensor(f"{norm}.bias", f"{keras}/beta", "vector"),
                        Tensor(f"{norm}.running_mean", f"{keras}/moving_mean", "vector"),
                        Tensor(f"{norm}.running_var", f"{keras}/moving_variance", "vector"),
                    ]
            for torch_name, keras_name in preds:
                at = f"{branch}.{torch_name}" if la.shared else f"{path}.{la.tower}"
                out += [
                    Tensor(f"{at}.weight", f"{keras_name}{i}_predictor/kernel", "kernel"),
                    Tensor(f"{at}.bias", f"{keras_name}{i}_predictor/bias", "vector"),
                ]
    return out


LAYOUTS["detect"] = _detect

# Keras 3 names the groups of a .weights.h5 after the layer class in snake case (conv2d,
# conv2d_1, ...): class -> cnnspec kind.
KERAS_KINDS = {
    "conv2d": "conv",
    "dense": "dense",
    "batch_normalization": "bn",
    "depthwise_conv2d": "dwconv",
    "conv2d_transpose": "deconv",
    "separable_conv2d": "sepconv",
    "layer_normalization": "layernorm",
    "group_normalization": "groupnorm",
    "layer_scale": "layerscale",
    "normalization": "normalize",
    "stored_normalization": "normalize",
}


class LayoutError(ValueError):
    """A layer kind without a layout, or a tensor that does not fit its layout."""


def tensors(node) -> list[Tensor]:
    """The node's tensors (none for a node without parameters)."""
    if node.params == 0:
        return []
    if node.kind not in LAYOUTS:
        raise LayoutError(f"{node.name}: no weight layout for layer kind {node.kind!r}")
    return LAYOUTS[node.kind](node.layer)


def _contiguous(value: np.ndarray) -> np.ndarray:
    # np.ascontiguousarray makes a 0-d array 1-d; a Normalization's sample count is 0-d
    return np.array(value, order="C") if value.ndim == 0 else np.ascontiguousarray(value)


def to_keras(t: Tensor, value: np.ndarray) -> np.ndarray:
    """A torch-layout array in Keras' layout."""
    value = np.asarray(value)
    if t.form == "kernel":
        value = value.transpose(2, 3, 1, 0)
    elif t.form == "depthwise":
        cm, _, kh, kw = value.shape
        value = value.reshape(cm // t.multiplier, t.multiplier, kh, kw).transpose(2, 3, 0, 1)
    elif t.form == "matrix":
        value = value.T
    elif t.form == "column":
        value = value.reshape(-1)
    return _contiguous(value)


def to_torch(t: Tensor, value: np.ndarray) -> np.ndarray:
    """A Keras-layout array in torch's layout."""
    value = np.asarray(value)
    if t.form == "kernel":
        value = value.transpose(3, 2, 0, 1)
    elif t.form == "depthwise":
        kh, kw, c, m = value.shape
        value = value.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
    elif t.form == "matrix":
        value = value.T
    elif t.form == "column":
        value = value.reshape(-1, 1, 1)
    return _contiguous(value)


def torch_shape(t: Tensor, keras_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch shape of a tensor Keras holds as `keras_shape` (no array is made)."""
    s = tuple(keras_shape)
    if t.form == "kernel":
        return (s[3], s[2], s[0], s[1])
    if t.form == "depthwise":
        return (s[2] * s[3], 1, s[0], s[1])
    if t.form == "column":
        return (*s, 1, 1)
    return s[::-1] if t.form == "matrix" else s


# A Keras variable name met in a file whose kind is unknown: its form and torch name.
_BY_KERAS = {
    "kernel": None,
    "depthwise_kernel": "depthwise",
    "pointwise_kernel": "kernel",
    "bias": "vector",
    "gamma": "vector",
    "beta": "vector",
    "moving_mean": "vector",
    "moving_variance": "vector",
}


def keras_tensor(kind: str | None, keras: str, ndim: int, layer=None) -> Tensor:
    """The layout of a Keras variable `keras` of a layer of `kind` (None: not known; the
    variable's name and rank decide); `layer`, where known, gives the depthwise multiplier.
    A name no layout knows is kept as it is."""
    if kind in LAYOUTS:
        for t in LAYOUTS[kind](layer if layer is not None else _Everything()):
            if t.keras == keras:
                return t
    form = _BY_KERAS.get(keras, "vector")
    if form is None:
        form = "matrix" if ndim == 2 else "kernel" if ndim == 4 else "vector"
    torch = {
        "kernel": "weight",
        "depthwise_kernel": "weight",
        "gamma": "weight",
        "beta": "bias",
        "moving_mean": "running_mean",
        "moving_variance": "running_var",
    }.get(keras, keras)
    return Tensor(torch, keras, form)


def keras_order(kind: str) -> list[str]:
    """The Keras names of every tensor a layer of `kind` can hold (bias, scale and center
    on), in get_weights() order: the order Keras 3 files store them as vars/0, vars/1 ..."""
    return [t.keras for t in LAYOUTS[kind](_Everything())]


class _Everything:
    """A stand-in layer with every optional tensor (bias, scale, center) switched on."""

    bias = scale = center = True
    multiplier = 1
