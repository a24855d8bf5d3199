"""Keras functional models -> Graph, from each layer's config and its inbound tensors.

Keras' semantics are the spec's (HWC, TensorFlow 'same', momentum in Keras' sense), so most
layers map one to one; a nested Sequential (ConvNeXt's stem) is the chain of its layers. What
the spec cannot say (a ReLU with a threshold, a layer this importer does not know) is refused
with an E41x error naming the layer and its class.
"""

from __future__ import annotations

import zipfile

from ..errors import SpecError
from .ops import Dims, Graph, Op, missing, scalar, size, unsupported, window

ACTIVATIONS = {
    "relu": "relu",
    "relu6": "relu6",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "softmax": "softmax",
    "swish": "silu",
    "silu": "silu",
    "elu": "elu",
    "gelu": "gelu",
    "hard_swish": "hard_swish",
    "hard_silu": "hard_swish",
    "hard_sigmoid": "hard_sigmoid",
    "leaky_relu": "leaky_relu",
    "linear": None,
}


# What a malformed saved model raises from inside Keras (a file is untrusted input): a bad zip, a
# config that is not JSON or names a class Keras does not know, a missing key (issue 14).
_UNREADABLE = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    zipfile.BadZipFile,
)


def load(source: str, input_shape=None):
    """keras.applications.<Name>(weights=None) or a saved .keras model."""
    import inspect

    import keras

    if source.endswith((".keras", ".h5")):
        try:
            # safe_mode: a Lambda layer's code is refused, never deserialised and run
            return keras.saving.load_model(source, compile=False, safe_mode=True)
        except _UNREADABLE as exc:
            why = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise SpecError(
                "E410",
                f"cannot read the Keras model '{source}': {why}",
                hint="save it with model.save('NAME.keras') from Keras 3",
            ) from None
    # Only the public model builders: `keras:__class__` or a submodule name is no model.
    builder = None if source.startswith("_") else getattr(keras.applications, source, None)
    if builder is None or not inspect.isfunction(builder):
        raise SpecError(
            "E410",
            f"keras.applications has no model '{source}'",
            hint="names are as in Python: ResNet50, MobileNetV2, DenseNet121",
        )
    kwargs = {"input_shape": tuple(input_shape)} if input_shape else {}
    try:
        return builder(weights=None, **kwargs)
    except (ValueError, TypeError) as exc:
        raise SpecError(
            "E410",
            f"keras.applications.{source} refused the input: {str(exc).splitlines()[0][:300]}",
        ) from None


def counts(kmodel) -> tuple[int, int]:
    import numpy as np

    t = sum(int(np.prod(w.shape)) for w in kmodel.trainable_weights)
    n = sum(int(np.prod(w.shape)) for w in kmodel.non_trainable_weights)
    return t, n


def read(kmodel, source: str) -> Graph:
    try:
        return _read(kmodel, source)
    except SpecError as err:
        if err.code == "E417":  # say every construct missing, not only the first one met
            others = sorted(
                {
                    CONSTRUCTS[type(la).__name__]
                    for la in kmodel.layers
                    if type(la).__name__ in CONSTRUCTS
                }
                - {err.message}
            )
            others = [c for c in others if c not in err.message]
            if others:
                err.message += f" (the model also uses: {', '.join(others)})"
        raise


def _read(kmodel, source: str) -> Graph:
    shape = tuple(kmodel.inputs[0].shape[1:]) if len(kmodel.inputs) == 1 else None
    if shape is None or any(d is None for d in shape):
        raise SpecError(
            "E415",
            f"{source}: the spec needs one input of a fixed size, got "
            f"{[tuple(t.shape) for t in kmodel.inputs]}",
            hint="build the model with input_shape=(H, W, C)",
        )
    graph = Graph(source=source, input_shape=shape, counts=counts(kmodel))
    alias: dict[str, str] = {}
    import keras

    # operations, not layers: `x + 3.0` in a functional model is an op that is no layer
    for layer in kmodel.operations:
        kind = type(layer).__name__
        if kind == "InputLayer":
            graph.input_name = layer.name
            continue
        inputs = [alias.get(n, n) for n in _inbound(layer)]
        if len(layer._inbound_nodes) > 1:
            raise unsupported(
                layer.name, kind, "the layer is called more than once (shared weights)", code="E413"
            )
        if not isinstance(layer, keras.layers.Layer):
            graph.add(_operation(layer, kind, inputs))
            continue
        if kind == "CustomScaleLayer" and len(inputs) == 2:
            # InceptionResNetV2: x + scale * branch, a rescaled branch and an add
            scaled = f"{layer.name}.scale"
            conf = layer.get_config()
            graph.add(
                Op(scaled, kind, "rescale", [("kw", "scale", float(conf["scale"]))], [inputs[1]])
            )
            graph.add(Op(layer.name, kind, "add", [], [inputs[0], scaled]))
            continue
        if isinstance(layer, keras.Sequential):
            # ConvNeXt's stem and downsampling layers: a chain, its layers in order
            ops = [op for sub in layer.layers for op in _ops(sub)]
        else:
            ops = _ops(layer)
        if not ops:  # the identity: later layers read its input
            alias[layer.name] = inputs[0]
            continue
        prev = inputs
        for i, (word, args) in enumerate(ops):
            name = layer.name if i == len(ops) - 1 else f"{layer.name}.{i}"
            graph.add(Op(name, kind, word, args, prev))
            prev = [name]
    graph.outputs = [
        alias.get(t._keras_history.operation.name, t._keras_history.operation.name)
        for t in kmodel.outputs
    ]
    return graph


