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
from .. import missing_emitter
from .. import torch_emit as te

Emitter = Callable[[Layer, list[Shape]], te.TorchOp]


def torch_op(layer: Layer, shapes: list[Shape], span=None,
             path: str | None = None) -> te.TorchOp:
    """The layer in PyTorch; E420 (at `span`, an IR node's) where its kind has no emitter."""
    emit = EMITTERS.get(layer.kind)
    if emit is None:
        raise missing_emitter("torch", layer.kind, "cnnspec/backends/torch/emitters.py", span,
                              path)
    return emit(layer, shapes)


def _passthrough(layer, shapes):
    return te.TorchOp(forward=te.X)


def _windowed_conv(shape, in_c: int, out_c: int, groups: int, kernel, stride, padding,
                   dilation, bias: bool, act: str | None) -> te.TorchOp:
    """nn.Conv2d for conv and dwconv, with TensorFlow's 'same' (F.pad first where uneven)."""
    torch_padding, pads = te.window_padding(padding, shape, kernel, stride, dilation)
    module = te.call("nn.Conv2d", in_c, out_c, kernel_size=te.one(kernel),
                     **te.kwargs_unless_default(
                         stride=(te.one(stride), 1), padding=(torch_padding, 0),
                         dilation=(te.one(dilation), 1), groups=(groups, 1), bias=(bias, True)))
    # the conv's output is fresh: its activation may overwrite it (torchvision's inplace=True)
    forward = te.activation(act, te.Self((te.pad(te.X, pads),)), inplace=True)
    return te.TorchOp(module=module, forward=forward, fresh=act is None)


def _conv(layer, shapes):
    return _windowed_conv(shapes[0], shapes[0][2], layer.filters, layer.groups, layer.kernel,
                          layer.stride, layer.padding, layer.dilation, layer.bias,
                          layer.activation)


def _dwconv(layer, shapes):
    c = shapes[0][2]
    return _windowed_conv(shapes[0], c, c * layer.multiplier, c, layer.kernel, layer.stride,
                          layer.padding, layer.dilation, layer.bias, layer.activation)


def _sepconv(layer, shapes):
    """Keras SeparableConv2D: depthwise (no bias), pointwise, then the one bias."""
    c = shapes[0][2]
    mid = c * layer.multiplier
    dw = _windowed_conv(shapes[0], c, mid, c, layer.kernel, layer.stride, layer.padding,
                        layer.dilation, False, None)
    pw = te.call("nn.Conv2d", mid, layer.filters, kernel_size=1,
                 **te.kwargs_unless_default(bias=(layer.bias, True)))
    seq = te.call("nn.Sequential", dw.module, pw)
    return te.TorchOp(module=seq, forward=te.activation(layer.activation, dw.forward,
                                                       inplace=True),
                      fresh=layer.activation is None)


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
    module = te.call("nn.ConvTranspose2d", c, layer.filters, kernel_size=te.one(layer.kernel),
                     **te.kwargs_unless_default(
                         stride=(te.one(layer.stride), 1), padding=(te.one(padding), 0),
                         output_padding=(te.one(out_pad), 0), bias=(layer.bias, True)))
    y = te.Self((te.X,))
    if crop:
        full = slice(None)
        y = te.Index(y, (full, full, slice(None, h * layer.stride[0]),
                         slice(None, w * layer.stride[1])))
    return te.TorchOp(module=module, forward=te.activation(layer.activation, y,
                                                          inplace=not crop),
                      fresh=layer.activation is None and not crop)


def _dense(layer, shapes):
    module = te.call("nn.Linear", shapes[0][0], layer.units,
                     **te.kwargs_unless_default(bias=(layer.bias, True)))
    return te.TorchOp(module=module, forward=te.activation(layer.activation, te.Self((te.X,)),
                                                          inplace=True),
                      fresh=layer.activation is None)


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
    inplace = te.activation(layer.fn, te.X, layer.alpha, inplace=True) \
        if te.can_overwrite(layer.fn) else None
    return te.TorchOp(forward=te.activation(layer.fn, te.X, layer.alpha), inplace=inplace)


def _rescale(layer, shapes):
    x = te.X if layer.scale == 1 else te.BinOp("*", (te.X, float(layer.scale)))
    x = x if layer.offset == 0 else te.BinOp("+", (x, float(layer.offset)))
    return te.TorchOp(forward=x)


def _zeropad(layer, shapes):
    t, b, l, r = layer.padding
    return te.TorchOp(forward=te.pad(te.X, (l, r, t, b)))


