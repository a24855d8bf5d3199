"""Normalisation: batch, layer, group and local response norm, layer scale, and the
per-channel standardisation of an input (Keras Normalization)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from .base import Layer, ShapeError, fmt_int, need_image, register


@register
class BatchNorm(Layer):
    """Batch norm over the channels (the last axis).

    Parameters: C for gamma (scale) and C for beta (center), trainable; C running means and C
    running variances, not trainable. So trainable = torch `parameters()`, and trainable plus
    non-trainable = Keras `count_params()`. `momentum` is Keras' sense: the running statistics
    keep that fraction of their old value at each step (torch's momentum is 1 - this).
    """

    kind: Literal["bn"] = "bn"
    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scale: bool = True
    center: bool = True

    keywords = {"bn": {}, "batchnorm": {}, "batch_norm": {}}
    flags = {"noscale": {"scale": False}, "nocenter": {"center": False}}
    kind_doc = "bn [eps=1e-5] [momentum=0.9] [scale=false] [center=false]"

    def count_params(self, shapes):
        c = shapes[0][-1]
        return (c * (self.scale + self.center), 2 * c)

    def explain(self, shapes, out):
        c = shapes[0][-1]
        k = int(self.scale) + int(self.center)
        t, n = self.count_params(shapes)
        return [
            (
                f"params: {k}*{c} trainable (gamma, beta) = {fmt_int(t)}, "
                f"2*{c} non-trainable (running mean, variance) = {fmt_int(n)}"
            )
        ]


@register
class LocalResponseNorm(Layer):
    """AlexNet / GoogLeNet LRN across channels: b = a / (k + alpha/n * sum a^2)^beta (torch's)."""

    kind: Literal["lrn"] = "lrn"
    size: int = Field(5, ge=1)
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0

    keywords = {"lrn": {}}
    positional = ("size",)
    kind_doc = "lrn [size=5] [alpha=1e-4] [beta=0.75] [k=1]"

    def output_shape(self, shapes):
        return need_image(shapes, "lrn")


def _channels(shapes) -> int:
    return shapes[0][-1]


@register
class LayerNorm(Layer):
    """Layer norm over the channels of each pixel (the last axis), as ConvNeXt uses it: torch
    LayerNorm(C) on NHWC, Keras LayerNormalization(axis=-1).

    y = (x - mean_c(x)) / sqrt(var_c(x) + eps) * gamma + beta, the mean and (biased) variance
    taken over the C channels of one pixel. Parameters: C gamma and C beta, trainable; no
    running statistics. eps defaults to torch's 1e-5 (Keras' is 1e-3, ConvNeXt's 1e-6).
    """

    kind: Literal["layernorm"] = "layernorm"
    eps: float = Field(1e-5, gt=0)
    scale: bool = True
    center: bool = True

    keywords = {"layernorm": {}, "layer_norm": {}, "ln": {}}
    flags = {"noscale": {"scale": False}, "nocenter": {"center": False}}
    kind_doc = "layernorm [eps=1e-5] [noscale] [nocenter]"

    def count_params(self, shapes):
        return (_channels(shapes) * (self.scale + self.center), 0)

    def explain(self, shapes, out):
        c = _channels(shapes)
        k = int(self.scale) + int(self.center)
        return [
            f"normalised over the {c} channels of each position (no running statistics)",
            f"params: {k}*{c} trainable (gamma, beta) = {fmt_int(k * c)}",
        ]


@register
class GroupNorm(Layer):
    """Group norm (Wu & He, 2018): the C channels in G groups, each group normalised over its
    channels and the whole height and width of one sample; torch GroupNorm(G, C), Keras
    GroupNormalization(G). Parameters: C gamma and C beta, trainable."""

    kind: Literal["groupnorm"] = "groupnorm"
    groups: int = Field(ge=1)
    eps: float = Field(1e-5, gt=0)

    keywords = {"groupnorm": {}, "group_norm": {}, "gn": {}}
    positional = ("groups",)
    kind_doc = "groupnorm G [eps=1e-5]"

    def output_shape(self, shapes):
        shape = need_image(shapes, "groupnorm")
        if shape[2] % self.groups:
            raise ShapeError(
                f"groupnorm {self.groups}: {shape[2]} channels do not split into "
                f"{self.groups} equal groups",
                hint="choose a number of groups that divides the channels",
                code="E313",
            )
        return shape

    def count_params(self, shapes):
        return (2 * _channels(shapes), 0)

    def explain(self, shapes, out):
        c = _channels(shapes)
        return [
            (
                f"{self.groups} groups of {c // self.groups} channels, each normalised over "
                "its channels, height and width"
            ),
            f"params: 2*{c} trainable (gamma, beta) = {fmt_int(2 * c)}",
        ]


@register
class LayerScale(Layer):
    """Layer scale (CaiT, ConvNeXt): each channel times its own trainable gamma, which starts
    at `init` (1e-6 in ConvNeXt). Parameters: C, trainable."""

    kind: Literal["layerscale"] = "layerscale"
    init: float = 1e-6

    keywords = {"layerscale": {}, "layer_scale": {}}
    positional = ("init",)
    kind_doc = "layerscale [INIT=1e-6]"

    def output_shape(self, shapes):
        return need_image(shapes, "layerscale")

    def count_params(self, shapes):
        return (_channels(shapes), 0)

    def explain(self, shapes, out):
        c = _channels(shapes)
        return [f"params: {c} trainable (one gamma per channel, starting at {self.init})"]


def _floats(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,)
    return value


Floats = Annotated[tuple[float, ...], BeforeValidator(_floats)]


@register
class Normalize(Layer):
    """Per-channel standardisation with stored statistics, Keras' Normalization(axis=-1):
    y = (x - mean) / sqrt(max(variance, 1e-7)). mean and variance (one value, or one per
    channel) are not trainable, nor is the count of samples Keras' adapt() saw; so 2C + 1
    non-trainable parameters, as Keras counts them (EfficientNet's 7 at its RGB input)."""

    kind: Literal["normalize"] = "normalize"
    mean: Floats = (0.0,)
    variance: Floats = (1.0,)

    keywords = {"normalize": {}, "normalization": {}}
    kind_doc = "normalize [mean=(m1, m2, m3)] [variance=(v1, v2, v3)]"

    def output_shape(self, shapes):
        c = _channels(shapes)
        for name in ("mean", "variance"):
            values = getattr(self, name)
            if len(values) not in (1, c):
                raise ShapeError(
                    f"normalize has {len(values)} {name} values for {c} channels",
                    hint=f"give one {name} or one per channel",
                    code="E314",
                )
        if any(v < 0 for v in self.variance):
            raise ShapeError("normalize: a variance cannot be negative", code="E314")
        return shapes[0]

    def count_params(self, shapes):
        return (0, 2 * _channels(shapes) + 1)

    def values(self, c: int) -> tuple[list[float], list[float]]:
        """mean and variance, one per channel."""
        return ([*self.mean] * (c // len(self.mean)), [*self.variance] * (c // len(self.variance)))

    def explain(self, shapes, out):
        c = _channels(shapes)
        return [
            "y = (x - mean) / sqrt(variance), per channel",
            (f"params: 2*{c} + 1 non-trainable (mean, variance, sample count) = {2 * c + 1}"),
        ]
