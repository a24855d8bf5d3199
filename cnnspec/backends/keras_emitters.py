"""What each layer kind is in Keras 3: one table, `EMITTERS`, from layer kind to a small function
`(layer, name, input shapes) -> Recipe` (cnnspec.backends.keras_recipe), as sqlglot's generators
keep `TRANSFORMS`. The layer classes (cnnspec/layers) hold only framework-free facts; the
backend asks this table, never the layer. Imports nothing from keras: a recipe is data, built
by keras.py and printed by keras_source.py.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import SpecError
from ..layers import Layer, Shape
from ..layers.base import same_pads
from . import emit
from .keras_recipe import Recipe, activation, windowed, with_activation

Emitter = Callable[[Layer, str, list[Shape]], Recipe]


def keras_layers(
    layer: Layer, name: str, shapes: list[Shape], span=None, path: str | None = None
) -> Recipe:
    """The layer as Keras layers, refusals located at `span` (an IR node's): E420 where its
    kind has no emitter, and sizes Keras cannot run."""
    table = "cnnspec/backends/keras_emitters.py"
    return emit(EMITTERS, "keras", table, layer, (name, shapes), span, path)


def _input(layer, name, shapes):
    return []  # the backend makes keras.Input itself


def _conv(layer, name, shapes):
    return windowed(
        "Conv2D",
        name,
        layer,
        filters=layer.filters,
        **({"groups": layer.groups} if layer.groups > 1 else {}),
    )


def _dwconv(layer, name, shapes):
    return windowed("DepthwiseConv2D", name, layer, depth_multiplier=layer.multiplier)


def _sepconv(layer, name, shapes):
    return windowed(
        "SeparableConv2D", name, layer, filters=layer.filters, depth_multiplier=layer.multiplier
    )


def _deconv(layer, name, shapes):
    # Integer padding P: Keras 'valid' gives (W-1)*S + F + output_padding (output_padding
    # given explicitly, else Keras uses W*S + max(F-S, 0)); torch drops P pixels at each end
    # of that, so crop them (torch ConvTranspose2d: (W-1)*S - 2P + F + output_padding).
    same = layer.padding == "same"
    args = {
        "filters": layer.filters,
        "kernel_size": tuple(layer.kernel),
        "strides": tuple(layer.stride),
        "padding": "same" if same else "valid",
    }
    if not same:
        args["output_padding"] = tuple(layer.output_padding)
    recipe = [("Conv2DTranspose", {**args, "use_bias": layer.bias, "name": name})]
    recipe = with_activation(recipe, name, layer.activation)
    if layer.padding not in ("same", "valid") and any(layer.padding):
        (ph, pw) = layer.padding
        recipe.append(("Cropping2D", {"cropping": ((ph, ph), (pw, pw)), "name": f"{name}_crop"}))
    return recipe


def _dense(layer, name, shapes):
    return with_activation(
        [("Dense", {"units": layer.units, "use_bias": layer.bias, "name": name})],
        name,
        layer.activation,
    )


def _flatten(layer, name, shapes):
    return [("Flatten", {"name": name})]  # channels_last: H, W, C order, as the spec


def _reshape(layer, name, shapes):
    return [("Reshape", {"target_shape": tuple(layer.output_shape(shapes)), "name": name})]


def _dropout(layer, name, shapes):
    return [("Dropout", {"rate": layer.rate, "name": name})]


def _activation(layer, name, shapes):
    return activation(name, layer.fn, layer.alpha)


def _identity(layer, name, shapes):
    return [("Identity", {"name": name})]


def _per_channel(value):
    # a tuple, as the generated source writes it (Rescaling keeps what it is given)
    return (
        tuple(value)
        if isinstance(value, tuple) and len(value) > 1
        else value[0]
        if isinstance(value, tuple)
        else value
    )


def _rescale(layer, name, shapes):
    # Rescaling broadcasts a list over the last axis: one value per channel
    return [
        (
            "Rescaling",
            {
                "scale": _per_channel(layer.scale),
                "offset": _per_channel(layer.offset),
                "name": name,
            },
        )
    ]


def _preprocess(layer, name, shapes):
    """The input line's (x * scale - mean) / std: Rescaling, then Normalization from
    constants (neither has weights)."""
    mean, std = layer.values(shapes[0][-1])
    out = []
    if any(m != 0 for m in mean) or any(s != 1 for s in std):
        variance = [s * s for s in std]
        out.append(("Normalization", {"mean": mean, "variance": variance, "name": name}))
    if layer.scale != 1:  # first; the node's name goes to its last layer
        scaled = f"{name}_scale" if out else name
        out.insert(0, ("Rescaling", {"scale": layer.scale, "name": scaled}))
    return out or [("Identity", {"name": name})]


def _zeropad(layer, name, shapes):
    t, b, l, r = layer.padding
    return [("ZeroPadding2D", {"padding": ((t, b), (l, r)), "name": name})]


def _crop(layer, name, shapes):
    t, b, l, r = layer.cropping
    return [("Cropping2D", {"cropping": ((t, b), (l, r)), "name": name})]


def _upsample(layer, name, shapes):
    # Keras' bilinear resize uses half-pixel centres: torch's align_corners=False.
    return [
        ("UpSampling2D", {"size": tuple(layer.factor), "interpolation": layer.mode, "name": name})
    ]


def _merge(layer, name, shapes):
    # Add and Multiply broadcast a 1x1xC gate over HxWxC, as the shape rule allows.
    if layer.op == "concat":
        return [("Concatenate", {"axis": -1, "name": name})]
    return [({"add": "Add", "multiply": "Multiply"}[layer.op], {"name": name})]


def _bn(layer, name, shapes):
    # Keras' momentum is the spec's (torch's is 1 - it); epsilon is added to the variance in
    # both frameworks.
    return [
        (
            "BatchNormalization",
            {
                "axis": -1,
                "momentum": layer.momentum,
                "epsilon": layer.eps,
                "center": layer.center,
                "scale": layer.scale,
                "name": name,
            },
        )
    ]


def _lrn(layer, name, shapes):
    return [
        (
            "LocalResponseNorm",
            {
                "size": layer.size,
                "alpha": layer.alpha,
                "beta": layer.beta,
                "k": layer.k,
                "name": name,
            },
        )
    ]


def _pool(layer, name, shapes):
    # Keras' own 'valid', and 'same' for max pooling. Average pooling with uneven 'same'
    # padding, integer padding and ceil=true become explicit pads on each side (the
    # bottom/right pad grows so that the last ceil_mode window fits): a padded average must
    # not count the padding, which Keras' AveragePooling2D(padding='same') honours on
    # TensorFlow but not under KERAS_BACKEND=torch.
    # count_pad (torch's count_include_pad) counts the padding as pixels: all of 'same''s,
    # the P pixels each side of integer padding, never the extra ceil_mode pixels.
    cls = {"max": "MaxPooling2D", "avg": "AveragePooling2D"}[layer.op]
    args = {"pool_size": tuple(layer.size), "strides": tuple(layer.strides)}
    shape = shapes[0]
    if layer.padding == "same":
        (top, bottom), (left, right) = (
            same_pads(shape[i], layer.size[i], layer.strides[i]) for i in (0, 1)
        )
        pads = counted = (top, bottom, left, right)
        if layer.op == "max" or not any(pads):
            return [(cls, {**args, "padding": "same", "name": name})]
    else:
        pad = (0, 0) if layer.padding == "valid" else layer.padding
        out = layer.output_shape(shapes)
        ends = [
            max((out[i] - 1) * layer.strides[i] + layer.size[i] - shape[i] - pad[i], pad[i])
            for i in (0, 1)
        ]
        pads = (pad[0], ends[0], pad[1], ends[1])
        counted = (pad[0], pad[0], pad[1], pad[1])
        if not any(pads):
            return [(cls, {**args, "padding": "valid", "name": name})]
    extra = {"counted": counted} if layer.count_pad and any(counted) else {}
    return [("PaddedPool2D", {"op": layer.op, **args, "pads": pads, **extra, "name": name})]


def _adaptive_pool(layer, name, shapes):
    # Keras' adaptive pooling bins as torch's: floor(i*H/h) to ceil((i+1)*H/h). It pools
    # every position with a small (H//h) and a big (H//h + 1) window and gathers; where the big
    # window is larger than the input (h == 1, or h > H) TensorFlow 2.21 stops the process
    # with SIGFPE. Where every bin is the same size (H divisible by h) that is plain pooling
    # with window = stride = H/h, which we use; the other unsafe sizes are refused (E422).
    (height, width, _), (h, w) = shapes[0], layer.size
    if height % h == 0 and width % w == 0:
        cls = {"avg": "AveragePooling2D", "max": "MaxPooling2D"}[layer.op]
        window = (height // h, width // w)
        return [(cls, {"pool_size": window, "strides": window, "name": name})]
    if not (keras_adaptive_safe(height, h) and keras_adaptive_safe(width, w)):
        raise SpecError(
            "E422",
            f"Keras cannot run adaptive {layer.op} pooling of {height}x{width} to {h}x{w} "
            "(its adaptive pooling stops the process with a floating-point exception where "
            "an output side is 1 or larger than the input, unless the sizes divide)",
            hint="pool to sizes that divide the input, or to at least 2 and at most the input",
        )
    cls = {"avg": "AdaptiveAveragePooling2D", "max": "AdaptiveMaxPooling2D"}[layer.op]
    return [(cls, {"output_size": tuple(layer.size), "name": name})]


def keras_adaptive_safe(size: int, out: int) -> bool:
    """Whether Keras' adaptive pooling runs for one axis: its big window fits the input."""
    return out >= 1 and size // out + 1 <= size


def _layernorm(layer, name, shapes):
    return [
        (
            "LayerNormalization",
            {
                "axis": -1,
                "epsilon": layer.eps,
                "center": layer.center,
                "scale": layer.scale,
                "name": name,
            },
        )
    ]


def _groupnorm(layer, name, shapes):
    return [
        (
            "GroupNormalization",
            {"groups": layer.groups, "axis": -1, "epsilon": layer.eps, "name": name},
        )
    ]


def _layerscale(layer, name, shapes):
    return [("LayerScale", {"init": layer.init, "name": name})]


def _normalize(layer, name, shapes):
    mean, variance = layer.values(shapes[0][-1])
    return [
        (
            "StoredNormalization",
            {"axis": -1, "init_mean": mean, "init_variance": variance, "name": name},
        )
    ]


def _stochastic_depth(layer, name, shapes):
    # dropout of whole samples: one mask value per sample, as keras.applications' EfficientNet
    return [
        (
            "Dropout",
            {"rate": layer.rate, "noise_shape": (None,) + (1,) * len(shapes[0]), "name": name},
        )
    ]


def _channel_shuffle(layer, name, shapes):
    # (H, W, G, C/G) -> swap the last two -> (H, W, C): channel g*(C/G) + i lands at i*G + g
    h, w, c = shapes[0]
    g = layer.groups
    return [
        ("Reshape", {"target_shape": (h, w, g, c // g), "name": f"{name}_groups"}),
        ("Permute", {"dims": (1, 2, 4, 3), "name": f"{name}_swap"}),
        ("Reshape", {"target_shape": (h, w, c), "name": name}),
    ]


def _split(layer, name, shapes):
    start, stop = layer.channels(shapes[0][-1])
    return [("ChannelSlice", {"start": start, "stop": stop, "name": name})]


def _global_pool(layer, name, shapes):
    cls = {"avg": "GlobalAveragePooling2D", "max": "GlobalMaxPooling2D"}[layer.op]
    return [(cls, {"keepdims": layer.keepdims, "name": name})]


def _detect(layer, name, shapes):
    # one DenseHead over the levels: Keras' functional graph has no shared sub-graph to write
    # the per-level towers with, so the custom layer holds them (cnnspec.backends.keras_layers)
    levels = shapes[:1] if layer.shared else shapes
    towers = [[(cout, layer.depthwise) for _, cout in layer.tower_convs(s[2])] for s in levels]
    return [
        (
            "DenseHead",
            {
                "classes": layer.classes,
                "per_cell": layer.per_cell,
                "extra": bool(layer.extras),
                "towers": towers,
                "levels": len(levels),
                "norm": layer.norm,
                "groups": layer.groups,
                "eps": layer.eps,
                "act": layer.act,
                "kernel": tuple(layer.kernel),
                "predictor": tuple(layer.predictor),
                "box_relu": layer.box_relu,
                "name": name,
            },
        )
    ]


# Layer kind -> emitter. A new layer kind needs a row here (tests/test_architecture.py).
EMITTERS: dict[str, Emitter] = {
    "input": _input,
    "conv": _conv,
    "dwconv": _dwconv,
    "sepconv": _sepconv,
    "deconv": _deconv,
    "dense": _dense,
    "flatten": _flatten,
    "reshape": _reshape,
    "dropout": _dropout,
    "activation": _activation,
    "identity": _identity,
    "rescale": _rescale,
    "preprocess": _preprocess,
    "zeropad": _zeropad,
    "upsample": _upsample,
    "merge": _merge,
    "bn": _bn,
    "lrn": _lrn,
    "pool": _pool,
    "global_pool": _global_pool,
    "adaptive_pool": _adaptive_pool,
    "layernorm": _layernorm,
    "groupnorm": _groupnorm,
    "layerscale": _layerscale,
    "normalize": _normalize,
    "stochastic_depth": _stochastic_depth,
    "channel_shuffle": _channel_shuffle,
    "split": _split,
    "detect": _detect,
    "crop": _crop,
}
