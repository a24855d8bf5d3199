"""Merges of several tensors: add, multiply (both broadcast a 1x1xC gate), concat on channels."""

from __future__ import annotations

from typing import Literal

from .base import Layer, ShapeError, fmt_shape, register


@register
class Merge(Layer):
    kind: Literal["merge"] = "merge"
    op: Literal["add", "concat", "multiply"]

    keywords = {"add": {"op": "add"}, "concat": {"op": "concat"},
                "multiply": {"op": "multiply"}, "mul": {"op": "multiply"}}
    takes_refs = True
    min_inputs = 2
    max_inputs = 64
    kind_doc = "add|concat|multiply NAME... (the current tensor and the named ones)"

    def output_shape(self, shapes):
        ranks = {len(s) for s in shapes}
        listing = ", ".join(fmt_shape(s) for s in shapes)
        if len(ranks) != 1:
            raise ShapeError(f"{self.op} cannot merge tensors of different ranks: {listing}",
                             code="E310")
        if self.op == "concat":
            if len({s[:-1] for s in shapes}) != 1:
                raise ShapeError(
                    f"concat needs equal heights and widths, got {listing}",
                    hint="crop or pad one branch, or give each branch the same strides "
                         "('same' padding keeps the size)", code="E311")
            return (*shapes[0][:-1], sum(s[-1] for s in shapes))
        # add / multiply: equal shapes, or a 1x1xC gate against HxWxC (squeeze-and-excitation)
        full = max(shapes, key=lambda s: (s[:-1] != (1,) * (len(s) - 1), s))
        for s in shapes:
            if s != full and not (s[-1] == full[-1] and all(d == 1 for d in s[:-1])):
                raise ShapeError(
                    f"{self.op} needs tensors of one shape, got {listing}",
                    hint="give the shortcut a projection (residual ... shortcut { conv N 1x1 "
                         "stride=S; bn }) or make the channels and strides match", code="E312")
        return full

    # --- Keras backend (cnnspec.backends.keras): a recipe of Keras layers --------------------
    def keras_layers(self, name, in_shapes):
        # Add and Multiply broadcast a 1x1xC gate over HxWxC, as the shape rule allows.
        if self.op == "concat":
            return [("Concatenate", {"axis": -1, "name": name})]
        return [({"add": "Add", "multiply": "Multiply"}[self.op], {"name": name})]

    # --- torch backend (cnnspec.backends.torch) ---------------------------------------------
    def torch_op(self, shapes):
        """add and multiply broadcast a (N, C, 1, 1) gate over (N, C, H, W); concat joins the
        channels, dim 1 of NCHW and of NC."""
        from ..backends import torch_emit as te
        xs = tuple(te.In(i) for i in range(len(shapes)))
        if self.op == "concat":
            return te.TorchOp(forward=te.call("torch.cat", list(xs), 1), fresh=True)
        inplace = None
        if self.op == "add" and tuple(shapes[0]) == tuple(self.output_shape(shapes)):
            inplace = xs[0]                  # torchvision's `out += identity`
            for x in xs[1:]:
                inplace = te.method(inplace, "add_", x)
        # a product is not fresh: multiply's backward reads its inputs
        return te.TorchOp(forward=te.BinOp("+" if self.op == "add" else "*", xs),
                          fresh=self.op == "add", inplace=inplace)
