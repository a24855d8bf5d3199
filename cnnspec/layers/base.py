"""The layer registry: each layer kind is declared once, as a pydantic model with its rules.

A layer class lists its arguments as typed fields and carries four pure rules:
    output_shape(shapes) -> shape            the tensor it makes, or a ShapeError
    count_params(shapes) -> (trainable, non_trainable)
    count_macs(shapes, out) -> int           multiply-accumulates per sample
    explain(shapes, out) -> list[str]        the arithmetic behind the three, for students

Shapes exclude the batch: (height, width, channels) for feature maps, (features,) for vectors.
A MAC is one multiply-accumulate of a weight with an input value, per sample; only conv
(every kind) and dense layers have them, bias additions are not counted (torchinfo and ptflops
count them, fvcore adds pooling and batch norm, so counters differ by a few percent).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Shape = tuple[int, ...]

ACTIVATIONS = (
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "sigmoid",
    "tanh",
    "softmax",
    "silu",
    "gelu",
    "hard_swish",
    "hard_sigmoid",
    "linear",
)
ACTIVATION_ALIASES = {
    "swish": "silu",
    "hswish": "hard_swish",
    "hsigmoid": "hard_sigmoid",
    "leakyrelu": "leaky_relu",
    "lrelu": "leaky_relu",
}


class ShapeError(Exception):
    """Raised by a shape rule; the compiler adds the location and the code."""

    def __init__(self, message: str, hint: str | None = None, code: str = "E301"):
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code


def _pair(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return (value[0], value[0])
    return value


def _activation(value: Any) -> Any:
    if isinstance(value, str):
        value = ACTIVATION_ALIASES.get(value, value)
        if value in ("none", "linear"):
            return None
    return value


Pos = Annotated[int, Field(ge=1)]
Pair = Annotated[tuple[Pos, Pos], BeforeValidator(_pair)]
NonNegPair = Annotated[
    tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]], BeforeValidator(_pair)
]
ActivationName = Literal[ACTIVATIONS]  # type: ignore[valid-type]
OptActivation = Annotated[ActivationName | None, BeforeValidator(_activation)]
Padding = Literal["same", "valid"] | NonNegPair


class Layer(BaseModel):
    """Base of every layer kind. Subclasses set `kind` as a Literal and the ClassVars below."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    keywords: ClassVar[dict[str, dict]] = {}  # spec keyword -> preset fields
    positional: ClassVar[tuple[str, ...]] = ()  # fields filled by bare numbers, in order
    flags: ClassVar[dict[str, dict]] = {}  # bare word -> field values
    takes_refs: ClassVar[bool] = False  # bare words name input tensors (merges)
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int] = 1
    kind_doc: ClassVar[str] = ""
    internal: ClassVar[bool] = False  # made by the compiler, not written by users

    def output_shape(self, shapes: list[Shape]) -> Shape:
        return shapes[0]

    def count_params(self, shapes: list[Shape]) -> tuple[int, int]:
        return (0, 0)

    def count_macs(self, shapes: list[Shape], out: Shape) -> int:
        return 0

    def explain(self, shapes: list[Shape], out: Shape) -> list[str]:
        return []

    def args(self) -> dict:
        """The arguments that differ from the defaults (what a canonical printer writes)."""
        return self.model_dump(exclude_defaults=True, exclude={"kind"})


REGISTRY: dict[str, type[Layer]] = {}  # kind -> class
KEYWORDS: dict[str, tuple[type[Layer], dict]] = {}  # spec keyword -> (class, preset)


def register(cls: type[Layer]) -> type[Layer]:
    kind = cls.model_fields["kind"].default
    REGISTRY[kind] = cls
    words = {} if cls.internal else (cls.keywords or {kind: {}})
    for word, preset in words.items():
        if word in KEYWORDS:
            raise RuntimeError(f"layer keyword {word!r} registered twice")
        KEYWORDS[word] = (cls, preset)
    return cls


# --- Shape arithmetic shared by the rules (pure integer functions) -------------------------


def need_image(shapes: list[Shape], what: str) -> Shape:
    shape = shapes[0]
    if len(shape) != 3:
        raise ShapeError(
            f"{what} needs a feature map (height x width x channels), got a vector of "
            f"{fmt_shape(shape)}",
            hint="spatial layers come before flatten / global pooling",
            code="E302",
        )
    return shape


def conv_size(
    size: int, kernel: int, stride: int, pad_total: int, dilation: int = 1, ceil: bool = False
) -> int:
    """Output size of a convolution or pooling window along one axis.

    >>> conv_size(224, 3, 1, 2)      # (224 - 3 + 2*1) / 1 + 1
    224
    >>> conv_size(224, 7, 2, 6)      # (224 - 7 + 2*3) / 2 + 1, floored
    112
    >>> conv_size(10, 2, 3, 2, ceil=True)   # ceil(10/3) + 1 = 5, but window 5 starts in padding
    4
    """
    span = dilation * (kernel - 1) + 1
    num = size + pad_total - span
    if num < 0:
        return 0
    out = (-(-num // stride) if ceil else num // stride) + 1
    # torch (pooling_output_shape): with ceil_mode the last window must start inside the input
    # or its left padding, otherwise it is dropped.
    if ceil and (out - 1) * stride >= size + pad_total // 2:
        out -= 1
    return out


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """Keras/TensorFlow 'same': output ceil(size / stride); the odd pixel goes bottom/right.

    >>> same_pads(224, 3, 2)
    (0, 1)
    >>> same_pads(224, 3, 1)
    (1, 1)
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def window_out(
    size: int,
    kernel: int,
    stride: int,
    padding,
    dilation: int = 1,
    axis: int = 0,
    ceil: bool = False,
) -> tuple[int, str]:
    """Output size along one axis, and the formula with the numbers put in."""
    k = kernel if dilation == 1 else f"{dilation}*({kernel}-1)+1"
    if padding == "same":
        out = -(-size // stride)
        lo, hi = same_pads(size, kernel, stride, dilation)
        pads = f"2*{lo}" if lo == hi else f"{lo}+{hi}"
        ceil_note = f" (floored), = ceil({size} / {stride})" if stride > 1 else ""
        return out, f"same: ({size} - {k} + {pads}) / {stride} + 1 = {out}{ceil_note}"
    pad = 0 if padding == "valid" else padding[axis]
    out = conv_size(size, kernel, stride, 2 * pad, dilation, ceil)
    exact = (size + 2 * pad - (dilation * (kernel - 1) + 1)) % stride == 0
    rounding = "" if exact else (" (rounded up)" if ceil else " (floored)")
    return out, f"({size} - {k} + 2*{pad}) / {stride} + 1 = {out}{rounding}"


def check_positive(out: Shape, what: str, inp: Shape) -> Shape:
    if any(d <= 0 for d in out):
        raise ShapeError(
            f"{what} on a {fmt_shape(inp)} tensor gives a {fmt_shape(out)} output",
            hint="the window is larger than its input: use 'same' padding, a smaller window or "
            "stride, fewer downsampling stages, or a larger input",
        )
    return out


def fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def fmt_int(n: int) -> str:
    return f"{n:,}"


def prod(values) -> int:
    return math.prod(values)
