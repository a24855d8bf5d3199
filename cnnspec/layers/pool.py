"""Pooling: windowed max/average, and global average/max over the whole feature map."""

from __future__ import annotations

from typing import Literal

from .base import (
    Layer,
    Padding,
    Pair,
    ShapeError,
    check_positive,
    need_image,
    register,
    window_out,
)


@register
class Pool(Layer):
    """Max or average pooling; the stride defaults to the window (`pool 2` halves the map).

    Output per axis: floor((W - F + 2P) / S) + 1, or ceil with `ceil=true` (torch's ceil_mode),
    or ceil(W / S) with `same`. Average pooling divides by the real pixels of each window (as
    Keras' `same`), or, with `count_pad=true`, by the window including its padding (torch's
    count_include_pad, its default: torchvision Inception's `avg_pool2d(3, 1, padding=1)`).
    """

    kind: Literal["pool"] = "pool"
    op: Literal["max", "avg"] = "max"
    size: Pair = (2, 2)
    stride: Pair | None = None
    padding: Padding = "valid"
    ceil: bool = False
    count_pad: bool = False

    keywords = {"maxpool": {"op": "max"}, "pool": {"op": "max"}, "avgpool": {"op": "avg"}}
    positional = ("size", "stride")
    flags = {
        "same": {"padding": "same"},
        "valid": {"padding": "valid"},
        "max": {"op": "max"},
        "avg": {"op": "avg"},
    }
    kind_doc = "maxpool|avgpool F [stride=S] [same|valid|padding=P] [ceil=true] [count_pad=true]"

    @property
    def strides(self) -> tuple[int, int]:
        return self.stride or self.size

    def _axis(self, size: int, i: int) -> tuple[int, str]:
        return window_out(size, self.size[i], self.strides[i], self.padding, axis=i, ceil=self.ceil)

    def output_shape(self, shapes):
        shape = need_image(shapes, f"{self.op}pool")
        if self.count_pad and self.op == "max":
            raise ShapeError(
                "count_pad=true is for average pooling: a maximum counts nothing",
                hint="use avgpool, or drop count_pad",
                code="E304",
            )
        hw = tuple(self._axis(shape[i], i)[0] for i in (0, 1))
        if self.padding not in ("same", "valid") and any(
            p > k // 2 for p, k in zip(self.padding, self.size)
        ):
            raise ShapeError(
                f"pooling padding {self.padding[0]} is more than half the window {self.size[0]}",
                hint="torch refuses such padding; use 'same'",
                code="E304",
            )
        check_positive(hw, f"{self.op}pool {self.size[0]}", shape)
        return (*hw, shape[2])

    def explain(self, shapes, out):
        h, w, _ = shapes[0]
        lines = [self._axis(h, 0)[1]]
        if (h, self.size[0], self.strides[0]) != (w, self.size[1], self.strides[1]):
            lines = [f"height: {lines[0]}", f"width: {self._axis(w, 1)[1]}"]
        if self.op == "avg" and self.padding != "valid":
            lines.append(
                "each window's sum is divided by "
                + (
                    "its full size, padding included"
                    if self.count_pad
                    else "the number of real pixels in it (padding not counted)"
                )
            )
        return lines + ["params: 0 (pooling has no weights)"]


@register
class GlobalPool(Layer):
    """Global average or max pooling: HxWxC -> C (or 1x1xC with keepdims=true)."""

    kind: Literal["global_pool"] = "global_pool"
    op: Literal["avg", "max"] = "avg"
    keepdims: bool = False

    keywords = {
        "gap": {"op": "avg"},
        "global_avg_pool": {"op": "avg"},
        "gmp": {"op": "max"},
        "global_max_pool": {"op": "max"},
    }
    flags = {"keepdims": {"keepdims": True}}
    kind_doc = "gap|gmp [keepdims]"

    def output_shape(self, shapes):
        _h, _w, c = need_image(shapes, "global pooling")
        return (1, 1, c) if self.keepdims else (c,)

    def explain(self, shapes, out):
        h, w, c = shapes[0]
        return [f"{h}x{w}x{c} -> {'1x1x' if self.keepdims else ''}{c}: one value per channel"]


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling windows along one axis: bin i covers
    [floor(i*size/out), ceil((i+1)*size/out)), so bins overlap where out does not divide size.

    >>> adaptive_bins(7, 3)
    [(0, 3), (2, 5), (4, 7)]
    """
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


@register
class AdaptivePool(Layer):
    """Average or max pooling to a given output size, whatever the input's (torch's
    AdaptiveAvgPool2d / AdaptiveMaxPool2d, Keras' AdaptiveAveragePooling2D / AdaptiveMax-
    Pooling2D): output bin i of an axis pools input rows floor(i*H/h) to ceil((i+1)*H/h)."""

    kind: Literal["adaptive_pool"] = "adaptive_pool"
    op: Literal["avg", "max"] = "avg"
    size: Pair

    keywords = {
        "adaptive_avgpool": {"op": "avg"},
        "adaptive_avg_pool": {"op": "avg"},
        "adaptive_maxpool": {"op": "max"},
        "adaptive_max_pool": {"op": "max"},
    }
    positional = ("size",)
    kind_doc = "adaptive_avgpool|adaptive_maxpool HxW (the output size)"

    def output_shape(self, shapes):
        _h, _w, c = need_image(shapes, f"adaptive_{self.op}pool")
        return (*self.size, c)

    def explain(self, shapes, out):
        lines = []
        for axis, n, m in (("height", shapes[0][0], out[0]), ("width", shapes[0][1], out[1])):
            bins = adaptive_bins(n, m)
            sizes = sorted({b - a for a, b in bins})
            lines.append(
                f"{axis}: {n} -> {m} bins of {' or '.join(map(str, sizes))} "
                f"(bin i: floor(i*{n}/{m}) to ceil((i+1)*{n}/{m}))"
            )
        return lines + ["params: 0 (pooling has no weights)"]
