"""What each layer kind is in PyTorch: one table, `EMITTERS`, from layer kind to a small function
`(layer, input shapes) -> TorchOp` (cnnspec.backends.torch_emit), as sqlglot's generators keep
`TRANSFORMS`. The layer classes (cnnspec/layers) hold only framework-free facts; the plan asks
this table, never the layer. Imports no framework: the ops are data, built by runtime.py and
printed by source.py.

Tensors are NCHW here, the IR's shapes HWC. Every choice that differs between frameworks
follows the spec (Keras): TensorFlow's 'same' padding, flatten in H, W, C order, BatchNorm
momentum in Keras' sense.
"""

from __future__ import annotations

from collections.abc import Callable

from ...layers import Layer, Shape
from .. import emit
from .. import torch_emit as te
from .detect import detect as _detect

Emitter = Callable[[Layer, list[Shape]], te.TorchOp]


def torch_op(layer: Layer, shapes: list[Shape], span=None, path: str | None = None) -> te.TorchOp:
    """The layer in PyTorch, refusals located at `span` (an IR node's): E420 where its kind
    has no emitter."""
    table = "cnnspec/backends/torch/emitters.py"
    return emit(EMITTERS, "torch", table, layer, (shapes,), span, path)


def _passthrough(layer, shapes):
    return te.TorchOp(forward=te.X)


def _windowed_conv(
    shape,
    in_c: int,
    out_c: int,
    groups: int,
    kernel,
    stride,
    padding,
    dilation,
    bias: bool,
    act: str | None,
) -> te.TorchOp:
    """nn.Conv2d for conv and dwconv, with TensorFlow's 'same' (F.pad first where uneven)."""
    torch_padding, pads = te.window_padding(padding, shape, kernel, stride, dilation)
    module = te.call(
        "nn.Conv2d",
        in_c,
        out_c,
        kernel_size=te.one(kernel),
        **te.kwargs_unless_default(
            stride=(te.one(stride), 1),
            padding=(torch_padding, 0),
            dilation=(te.one(dilation), 1),
            groups=(groups, 1),
            bias=(bias, True),
        ),
    )
    # the conv's output is fresh: its activation may overwrite it (torchvision's inplace=True)
    forward = te.activation(act, te.Self((te.pad(te.X, pads),)), inplace=True)
    return te.TorchOp(module=module, forward=forward, fresh=act is None)


def _conv(layer, shapes):
    return _windowed_conv(
        shapes[0],
        shapes[0][2],
        layer.filters,
        layer.groups,
        layer.kernel,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.bias,
        layer.activation,
    )


def _dwconv(layer, shapes):
    c = shapes[0][2]
    return _windowed_conv(
        shapes[0],
        c,
        c * layer.multiplier,
        c,
        layer.kernel,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.bias,
        layer.activation,
    )


def _sepconv(layer, shapes):
    """Keras SeparableConv2D: depthwise (no bias), pointwise, then the one bias."""
    c = shapes[0][2]
    mid = c * layer.multiplier
    dw = _windowed_conv(
        shapes[0], c, mid, c, layer.kernel, layer.stride, layer.padding, layer.dilation, False, None
    )
    pw = te.call(
        "nn.Conv2d",
        mid,
        layer.filters,
        kernel_size=1,
        **te.kwargs_unless_default(bias=(layer.bias, True)),
    )
    seq = te.call("nn.Sequential", dw.module, pw)
    return te.TorchOp(
        module=seq,
        forward=te.activation(layer.activation, dw.forward, inplace=True),
        fresh=layer.activation is None,
    )


