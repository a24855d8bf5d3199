"""Convolutions: standard (grouped, dilated), depthwise, separable and transposed.

Parameters follow the course: a conv of K filters FxF over D channels has F*F*D*K weights plus
K biases (D/groups per filter when grouped). MACs are H_out*W_out*K*F*F*D/groups per sample.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from .base import (
    Layer,
    NonNegPair,
    OptActivation,
    Padding,
    Pair,
    Pos,
    Shape,
    ShapeError,
    check_positive,
    fmt_int,
    fmt_shape,
    need_image,
    register,
    window_out,
)

_PAD_FLAGS = {"same": {"padding": "same"}, "valid": {"padding": "valid"}, "nobias": {"bias": False}}


class _Windowed(Layer):
    """Shared by the kinds that slide a window: output size per axis by the course's formula."""

    def _spatial(self, shape: Shape, what: str) -> tuple[int, int]:
        h, w = (
            window_out(
                shape[i],
                self.kernel[i],
                self.stride[i],
                self.padding,
                getattr(self, "dilation", (1, 1))[i],
                axis=i,
            )[0]
            for i in (0, 1)
        )
        check_positive((h, w), what, shape)
        return h, w

    def _explain_spatial(self, shape: Shape) -> list[str]:
        lines = []
        for i, axis in ((0, "height"), (1, "width")):
            if (
                i == 1
                and shape[0] == shape[1]
                and self.kernel[0] == self.kernel[1]
                and self.stride[0] == self.stride[1]
            ):
                break
            _, formula = window_out(
                shape[i],
                self.kernel[i],
                self.stride[i],
                self.padding,
                getattr(self, "dilation", (1, 1))[i],
                axis=i,
            )
            lines.append(f"{axis}: {formula}" if i or shape[0] != shape[1] else formula)
        return lines


@register
class Conv(_Windowed):
    kind: Literal["conv"] = "conv"
    filters: Pos
    kernel: Pair
    stride: Pair = (1, 1)
    padding: Padding = "valid"
    dilation: Pair = (1, 1)
    groups: Pos = 1
    bias: bool = True
    activation: OptActivation = None

    keywords = {"conv": {}, "conv2d": {}}
    positional = ("filters", "kernel", "stride")
    flags = _PAD_FLAGS
    kind_doc = (
        "conv K FxF [stride=S] [same|valid|padding=P] [dilation=D] [groups=G] [bias=false] [act]"
    )

    def output_shape(self, shapes):
        shape = need_image(shapes, "conv")
        if shape[2] % self.groups or self.filters % self.groups:
            raise ShapeError(
                f"groups={self.groups} must divide both the input channels ({shape[2]}) and the "
                f"filters ({self.filters})",
                code="E303",
            )
        return (*self._spatial(shape, f"conv {self.kernel[0]}x{self.kernel[1]}"), self.filters)

    def count_params(self, shapes):
        d = shapes[0][2] // self.groups
        return (self.kernel[0] * self.kernel[1] * d * self.filters + self.filters * self.bias, 0)

    def count_macs(self, shapes, out):
        d = shapes[0][2] // self.groups
        return out[0] * out[1] * self.filters * self.kernel[0] * self.kernel[1] * d

    def explain(self, shapes, out):
        f0, f1 = self.kernel
        d = shapes[0][2]
        dg = f"{d}/{self.groups}" if self.groups > 1 else f"{d}"
        bias = f" + {self.filters}" if self.bias else ""
        p, _ = self.count_params(shapes)
        return [
            *self._explain_spatial(shapes[0]),
            f"params: {f0}*{f1}*{dg}*{self.filters}{bias} = {fmt_int(p)}",
            (
                f"MACs: {out[0]}*{out[1]}*{self.filters}*{f0}*{f1}*{dg} = "
                f"{fmt_int(self.count_macs(shapes, out))}"
            ),
        ]


@register
class DepthwiseConv(_Windowed):
    kind: Literal["dwconv"] = "dwconv"
    kernel: Pair
    stride: Pair = (1, 1)
    padding: Padding = "valid"
    dilation: Pair = (1, 1)
    multiplier: Pos = 1
    bias: bool = True
    activation: OptActivation = None

    keywords = {"dwconv": {}, "depthwise": {}}
    positional = ("kernel", "stride")
    flags = _PAD_FLAGS
    kind_doc = "dwconv FxF [stride=S] [same|valid] [multiplier=M] [bias=false] [act]"

    def output_shape(self, shapes):
        shape = need_image(shapes, "dwconv")
        return (*self._spatial(shape, "dwconv"), shape[2] * self.multiplier)

    def count_params(self, shapes):
        out_c = shapes[0][2] * self.multiplier
        return (self.kernel[0] * self.kernel[1] * out_c + out_c * self.bias, 0)

    def count_macs(self, shapes, out):
        return out[0] * out[1] * out[2] * self.kernel[0] * self.kernel[1]

    def explain(self, shapes, out):
        f0, f1 = self.kernel
        c = out[2]
        bias = f" + {c}" if self.bias else ""
        return [
            *self._explain_spatial(shapes[0]),
            f"params: {f0}*{f1}*{c}{bias} = {fmt_int(self.count_params(shapes)[0])}",
            f"MACs: {out[0]}*{out[1]}*{c}*{f0}*{f1} = {fmt_int(self.count_macs(shapes, out))}",
        ]