def _ops(layer) -> list[tuple[str, list]]:
    """The statements of one layer: (word, args) each; none for the identity."""
    kind = type(layer).__name__
    conf = layer.get_config()
    if conf.get("data_format", "channels_last") != "channels_last":
        raise unsupported(layer.name, kind, "data_format='channels_first'")
    rule = RULES.get(kind)
    if rule is None:
        raise (
            missing(layer.name, kind, CONSTRUCTS[kind])
            if kind in CONSTRUCTS
            else unsupported(layer.name, kind)
        )
    return rule(layer, conf)


def _operation(op, kind: str, inputs: list[str]) -> Op:
    """A keras.ops call in a functional model: the sum or product of two tensors, or a
    tensor and a number (MobileNetV3's hard sigmoid, `relu6(x + 3) * (1 / 6)`: rescale)."""
    args = op._inbound_nodes[0].arguments
    values = list(args.args) + list(args.kwargs.values())
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if kind in ("Add", "Multiply") and len(inputs) == 2 and not numbers:
        return Op(op.name, kind, kind.lower(), [], inputs)
    if kind in ("Add", "Multiply", "Subtract") and len(inputs) == 1 and len(numbers) == 1:
        c = float(numbers[0])
        if kind == "Subtract" and not isinstance(values[0], (int, float)):
            c = -c  # x - c
        elif kind == "Subtract":
            raise unsupported(op.name, kind, "a number minus a tensor")
        key = "scale" if kind == "Multiply" else "offset"
        return Op(op.name, kind, "rescale", [("kw", key, c)], inputs)
    raise unsupported(
        op.name,
        f"keras.ops.{kind}",
        "only the sum or product of two tensors, or of a tensor and a number, is read",
    )


def _inbound(layer) -> list[str]:
    node = layer._inbound_nodes[0]
    return [t._keras_history.operation.name for t in node.input_tensors]


def _act(layer, name) -> list:
    if name not in ACTIVATIONS:
        raise unsupported(layer.name, type(layer).__name__, f"activation '{name}'")
    return [] if ACTIVATIONS[name] is None else [("flag", ACTIVATIONS[name])]


