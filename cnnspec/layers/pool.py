"""Pooling: windowed max/average, and global average/max over the whole feature map."""

from __future__ import annotations

from typing import Literal

from .base import Layer, Padding, Pair, check_positive, need_image, register, window_out


@register
class Pool(Layer):
    """Max or average pooling; the stride defaults to the window (`pool 2` halves the map).

    Output per axis: floor((W - F + 2P) / S) + 1, or ceil with `ceil=true` (torch's ceil_mode),
    or ceil(W / S) with `same`. Average pooling never counts padded zeros (`same` as Keras does).
    """

    kind: Literal["pool"] = "pool"
    op: Literal["max", "avg"] = "max"
    size: Pair = (2, 2)
    stride: Pair | None = None
    padding: Padding = "valid"
    ceil: bool = False

    keywords = {"maxpool": {"op": "max"}, "pool": {"op": "max"}, "avgpool": {"op": "avg"}}
    positional = ("size", "stride")
    flags = {"same": {"padding": "same"}, "valid": {"padding": "valid"}, "max": {"op": "max"},
             "avg": {"op": "avg"}}
    kind_doc = "maxpool|avgpool F [stride=S] [same|valid|padding=P] [ceil=true]"

    @property
    def strides(self) -> tuple[int, int]:
        return self.stride or self.size

    def _axis(self, size: int, i: int) -> tuple[int, str]:
        return window_out(size, self.size[i], self.strides[i], self.padding, axis=i,
                          ceil=self.ceil)

    def output_shape(self, shapes):
        shape = need_image(shapes, f"{self.op}pool")
        hw = tuple(self._axis(shape[i], i)[0] for i in (0, 1))
        if self.padding not in ("same", "valid") and any(
                p > k // 2 for p, k in zip(self.padding, self.size)):
            from .base import ShapeError
            raise ShapeError(f"pooling padding {self.padding[0]} is more than half the window "
                             f"{self.size[0]}", hint="torch refuses such padding; use 'same'",
                             code="E304")
        check_positive(hw, f"{self.op}pool {self.size[0]}", shape)
        return (*hw, shape[2])

    def explain(self, shapes, out):
        h, w, _ = shapes[0]
        lines = [self._axis(h, 0)[1]]
        if (h, self.size[0], self.strides[0]) != (w, self.size[1], self.strides[1]):
            lines = [f"height: {lines[0]}", f"width: {self._axis(w, 1)[1]}"]
        return lines + ["params: 0 (pooling has no weights)"]


@register
class GlobalPool(Layer):
    """Global average or max pooling: HxWxC -> C (or 1x1xC with keepdims=true)."""

    kind: Literal["global_pool"] = "global_pool"
    op: Literal["avg", "max"] = "avg"
    keepdims: bool = False

    keywords = {"gap": {"op": "avg"}, "global_avg_pool": {"op": "avg"},
                "gmp": {"op": "max"}, "global_max_pool": {"op": "max"}}
    flags = {"keepdims": {"keepdims": True}}
    kind_doc = "gap|gmp [keepdims]"

    def output_shape(self, shapes):
        _h, _w, c = need_image(shapes, "global pooling")
        return (1, 1, c) if self.keepdims else (c,)

    def explain(self, shapes, out):
        h, w, c = shapes[0]
        return [f"{h}x{w}x{c} -> {'1x1x' if self.keepdims else ''}{c}: one value per channel"]
