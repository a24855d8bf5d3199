"""Keras recipes: what each emitter of keras_emitters.py returns, and the helpers they share.

A recipe is a list of (Keras layer class name, constructor arguments) pairs, applied in order.
It is plain data, so one recipe gives both the built model (cnnspec.backends.keras.build) and
the generated source (cnnspec build --backend keras), which therefore cannot drift apart.
The layer carrying a node's weights is named after the node; helpers get a suffix
(`_pad`, `_act`, `_crop`). This module imports nothing from keras.
"""

from __future__ import annotations

from ..layers.base import ACTIVATIONS

Recipe = list[tuple[str, dict]]

# Keras activations by name whose definition is torch's: hard_sigmoid is relu6(x + 3) / 6 and
# hard_swish x * relu6(x + 3) / 6 in Keras 3 (as torch's Hardsigmoid / Hardswish), gelu is exact
# (approximate=False, torch's default), elu has alpha 1. leaky_relu is not here: Keras'
# default slope is 0.2, torch's and the spec's 0.01, so it gets its own LeakyReLU layer.
NAMED_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a not in ("leaky_relu", "linear"))

# Classes defined in cnnspec.backends.keras_layers rather than keras.layers.
CUSTOM = (
    "LocalResponseNorm",
    "PaddedPool2D",
    "LayerScale",
    "ChannelSlice",
    "StoredNormalization",
    "DenseHead",  # the detect layer
)


def activation(name: str, fn: str, alpha: float | None = None) -> Recipe:
    """A standalone activation layer."""
    if fn == "leaky_relu":
        return [("LeakyReLU", {"negative_slope": 0.01 if alpha is None else alpha, "name": name})]
    if fn == "elu" and alpha not in (None, 1.0):
        return [("ELU", {"alpha": alpha, "name": name})]
    if fn == "softmax":
        return [("Softmax", {"axis": -1, "name": name})]
    return [("Activation", {"activation": fn, "name": name})]


def with_activation(recipe: Recipe, name: str, fn: str | None) -> Recipe:
    """Fold a layer's activation into its last Keras layer where Keras has it by name."""
    if fn is None:
        return recipe
    if fn in NAMED_ACTIVATIONS:
        cls, kwargs = recipe[-1]
        return [*recipe[:-1], (cls, {**kwargs, "activation": fn})]
    return [*recipe, *activation(f"{name}_act", fn)]


def pad_then(name: str, padding) -> tuple[Recipe, str]:
    """Integer padding P is ZeroPadding2D(P) then a 'valid' window: the same pixels as torch."""
    if padding in ("same", "valid"):
        return [], padding
    (ph, pw) = padding
    if ph == pw == 0:
        return [], "valid"
    return [("ZeroPadding2D", {"padding": ((ph, ph), (pw, pw)), "name": f"{name}_pad"})], "valid"


def windowed(cls: str, name: str, layer, **kwargs) -> Recipe:
    """Conv2D / DepthwiseConv2D / SeparableConv2D with the shared arguments."""
    pre, padding = pad_then(name, layer.padding)
    args = {
        **kwargs,
        "kernel_size": tuple(layer.kernel),
        "strides": tuple(layer.stride),
        "padding": padding,
    }
    if tuple(layer.dilation) != (1, 1):
        args["dilation_rate"] = tuple(layer.dilation)
    args.update(use_bias=layer.bias, name=name)
    return with_activation([*pre, (cls, args)], name, layer.activation)
