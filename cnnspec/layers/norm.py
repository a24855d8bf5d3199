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

    # --- torch backend (cnnspec.backends.torch) ---------------------------------------------
    def torch_op(self, shapes):
        """torch's momentum is the weight of the new batch: 1 - the spec's (Keras') momentum.
        scale and center apart: affine=False plus the one parameter, which F.batch_norm takes
        alone (weight=None, bias=tensor)."""
        from ..backends import torch_emit as te
        c = shapes[0][-1]
        cls = "nn.BatchNorm2d" if len(shapes[0]) == 3 else "nn.BatchNorm1d"
        momentum = float(f"{1 - self.momentum:.12g}")
        both = self.scale and self.center
        module = te.call(cls, c, **te.kwargs_unless_default(
            eps=(self.eps, 1e-5), momentum=(momentum, 0.1), affine=(both, True)))
        setup = ()
        if self.scale != self.center:
            name, init = ("weight", "torch.ones") if self.scale else ("bias", "torch.zeros")
            setup = ((name, te.call("nn.Parameter", te.call(init, c))),)
        return te.TorchOp(module=module, forward=te.Self((te.X,)), setup=setup, fresh=True)

    # --- Keras backend (cnnspec.backends.keras): a recipe of Keras layers --------------------
    def keras_layers(self, name, in_shapes):
        # Keras' momentum is the spec's (torch's is 1 - it); epsilon is added to the variance
        # in both frameworks.
        return [("BatchNormalization", {"axis": -1, "momentum": self.momentum,
                                        "epsilon": self.eps, "center": self.center,
                                        "scale": self.scale, "name": name})]


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

    # --- torch backend (cnnspec.backends.torch) ---------------------------------------------
    def torch_op(self, shapes):
        from ..backends import torch_emit as te
        module = te.call("nn.LocalResponseNorm", self.size, **te.kwargs_unless_default(
            alpha=(self.alpha, 1e-4), beta=(self.beta, 0.75), k=(self.k, 1.0)))
        return te.TorchOp(module=module, forward=te.Self((te.X,)))

    # --- Keras backend (cnnspec.backends.keras): a recipe of Keras layers --------------------
    def keras_layers(self, name, in_shapes):
        return [("LocalResponseNorm", {"size": self.size, "alpha": self.alpha,
                                       "beta": self.beta, "k": self.k, "name": name})]