def _activation_name(layer, value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # a serialised activation
        return value.get("config", value.get("class_name", "?"))
    return getattr(value, "__name__", str(value))


def _window(conf, pad_key="padding") -> list:
    args = [("kw", "stride", scalar(conf["strides"]))]
    if conf[pad_key] == "same":
        args.append(("flag", "same"))
    if scalar(conf.get("dilation_rate", 1)) != 1:
        args.append(("kw", "dilation", scalar(conf["dilation_rate"])))
    return args


def _conv(layer, conf):
    args = [("pos", conf["filters"]), ("pos", size(conf["kernel_size"]))]
    if conf.get("groups", 1) != 1:
        args.append(("kw", "groups", conf["groups"]))
    args += _window(conf)
    if not conf["use_bias"]:
        args.append(("flag", "nobias"))
    if scalar(conf["kernel_size"]) == 1 and scalar(conf["strides"]) == 1:
        args = [a for a in args if a != ("flag", "same")]  # 1x1, stride 1: same = valid
    return [("conv", args + _act(layer, _activation_name(layer, conf["activation"])))]


def _dwconv(layer, conf):
    args = [("pos", size(conf["kernel_size"]))]
    if conf["depth_multiplier"] != 1:
        args.append(("kw", "multiplier", conf["depth_multiplier"]))
    args += _window(conf)
    if not conf["use_bias"]:
        args.append(("flag", "nobias"))
    return [("dwconv", args + _act(layer, _activation_name(layer, conf["activation"])))]


def _sepconv(layer, conf):
    """Keras' SeparableConv2D: depthwise then pointwise, one bias (the pointwise one), which is
    what `sepconv` computes."""
    args = [("pos", conf["filters"]), ("pos", size(conf["kernel_size"]))]
    if conf.get("depth_multiplier", 1) != 1:
        args.append(("kw", "multiplier", conf["depth_multiplier"]))
    args += _window(conf)
    if not conf["use_bias"]:
        args.append(("flag", "nobias"))
    return [("sepconv", args + _act(layer, _activation_name(layer, conf["activation"])))]


def _bn(layer, conf):
    axis = conf["axis"]
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if axis not in (-1, 3):
        raise unsupported(
            layer.name,
            "BatchNormalization",
            f"axis={axis} (the spec normalises the channels, the last axis)",
        )
    args = []
    if conf["epsilon"] != 1e-5:
        args.append(("kw", "eps", float(conf["epsilon"])))
    if conf["momentum"] != 0.9:
        args.append(("kw", "momentum", float(conf["momentum"])))
    if not conf["scale"]:
        args.append(("flag", "noscale"))
    if not conf["center"]:
        args.append(("flag", "nocenter"))
    if conf.get("renorm") or conf.get("synchronized"):
        raise unsupported(layer.name, "BatchNormalization", "renorm / synchronized")
    return [("bn", args)]


def _activation(layer, conf):
    flags = _act(layer, _activation_name(layer, conf["activation"]))
    return [(flags[0][1], [])] if flags else []


def _relu(layer, conf):
    if conf.get("threshold", 0) != 0:
        raise unsupported(layer.name, "ReLU", f"threshold={conf['threshold']}")
    slope, top = conf.get("negative_slope", 0), conf.get("max_value")
    if slope and top is None:
        return [("leaky_relu", [("pos", float(slope))])]
    if slope or top not in (None, 6, 6.0):
        raise unsupported(
            layer.name,
            "ReLU",
            f"max_value={top}, negative_slope={slope} (the spec has relu, relu6 and leaky_relu)",
        )
    return [("relu6" if top is not None else "relu", [])]


def _zeropad(layer, conf):
    (t, b), (left, r) = conf["padding"]
    pads = (t, b, left, r)
    return [("zeropad", [("pos", t if len(set(pads)) == 1 else pads)])]


def _crop(layer, conf):
    (t, b), (left, r) = conf["cropping"]
    crops = (t, b, left, r)
    return [("crop", [("pos", t if len(set(crops)) == 1 else crops)])]


def _pool(word):
    def rule(layer, conf):
        args = [("pos", window(conf["pool_size"]))]
        strides = conf["strides"] or conf["pool_size"]
        if scalar(strides) != scalar(conf["pool_size"]):
            args.append(("kw", "stride", scalar(strides)))
        if conf["padding"] == "same":
            args.append(("flag", "same"))
        return [(word, args)]

    return rule


def _global(word):
    def rule(layer, conf):
        return [(word, [("flag", "keepdims")] if conf.get("keepdims") else [])]

    return rule


def _dense(layer, conf):
    rank = len(layer.input.shape)
    if rank not in (2, 4):
        raise unsupported(
            layer.name,
            "Dense",
            f"a dense layer on a {layer.input.shape[1:]} input (the spec's dense takes "
            "vectors, or feature maps with per_pixel)",
        )
    args = [("pos", conf["units"])] + ([] if conf["use_bias"] else [("flag", "nobias")])
    if rank == 4:  # over the channels of each pixel (ConvNeXt's pointwise layers)
        args.append(("flag", "per_pixel"))
    return [("dense", args + _act(layer, _activation_name(layer, conf["activation"])))]


def _merge(word):
    def rule(layer, conf):
        if word == "concat" and conf.get("axis", -1) not in (-1, 3):
            raise unsupported(
                layer.name, "Concatenate", f"axis={conf['axis']} (the spec concatenates channels)"
            )
        return [(word, [])]

    return rule


def _reshape(layer, conf):
    target = tuple(conf["target_shape"])
    return [("reshape", [("pos", Dims(target) if len(target) > 1 else target[0])])]


def _rescaling(layer, conf):
    def value(v):  # one number, or one per channel (EfficientNet's 1/std)
        return float(v) if isinstance(v, (int, float)) else tuple(float(x) for x in v)

    return [
        (
            "rescale",
            [("kw", "scale", value(conf["scale"])), ("kw", "offset", value(conf["offset"]))],
        )
    ]


def _normalization(layer, conf):
    """Keras Normalization over the channels; its mean and variance are weights (adapt() or
    the file sets them), loaded like any other, so the spec states them only when the
    config does."""
    if conf.get("axis", -1) not in (-1, 3, (-1,), [-1], (3,), [3]):
        raise unsupported(
            layer.name,
            "Normalization",
            f"axis={conf['axis']} (the spec's normalize is per channel)",
        )
    if conf.get("invert"):
        raise unsupported(layer.name, "Normalization", "invert=True (denormalising)")
    if not layer.weights and conf.get("mean") is not None and conf.get("variance") is not None:
        return _constant_normalization(layer, conf)
    args = []
    for key in ("mean", "variance"):
        v = conf.get(key)
        if v is not None:
            args.append(
                ("kw", key, tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v])))
            )
    return [("normalize", args)]