@register
class SeparableConv(_Windowed):
    """Depthwise FxF then pointwise 1x1 to K filters (Keras SeparableConv2D, one bias)."""

    kind: Literal["sepconv"] = "sepconv"
    filters: Pos
    kernel: Pair
    stride: Pair = (1, 1)
    padding: Padding = "valid"
    dilation: Pair = (1, 1)
    multiplier: Pos = 1
    bias: bool = True
    activation: OptActivation = None

    keywords = {"sepconv": {}, "separable": {}}
    positional = ("filters", "kernel", "stride")
    flags = _PAD_FLAGS
    kind_doc = "sepconv K FxF [stride=S] [same|valid] [multiplier=M] [bias=false] [act]"

    def output_shape(self, shapes):
        shape = need_image(shapes, "sepconv")
        return (*self._spatial(shape, "sepconv"), self.filters)

    def count_params(self, shapes):
        mid = shapes[0][2] * self.multiplier
        return (
            self.kernel[0] * self.kernel[1] * mid + mid * self.filters + self.filters * self.bias,
            0,
        )

    def count_macs(self, shapes, out):
        mid = shapes[0][2] * self.multiplier
        return out[0] * out[1] * mid * (self.kernel[0] * self.kernel[1] + self.filters)

    def explain(self, shapes, out):
        f0, f1 = self.kernel
        mid = shapes[0][2] * self.multiplier
        bias = f" + {self.filters}" if self.bias else ""
        return [
            *self._explain_spatial(shapes[0]),
            (
                f"params: {f0}*{f1}*{mid} + {mid}*{self.filters}{bias} = "
                f"{fmt_int(self.count_params(shapes)[0])}"
            ),
            (
                f"MACs: {out[0]}*{out[1]}*{mid}*({f0}*{f1} + {self.filters}) = "
                f"{fmt_int(self.count_macs(shapes, out))}"
            ),
        ]


@register
class ConvTranspose(Layer):
    """Transposed conv: out = (W - 1)*S - 2P + F + output_padding; 'same' gives W*S."""

    kind: Literal["deconv"] = "deconv"
    filters: Pos
    kernel: Pair
    stride: Pair = (1, 1)
    padding: Padding = "valid"
    output_padding: NonNegPair = (0, 0)
    bias: bool = True
    activation: OptActivation = None

    keywords = {"deconv": {}, "convt": {}, "conv_transpose": {}, "upconv": {}}
    positional = ("filters", "kernel", "stride")
    flags = _PAD_FLAGS
    kind_doc = "deconv K FxF [stride=S] [same|valid|padding=P] [output_padding=O] [act]"

    @model_validator(mode="after")
    def _check(self):
        if any(o >= s for o, s in zip(self.output_padding, self.stride)):
            raise ValueError("output_padding must be smaller than the stride")
        return self

    def _size(self, size: int, i: int) -> tuple[int, str]:
        f, s, op = self.kernel[i], self.stride[i], self.output_padding[i]
        if self.padding == "same":
            return size * s, f"{size} * {s} = {size * s}"
        p = 0 if self.padding == "valid" else self.padding[i]
        out = (size - 1) * s - 2 * p + f + op
        extra = f" + {op}" if op else ""
        return out, f"({size} - 1)*{s} - 2*{p} + {f}{extra} = {out}"

    def output_shape(self, shapes):
        shape = need_image(shapes, "deconv")
        hw = tuple(self._size(shape[i], i)[0] for i in (0, 1))
        check_positive(hw, "deconv", shape)
        return (*hw, self.filters)

    def count_params(self, shapes):
        return (
            self.kernel[0] * self.kernel[1] * shapes[0][2] * self.filters
            + self.filters * self.bias,
            0,
        )

    def count_macs(self, shapes, out):
        h, w, d = shapes[0]
        return h * w * d * self.kernel[0] * self.kernel[1] * self.filters

    def explain(self, shapes, out):
        h, w, d = shapes[0]
        f0, f1 = self.kernel
        bias = f" + {self.filters}" if self.bias else ""
        return [
            f"height: {self._size(h, 0)[1]}",
            f"width: {self._size(w, 1)[1]}",
            (
                f"params: {f0}*{f1}*{d}*{self.filters}{bias} = "
                f"{fmt_int(self.count_params(shapes)[0])}"
            ),
            (
                f"MACs: {h}*{w}*{d}*{f0}*{f1}*{self.filters} = "
                f"{fmt_int(self.count_macs(shapes, out))}"
            ),
            f"(input {fmt_shape(shapes[0])}: each input pixel is spread over an FxF window)",
        ]