def _upsample(layer, shapes):
    # half-pixel centres, as Keras: align_corners=False
    extra = {"align_corners": False} if layer.mode == "bilinear" else {}
    return te.TorchOp(forward=te.call("F.interpolate", te.X, scale_factor=te.one(layer.factor),
                                      mode=layer.mode, **extra))


def _merge(layer, shapes):
    """add and multiply broadcast a (N, C, 1, 1) gate over (N, C, H, W); concat joins the
    channels, dim 1 of NCHW and of NC."""
    xs = tuple(te.In(i) for i in range(len(shapes)))
    if layer.op == "concat":
        return te.TorchOp(forward=te.call("torch.cat", list(xs), 1), fresh=True)
    inplace = None
    if layer.op == "add" and tuple(shapes[0]) == tuple(layer.output_shape(shapes)):
        inplace = xs[0]                  # torchvision's `out += identity`
        for x in xs[1:]:
            inplace = te.method(inplace, "add_", x)
    # a product is not fresh: multiply's backward reads its inputs
    return te.TorchOp(forward=te.BinOp("+" if layer.op == "add" else "*", xs),
                      fresh=layer.op == "add", inplace=inplace)


def _bn(layer, shapes):
    """torch's momentum is the weight of the new batch: 1 - the spec's (Keras') momentum.
    scale and center apart: affine=False plus the one parameter, which F.batch_norm takes
    alone (weight=None, bias=tensor)."""
    c = shapes[0][-1]
    cls = "nn.BatchNorm2d" if len(shapes[0]) == 3 else "nn.BatchNorm1d"
    momentum = float(f"{1 - layer.momentum:.12g}")
    both = layer.scale and layer.center
    module = te.call(cls, c, **te.kwargs_unless_default(
        eps=(layer.eps, 1e-5), momentum=(momentum, 0.1), affine=(both, True)))
    setup = ()
    if layer.scale != layer.center:
        name, init = ("weight", "torch.ones") if layer.scale else ("bias", "torch.zeros")
        setup = ((name, te.call("nn.Parameter", te.call(init, c))),)
    return te.TorchOp(module=module, forward=te.Self((te.X,)), setup=setup, fresh=True)


def _lrn(layer, shapes):
    module = te.call("nn.LocalResponseNorm", layer.size, **te.kwargs_unless_default(
        alpha=(layer.alpha, 1e-4), beta=(layer.beta, 0.75), k=(layer.k, 1.0)))
    return te.TorchOp(module=module, forward=te.Self((te.X,)))


def _pool(layer, shapes):
    """'same' as TensorFlow: max pads with -inf, average never counts the padding. Uneven
    'same' average pooling divides the zero-padded sum by the pooled mask of real pixels."""
    k, s = te.one(layer.size), te.one(layer.strides)
    padding, pads = te.window_padding(layer.padding, shapes[0], layer.size, layer.strides)
    if layer.op == "avg" and pads is not None:
        mask = te.call("torch.ones_like", te.Index(te.X, (slice(None), slice(None, 1))))
        pooled = [te.call("F.avg_pool2d", te.pad(x, pads), k, s) for x in (te.X, mask)]
        return te.TorchOp(forward=te.BinOp("/", tuple(pooled)))
    cls = "nn.MaxPool2d" if layer.op == "max" else "nn.AvgPool2d"
    extra = {"count_include_pad": False} if layer.op == "avg" and padding != 0 else {}
    module = te.call(cls, k, **te.kwargs_unless_default(
        stride=(s, k), padding=(padding, 0),
        ceil_mode=(layer.ceil and layer.padding != "same", False)), **extra)
    return te.TorchOp(module=module, forward=te.Self((te.pad(te.X, pads, value=float("-inf")),)),
                      fresh=True)


def _global_pool(layer, shapes):
    extra = {"keepdim": True} if layer.keepdims else {}
    return te.TorchOp(forward=te.method(te.X, "mean" if layer.op == "avg" else "amax", (2, 3),
                                        **extra))


# Layer kind -> emitter. A new layer kind needs a row here (tests/test_architecture.py).
EMITTERS: dict[str, Emitter] = {
    "input": _passthrough,          # the argument of forward
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
    "zeropad": _zeropad,
    "upsample": _upsample,
    "merge": _merge,
    "bn": _bn,
    "lrn": _lrn,
    "pool": _pool,
    "global_pool": _global_pool,
}