def _constant_normalization(layer, conf):
    """A Normalization given its mean and variance holds them as constants, no weights (the
    preprocessing of ConvNeXt and EfficientNetV2B*): it is the per-channel affine map
    x / s - m / s with Keras' s = max(sqrt(variance), 1e-7), which `rescale` computes with
    no parameters, as Keras counts it (`normalize` keeps its statistics as weights)."""
    import numpy as np

    def per_channel(key):
        return np.asarray(conf[key], dtype="float64").reshape(-1)

    mean, variance = np.broadcast_arrays(per_channel("mean"), per_channel("variance"))
    std = np.maximum(np.sqrt(variance), 1e-7)

    def value(v):
        return float(v[0]) if len(set(v.tolist())) == 1 else tuple(float(x) for x in v)

    return [("rescale", [("kw", "scale", value(1 / std)), ("kw", "offset", value(-mean / std))])]


def _layernorm(layer, conf):
    axis = conf.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if axis not in (-1, 3) or conf.get("rms_scaling"):
        raise missing(
            layer.name,
            "LayerNormalization",
            f"layer norm over axis {axis}"
            + (" with rms scaling" if conf.get("rms_scaling") else ""),
            hint="the spec's layernorm is over the channels of each pixel",
        )
    args = [] if conf["epsilon"] == 1e-5 else [("kw", "eps", float(conf["epsilon"]))]
    args += [] if conf["scale"] else [("flag", "noscale")]
    args += [] if conf["center"] else [("flag", "nocenter")]
    return [("layernorm", args)]


def _layerscale(layer, conf):
    """keras.applications' ConvNeXt LayerScale: x * gamma, gamma (C,) from init_values."""
    return [("layerscale", [("pos", float(conf["init_values"]))])]


def _stochastic_depth(layer, conf):
    """keras.applications' ConvNeXt StochasticDepth: whole samples dropped in training,
    as the spec's (and torchvision's "row" mode)."""
    return [("stochastic_depth", [("pos", float(conf["drop_path_rate"]))])]


# Keras layers that are constructs the language does not have yet (issue 16)
CONSTRUCTS = {
    "GroupNormalization": "group norm",
    "UnitNormalization": "unit normalisation",
}


def _softmax(layer, conf):
    if conf.get("axis", -1) not in (-1, 3):
        raise unsupported(layer.name, "Softmax", f"axis={conf['axis']}")
    return [("softmax", [])]


def _dropout(layer, conf):
    if tuple(conf.get("noise_shape") or ())[1:] == (1, 1, 1):
        # one draw per sample: Keras' stochastic depth (EfficientNet's drop-connect)
        return [("stochastic_depth", [("pos", float(conf["rate"]))])]
    return [("dropout", [("pos", float(conf["rate"]))])]


def _nothing(layer, conf):
    return []


RULES = {
    "Conv2D": _conv,
    "DepthwiseConv2D": _dwconv,
    "SeparableConv2D": _sepconv,
    "BatchNormalization": _bn,
    "Activation": _activation,
    "ReLU": _relu,
    "ZeroPadding2D": _zeropad,
    "Cropping2D": _crop,
    "MaxPooling2D": _pool("maxpool"),
    "AveragePooling2D": _pool("avgpool"),
    "GlobalAveragePooling2D": _global("gap"),
    "GlobalMaxPooling2D": _global("gmp"),
    "Dense": _dense,
    "Add": _merge("add"),
    "Concatenate": _merge("concat"),
    "Multiply": _merge("multiply"),
    "Reshape": _reshape,
    "Dropout": _dropout,
    "Flatten": lambda layer, conf: [("flatten", [])],
    "Rescaling": _rescaling,
    "Normalization": _normalization,
    "LayerNormalization": _layernorm,
    "LayerScale": _layerscale,
    "StochasticDepth": _stochastic_depth,
    "Softmax": _softmax,
    "Identity": _nothing,
}
