"""What a layer asks of PyTorch, as data: a module to construct and a forward expression.

Each layer kind's emitter (the table in cnnspec/backends/torch/emitters.py) returns a `TorchOp`
made of the small expression trees below. The torch backend reads the same tree twice: `render`
prints it as Python source for `cnnspec build`, and cnnspec.backends.torch evaluates it to build
the module at run time, so the generated file and the runtime model cannot drift apart.

This module imports no framework. Names such as "nn.Conv2d" or "F.relu" are resolved against
`torch.nn` / `torch.nn.functional` / `torch` by the backend; they come only from the emitters,
never from a spec.

Layout: the torch tensors are NCHW (feature maps) or NC (vectors); the IR's shapes are HWC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from . import pysource


class Expr:
    """A node of a forward expression."""


@dataclass(frozen=True)
class In(Expr):
    """The i-th input tensor of the layer."""

    index: int = 0


@dataclass(frozen=True)
class Self(Expr):
    """The layer's own module, called on `args`."""

    args: tuple = ()


@dataclass(frozen=True)
class Call(Expr):
    """fn(*args, **kwargs), fn a dotted name under torch, nn or F."""

    fn: str
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Method(Expr):
    """obj.name(*args, **kwargs)."""

    obj: Any
    name: str
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Index(Expr):
    """obj[items], items a tuple of slices, ints or Ellipsis."""

    obj: Any
    items: tuple


@dataclass(frozen=True)
class BinOp(Expr):
    """operands joined by op ('+', '*', '/'), left to right."""

    op: str
    operands: tuple


@dataclass(frozen=True)
class TorchOp:
    """A layer in PyTorch: the module it owns (or None) and what forward computes.

    `setup` lists attributes set on the module after construction (a BatchNorm that learns
    only its offset gets `bias = nn.Parameter(...)`). `fresh`: forward returns a new tensor
    that its own backward does not need (conv, batch norm, add...), so the next layer may
    overwrite it; `inplace`: a forward doing that (an activation as torchvision's
    ReLU(inplace=True)), used by the backend only where the input is fresh and read once.
    """

    forward: Any
    module: Call | None = None
    setup: tuple[tuple[str, Call], ...] = field(default=())
    fresh: bool = False
    inplace: Any = None


@dataclass(frozen=True)
class Var(Expr):
    """A name of the generated source standing for a constant (a block class's constructor
    argument); only rendered, never evaluated."""

    name: str


@dataclass(frozen=True)
class Attr(Expr):
    """An attribute of the layer's own module (a parameter or buffer its `setup` made), read
    rather than called: layer scale's `x * self.gamma`."""

    name: str


X = In(0)


def call(fn: str, *args, **kwargs) -> Call:
    return Call(fn, tuple(args), tuple(kwargs.items()))


def method(obj, name: str, *args, **kwargs) -> Method:
    return Method(obj, name, tuple(args), tuple(kwargs.items()))


def one(pair):
    """(3, 3) -> 3, the way torch code is written by hand; (3, 1) stays a pair."""
    return pair[0] if pair[0] == pair[1] else tuple(pair)


def kwargs_unless_default(**pairs) -> dict:
    """Keep an argument only where it differs from torch's default: `name=(value, default)`."""
    return {k: v for k, (v, default) in pairs.items() if v != default}


# --- Shared pieces of the emitters --------------------------------------------------------

_ACTIVATIONS = {
    "relu": ("F.relu", {}),
    "relu6": ("F.relu6", {}),
    "sigmoid": ("torch.sigmoid", {}),
    "tanh": ("torch.tanh", {}),
    "silu": ("F.silu", {}),
    "gelu": ("F.gelu", {}),
    "hard_swish": ("F.hardswish", {}),
    "hard_sigmoid": ("F.hardsigmoid", {}),
    # softmax over the channels: dim 1 in NCHW and in NC alike
    "softmax": ("F.softmax", {"dim": 1}),
}


_INPLACE = {"relu", "relu6", "silu", "hard_swish", "hard_sigmoid", "leaky_relu", "elu"}


def activation(fn: str | None, x, alpha: float | None = None, inplace: bool = False):
    """The expression applying activation `fn` to x (x itself for None / linear).

    inplace=True overwrites x where torch can (relu, relu6, silu, ...): only for an x that
    nothing else reads and whose backward does not need it (a conv's fresh output)."""
    if fn is None or fn == "linear":
        return x
    extra = (("inplace", True),) if inplace and fn in _INPLACE else ()
    if fn == "leaky_relu":
        return Call("F.leaky_relu", (x, 0.01 if alpha is None else alpha), extra)
    if fn == "elu":
        return Call("F.elu", (x, 1.0 if alpha is None else alpha), extra)
    name, kwargs = _ACTIVATIONS[fn]
    return Call(name, (x,), tuple(kwargs.items()) + extra)