def _deconv(layer, shapes):
    """'same' as TensorFlow (the adjoint of a 'same' conv, output W*S): pad the smaller half
    (k - s) // 2 of k - s and crop the odd extra from the bottom/right; where k < s,
    output_padding s - k adds the zero rows TensorFlow has there."""
    h, w, c = shapes[0]
    padding, out_pad, crop = layer.padding, layer.output_padding, False
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        padding, out_pad = [], []
        for k, s in zip(layer.kernel, layer.stride):
            padding.append(max(k - s, 0) // 2)
            out_pad.append(max(s - k, 0))
            crop |= k > s and (k - s) % 2 == 1
    module = te.call(
        "nn.ConvTranspose2d",
        c,
        layer.filters,
        kernel_size=te.one(layer.kernel),
        **te.kwargs_unless_default(
            stride=(te.one(layer.stride), 1),
            padding=(te.one(padding), 0),
            output_padding=(te.one(out_pad), 0),
            bias=(layer.bias, True),
        ),
    )
    y = te.Self((te.X,))
    if crop:
        full = slice(None)
        y = te.Index(
            y, (full, full, slice(None, h * layer.stride[0]), slice(None, w * layer.stride[1]))
        )
    return te.TorchOp(
        module=module,
        forward=te.activation(layer.activation, y, inplace=not crop),
        fresh=layer.activation is None and not crop,
    )


def _dense(layer, shapes):
    """nn.Linear; `per_pixel` runs it over the channels of each pixel, as torchvision's
    ConvNeXt does on channels-last maps (NCHW moved to NHWC and back)."""
    module = te.call(
        "nn.Linear", shapes[0][-1], layer.units, **te.kwargs_unless_default(bias=(layer.bias, True))
    )
    y = te.Self((te.X,))
    if layer.per_pixel:
        y = te.method(te.Self((te.method(te.X, "movedim", 1, -1),)), "movedim", -1, 1)
    return te.TorchOp(
        module=module,
        forward=te.activation(layer.activation, y, inplace=True),
        fresh=layer.activation is None,
    )


def _flatten(layer, shapes):
    """NCHW -> NHWC before flattening, so the features come in Keras' H, W, C order (skipped
    where one of H*W or C is 1: the orders agree)."""
    shape = shapes[0]
    if len(shape) == 1:
        return te.TorchOp(forward=te.X)
    plain = shape[0] * shape[1] == 1 or shape[2] == 1
    x = te.X if plain else te.method(te.X, "permute", 0, 2, 3, 1)
    return te.TorchOp(forward=te.method(x, "flatten", 1))


def _reshape(layer, shapes):
    """Reshape in the spec's HWC order: NCHW -> NHWC, reshape, back to NCHW."""
    out = layer.output_shape(shapes)
    x = te.X
    if len(shapes[0]) == 3:
        x = te.method(x, "permute", 0, 2, 3, 1)
    x = te.method(x, "reshape", -1, *out)
    if len(out) == 3:
        x = te.method(x, "permute", 0, 3, 1, 2)
    return te.TorchOp(forward=x)


def _dropout(layer, shapes):
    return te.TorchOp(module=te.call("nn.Dropout", layer.rate), forward=te.Self((te.X,)))


def _activation(layer, shapes):
    inplace = (
        te.activation(layer.fn, te.X, layer.alpha, inplace=True)
        if te.can_overwrite(layer.fn)
        else None
    )
    return te.TorchOp(forward=te.activation(layer.fn, te.X, layer.alpha), inplace=inplace)


def _per_channel(value, shape):
    """A number, or a tuple of one per channel as a tensor on the input's device, shaped to
    broadcast over NCHW (or NC)."""
    if not isinstance(value, tuple):
        return float(value)
    if len(value) == 1:
        return float(value[0])
    t = te.method(te.X, "new_tensor", [float(v) for v in value])
    return t if len(shape) == 1 else te.method(t, "view", -1, 1, 1)


def _rescale(layer, shapes):
    scale, offset = (_per_channel(v, shapes[0]) for v in (layer.scale, layer.offset))
    x = te.X if scale == 1 else te.BinOp("*", (te.X, scale))
    x = x if offset == 0 else te.BinOp("+", (x, offset))
    return te.TorchOp(forward=x)


def _preprocess(layer, shapes):
    """The input line's (x * scale - mean) / std: constants in forward, no state_dict entry."""
    mean, std = (_per_channel(tuple(v), shapes[0]) for v in layer.values(shapes[0][-1]))
    x = te.X if layer.scale == 1 else te.BinOp("*", (te.X, float(layer.scale)))
    x = x if mean == 0 else te.BinOp("-", (x, mean))
    return te.TorchOp(forward=x if std == 1 else te.BinOp("/", (x, std)))


def _zeropad(layer, shapes):
    t, b, l, r = layer.padding
    return te.TorchOp(forward=te.pad(te.X, (l, r, t, b)))


def _crop(layer, shapes):
    h, w, _ = shapes[0]
    t, b, l, r = layer.cropping
    return te.TorchOp(
        forward=te.Index(te.X, (slice(None), slice(None), slice(t, h - b), slice(l, w - r)))
    )


def _upsample(layer, shapes):
    # half-pixel centres, as Keras: align_corners=False
    extra = {"align_corners": False} if layer.mode == "bilinear" else {}
    return te.TorchOp(
        forward=te.call(
            "F.interpolate", te.X, scale_factor=te.one(layer.factor), mode=layer.mode, **extra
        )
    )


def _merge(layer, shapes):
    """add and multiply broadcast a (N, C, 1, 1) gate over (N, C, H, W); concat joins the
    channels, dim 1 of NCHW and of NC."""
    xs = tuple(te.In(i) for i in range(len(shapes)))
    if layer.op == "concat":
        return te.TorchOp(forward=te.call("torch.cat", list(xs), 1), fresh=True)
    inplace = None
    if layer.op == "add" and tuple(shapes[0]) == tuple(layer.output_shape(shapes)):
        inplace = xs[0]  # torchvision's `out += identity`
        for x in xs[1:]:
            inplace = te.method(inplace, "add_", x)
    # a product is not fresh: multiply's backward reads its inputs
    return te.TorchOp(
        forward=te.BinOp("+" if layer.op == "add" else "*", xs),
        fresh=layer.op == "add",
        inplace=inplace,
    )


def _bn(layer, shapes):
    """torch's momentum is the weight of the new batch: 1 - the spec's (Keras') momentum.
    scale and center apart: affine=False plus the one parameter, which F.batch_norm takes
    alone (weight=None, bias=tensor)."""
    c = shapes[0][-1]
    cls = "nn.BatchNorm2d" if len(shapes[0]) == 3 else "nn.BatchNorm1d"
    momentum = float(f"{1 - layer.momentum:.12g}")
    both = layer.scale and layer.center
    module = te.call(
        cls,
        c,
        **te.kwargs_unless_default(
            eps=(layer.eps, 1e-5), momentum=(momentum, 0.1), affine=(both, True)
        ),
    )
    setup = ()
    if layer.scale != layer.center:
        name, init = ("weight", "torch.ones") if layer.scale else ("bias", "torch.zeros")
        setup = ((name, te.call("nn.Parameter", te.call(init, c))),)
    return te.TorchOp(module=module, forward=te.Self((te.X,)), setup=setup, fresh=True)


def _lrn(layer, shapes):
    module = te.call(
        "nn.LocalResponseNorm",
        layer.size,
        **te.kwargs_unless_default(
            alpha=(layer.alpha, 1e-4), beta=(layer.beta, 0.75), k=(layer.k, 1.0)
        ),
    )
    return te.TorchOp(module=module, forward=te.Self((te.X,)))


def _pool(layer, shapes):
    """'same' as TensorFlow: max pads with -inf, average never counts the padding unless
    count_pad (torch's count_include_pad). Uneven 'same' average pooling divides the
    zero-padded sum by the pooled mask of real pixels (by the window, with count_pad)."""
    k, s = te.one(layer.size), te.one(layer.strides)
    padding, pads = te.window_padding(layer.padding, shapes[0], layer.size, layer.strides)
    if layer.op == "avg" and pads is not None and layer.count_pad:
        return te.TorchOp(forward=te.call("F.avg_pool2d", te.pad(te.X, pads), k, s))
    if layer.op == "avg" and pads is not None:
        mask = te.call("torch.ones_like", te.Index(te.X, (slice(None), slice(None, 1))))
        pooled = [te.call("F.avg_pool2d", te.pad(x, pads), k, s) for x in (te.X, mask)]
        return te.TorchOp(forward=te.BinOp("/", tuple(pooled)))
    cls = "nn.MaxPool2d" if layer.op == "max" else "nn.AvgPool2d"
    extra = (
        {"count_include_pad": False}
        if layer.op == "avg" and padding != 0 and not layer.count_pad
        else {}
    )
    module = te.call(
        cls,
        k,
        **te.kwargs_unless_default(
            stride=(s, k),
            padding=(padding, 0),
            ceil_mode=(layer.ceil and layer.padding != "same", False),
        ),
        **extra,
    )
    return te.TorchOp(
        module=module, forward=te.Self((te.pad(te.X, pads, value=float("-inf")),)), fresh=True
    )


def _adaptive_pool(layer, shapes):
    cls = {"avg": "nn.AdaptiveAvgPool2d", "max": "nn.AdaptiveMaxPool2d"}[layer.op]
    return te.TorchOp(module=te.call(cls, te.one(layer.size)), forward=te.Self((te.X,)), fresh=True)


def _channels_last(shape, x, fn):
    """fn applied to x with the channels last: NCHW -> NHWC -> NCHW (a vector as it is)."""
    if len(shape) == 1:
        return fn(x)
    return te.method(fn(te.method(x, "permute", 0, 2, 3, 1)), "permute", 0, 3, 1, 2)


def _layernorm(layer, shapes):
    """torch LayerNorm normalises the last axes: over the channels of each pixel it runs on
    NHWC (torchvision's ConvNeXt LayerNorm2d does the same permutes)."""
    c = shapes[0][-1]
    if layer.scale != layer.center:
        module = te.call(
            "nn.LayerNorm",
            c,
            **te.kwargs_unless_default(eps=(layer.eps, 1e-5)),
            elementwise_affine=layer.scale,
            bias=False,
        )
        setup = (
            () if layer.scale else (("bias", te.call("nn.Parameter", te.call("torch.zeros", c))),)
        )
    else:
        module = te.call(
            "nn.LayerNorm",
            c,
            **te.kwargs_unless_default(
                eps=(layer.eps, 1e-5), elementwise_affine=(layer.scale, True)
            ),
        )
        setup = ()
    return te.TorchOp(
        module=module,
        setup=setup,
        fresh=True,
        forward=_channels_last(shapes[0], te.X, lambda x: te.Self((x,))),
    )


def _groupnorm(layer, shapes):
    module = te.call(
        "nn.GroupNorm",
        layer.groups,
        shapes[0][-1],
        **te.kwargs_unless_default(eps=(layer.eps, 1e-5)),
    )
    return te.TorchOp(module=module, forward=te.Self((te.X,)), fresh=True)


def _broadcast(shape, t):
    """A (C,) tensor shaped to broadcast over NCHW (or NC as it is)."""
    return t if len(shape) == 1 else te.method(t, "view", -1, 1, 1)


def _layerscale(layer, shapes):
    """gamma of shape (C, 1, 1) on feature maps, as torchvision's ConvNeXt holds it."""
    gamma = te.call("nn.Parameter", te.call("torch.full", (shapes[0][-1], 1, 1), float(layer.init)))
    return te.TorchOp(
        module=te.call("nn.Module"),
        setup=(("gamma", gamma),),
        forward=te.BinOp("*", (te.X, te.Attr("gamma"))),
        fresh=True,
    )


def _normalize(layer, shapes):
    """Keras Normalization: (x - mean) / max(sqrt(variance), 1e-7), its mean, variance and
    sample count kept as buffers (they are state, not trained)."""
    c = shapes[0][-1]
    mean, variance = layer.values(c)
    setup = (
        ("mean", te.call("nn.Buffer", te.call("torch.tensor", mean))),
        ("variance", te.call("nn.Buffer", te.call("torch.tensor", variance))),
        ("count", te.call("nn.Buffer", te.call("torch.tensor", 0))),
    )
    std = te.method(te.method(te.Attr("variance"), "sqrt"), "clamp", min=1e-7)
    forward = te.BinOp(
        "/",
        (te.BinOp("-", (te.X, _broadcast(shapes[0], te.Attr("mean")))), _broadcast(shapes[0], std)),
    )
    return te.TorchOp(module=te.call("nn.Module"), setup=setup, forward=forward, fresh=True)


def _stochastic_depth(layer, shapes):
    """torchvision's StochasticDepth(p, "row"): a per-sample mask from Dropout on ones, which
    keeps with probability 1 - p and scales by 1 / (1 - p) in training, and is all ones (the
    product an identity) in eval."""
    if layer.rate == 0:
        return te.TorchOp(forward=te.X)
    ones = te.method(te.X, "new_ones", (te.method(te.X, "size", 0), *(1,) * len(shapes[0])))
    return te.TorchOp(
        module=te.call("nn.Dropout", layer.rate),
        forward=te.BinOp("*", (te.X, te.Self((ones,)))),
        fresh=True,
    )


def _channel_shuffle(layer, shapes):
    return te.TorchOp(
        module=te.call("nn.ChannelShuffle", layer.groups), forward=te.Self((te.X,)), fresh=True
    )


def _split(layer, shapes):
    start, stop = layer.channels(shapes[0][-1])
    return te.TorchOp(forward=te.Index(te.X, (slice(None), slice(start, stop))))


def _global_pool(layer, shapes):
    extra = {"keepdim": True} if layer.keepdims else {}
    return te.TorchOp(
        forward=te.method(te.X, "mean" if layer.op == "avg" else "amax", (2, 3), **extra)
    )


# Layer kind -> emitter. A new layer kind needs a row here (tests/test_architecture.py).
EMITTERS: dict[str, Emitter] = {
    "input": _passthrough,  # the argument of forward
    "conv": _conv,
    "dwconv": _dwconv,
    "sepconv": _sepconv,
    "deconv": _deconv,
    "dense": _dense,
    "flatten": _flatten,
    "reshape": _reshape,
    "dropout": _dropout,
    "activation": _activation,
    "identity": _passthrough,
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
    "detect": _detect,  # cnnspec/backends/torch/detect.py
    "crop": _crop,
}
