"""Merges of several tensors: add, multiply (both broadcast a 1x1xC gate), concat on channels."""

from __future__ import annotations

from typing import Literal

from .base import Layer, ShapeError, fmt_shape, register


@register
class Merge(Layer):
    kind: Literal["merge"] = "merge"
    op: Literal["add", "concat", "multiply"]

    keywords = {
        "add": {"op": "add"},
        "concat": {"op": "concat"},
        "multiply": {"op": "multiply"},
        "mul": {"op": "multiply"},
    }
    takes_refs = True
    min_inputs = 2
    max_inputs = 64
    kind_doc = "add|concat|multiply NAME... (the current tensor and the named ones)"

    def output_shape(self, shapes):
        ranks = {len(s) for s in shapes}
        listing = ", ".join(fmt_shape(s) for s in shapes)
        if len(ranks) != 1:
            raise ShapeError(
                f"{self.op} cannot merge tensors of different ranks: {listing}", code="E310"
            )
        if self.op == "concat":
            if len({s[:-1] for s in shapes}) != 1:
                raise ShapeError(
                    f"concat needs equal heights and widths, got {listing}",
                    hint="crop or pad one branch, or give each branch the same strides "
                    "('same' padding keeps the size)",
                    code="E311",
                )
            return (*shapes[0][:-1], sum(s[-1] for s in shapes))
        # add / multiply: equal shapes, or a 1x1xC gate against HxWxC (squeeze-and-excitation)
        full = max(shapes, key=lambda s: (s[:-1] != (1,) * (len(s) - 1), s))
        for s in shapes:
            if s != full and not (s[-1] == full[-1] and all(d == 1 for d in s[:-1])):
                raise ShapeError(
                    f"{self.op} needs tensors of one shape, got {listing}",
                    hint="give the shortcut a projection (residual ... shortcut { conv N 1x1 "
                    "stride=S; bn }) or make the channels and strides match",
                    code="E312",
                )
        return full