def can_overwrite(fn: str | None) -> bool:
    return fn in _INPLACE


def same_pads_2d(shape, kernel, stride, dilation=(1, 1)) -> tuple[tuple[int, int], ...]:
    """TensorFlow's 'same' pads per axis, (before, after): the odd pixel goes after."""
    from ..layers.base import same_pads

    return tuple(same_pads(shape[i], kernel[i], stride[i], dilation[i]) for i in (0, 1))


def window_padding(padding, shape, kernel, stride, dilation=(1, 1)):
    """torch `padding=` and an explicit F.pad tuple (or None) reproducing the spec's padding.

    'same' with equal pads on both sides of each axis is torch's own symmetric padding (no
    overhead); uneven pads (stride 2 on an even size, say) need F.pad first, bottom/right extra,
    as TensorFlow does, then padding 0.
    """
    if padding == "valid":
        return 0, None
    if padding != "same":
        return one(padding), None
    (top, bottom), (left, right) = same_pads_2d(shape, kernel, stride, dilation)
    if top == bottom and left == right:
        return one((top, left)), None
    return 0, (left, right, top, bottom)


def pad(x, pads, value: float | None = None):
    if pads is None:
        return x
    return (
        call("F.pad", x, tuple(pads))
        if value is None
        else call("F.pad", x, tuple(pads), value=value)
    )


# --- Rendering as Python source -------------------------------------------------------------


def literal(value) -> str:
    """Python source for a constant; strings are escaped, never pasted."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return 'float("inf")' if value > 0 else 'float("-inf")'
        if math.isnan(value):
            raise ValueError("NaN has no place in a generated model")
        return repr(value)
    if isinstance(value, str):
        return pysource.string(value)
    raise TypeError(f"no literal for {value!r}")


def render(expr, inputs: list[str], module: str | None = None) -> str:
    """Python source of `expr` on one line, input i written as inputs[i], Self as a call of
    `module`."""
    return pysource.flat(layout(expr, inputs, module))


def layout(expr, inputs: list[str], module: str | None = None):
    """`expr` as a pysource tree, which lays it out within the line width."""

    def r(e):
        if isinstance(e, In):
            return inputs[e.index]
        if isinstance(e, Var):
            return e.name
        if isinstance(e, Self):
            return pysource.call(module, *(r(a) for a in e.args))
        if isinstance(e, Attr):
            return f"{module}.{e.name}"
        if isinstance(e, Call):
            return pysource.call(e.fn, *_args(e.args, e.kwargs))
        if isinstance(e, Method):
            return pysource.call(
                pysource.Cat((_atom(e.obj), f".{e.name}")), *_args(e.args, e.kwargs)
            )
        if isinstance(e, Index):
            return pysource.Group(_atom(e.obj), "[", tuple(_item(i) for i in e.items), "]")
        if isinstance(e, BinOp):
            return pysource.Op(
                e.op,
                tuple(
                    _atom(o) if isinstance(o, BinOp) and o.op != e.op else r(o) for o in e.operands
                ),
            )
        if isinstance(e, list):
            return pysource.Group(None, "[", tuple(r(v) for v in e), "]")
        if isinstance(e, tuple):
            return pysource.tuple_of(r(v) for v in e)
        return literal(e)

    def _atom(e):
        doc = r(e)
        return pysource.Group(None, "(", (doc,), ")") if isinstance(e, BinOp) else doc

    def _args(args, kwargs) -> list:
        return [*(r(a) for a in args), *(pysource.kwarg(k, r(v)) for k, v in kwargs)]

    def _item(i) -> str:
        if i is Ellipsis:
            return "..."
        if isinstance(i, slice):
            parts = ["" if i.start is None else str(i.start), "" if i.stop is None else str(i.stop)]
            return ":".join(parts) + ("" if i.step is None else f":{i.step}")
        return pysource.flat(r(i))

    return r(expr)


def namespaces(expr) -> set[str]:
    """The top-level names an expression uses ('torch', 'nn', 'F'), for the imports."""
    found: set[str] = set()

    def walk(e):
        if isinstance(e, Call):
            found.add(e.fn.split(".")[0])
            children = [*e.args, *(v for _, v in e.kwargs)]
        elif isinstance(e, Method):
            children = [e.obj, *e.args, *(v for _, v in e.kwargs)]
        elif isinstance(e, Index):
            children = [e.obj]
        elif isinstance(e, (BinOp,)):
            children = list(e.operands)
        elif isinstance(e, Self):
            children = list(e.args)
        elif isinstance(e, (list, tuple)):
            children = list(e)
        else:
            children = []
        for c in children:
            walk(c)

    walk(expr)
    return found
