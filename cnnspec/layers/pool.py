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

    # --- torch backend (cnnspec.backends.torch) ---------------------------------------------
    def torch_op(self, shapes):
        """'same' as TensorFlow: max pads with -inf, average never counts the padding. Uneven
        'same' average pooling divides the zero-padded sum by the pooled mask of real pixels."""
        from ..backends import torch_emit as te
        k, s = te.one(self.size), te.one(self.strides)
        padding, pads = te.window_padding(self.padding, shapes[0], self.size, self.strides)
        if self.op == "avg" and pads is not None:
            mask = te.call("torch.ones_like", te.Index(te.X, (slice(None), slice(None, 1))))
            pooled = [te.call("F.avg_pool2d", te.pad(x, pads), k, s) for x in (te.X, mask)]
            return te.TorchOp(forward=te.BinOp("/", tuple(pooled)))
        cls = "nn.MaxPool2d" if self.op == "max" else "nn.AvgPool2d"
        extra = {"count_include_pad": False} if self.op == "avg" and padding != 0 else {}
        module = te.call(cls, k, **te.kwargs_unless_default(
            stride=(s, k), padding=(padding, 0),
            ceil_mode=(self.ceil and self.padding != "same", False)), **extra)
        return te.TorchOp(module=module,
                          forward=te.Self((te.pad(te.X, pads, value=float("-inf")),)),
                          fresh=True)

    # --- Keras backend (cnnspec.backends.keras): a recipe of Keras layers --------------------
    def keras_layers(self, name, in_shapes):
        # Keras' own 'valid', and 'same' for max pooling. Average pooling with uneven 'same'
        # padding, integer padding and ceil=true become explicit pads on each side (the
        # bottom/right pad grows so that the last ceil_mode window fits): a padded average must
        # not count the padding, which Keras' AveragePooling2D(padding='same') honours on
        # TensorFlow but not under KERAS_BACKEND=torch.
        from .base import same_pads
        cls = {"max": "MaxPooling2D", "avg": "AveragePooling2D"}[self.op]
        args = {"pool_size": tuple(self.size), "strides": tuple(self.strides)}
        shape = in_shapes[0]
        if self.padding == "same":
            (top, bottom), (left, right) = (same_pads(shape[i], self.size[i], self.strides[i])
                                            for i in (0, 1))
            pads = (top, bottom, left, right)
            if self.op == "max" or not any(pads):
                return [(cls, {**args, "padding": "same", "name": name})]
        else:
            pad = (0, 0) if self.padding == "valid" else self.padding
            out = self.output_shape(in_shapes)
            ends = [max((out[i] - 1) * self.strides[i] + self.size[i] - shape[i] - pad[i],
                        pad[i]) for i in (0, 1)]
            pads = (pad[0], ends[0], pad[1], ends[1])
            if not any(pads):
                return [(cls, {**args, "padding": "valid", "name": name})]
        return [("PaddedPool2D", {"op": self.op, **args, "pads": pads, "name": name})]


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

    # --- torch backend (cnnspec.backends.torch) ---------------------------------------------
    def torch_op(self, shapes):
        from ..backends import torch_emit as te
        extra = {"keepdim": True} if self.keepdims else {}
        return te.TorchOp(forward=te.method(te.X, "mean" if self.op == "avg" else "amax",
                                            (2, 3), **extra))

    # --- Keras backend (cnnspec.backends.keras): a recipe of Keras layers --------------------
    def keras_layers(self, name, in_shapes):
        cls = {"avg": "GlobalAveragePooling2D", "max": "GlobalMaxPooling2D"}[self.op]
        return [(cls, {"keepdims": self.keepdims, "name": name})]
