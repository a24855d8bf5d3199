"""Normalisation: batch norm and local response norm."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Layer, fmt_int, need_image, register


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
        return [(f"params: {k}*{c} trainable (gamma, beta) = {fmt_int(t)}, "
                f"2*{c} non-trainable (running mean, variance) = {fmt_int(n)}")]


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
