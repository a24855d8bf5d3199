"""Dense, flatten, reshape, dropout, activations and the other layers without windows."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from .base import (
    ACTIVATION_ALIASES,
    ACTIVATIONS,
    Layer,
    OptActivation,
    Pair,
    Pos,
    ShapeError,
    fmt_int,
    fmt_shape,
    need_image,
    prod,
    register,
)


@register
class Input(Layer):
    kind: Literal["input"] = "input"
    shape: tuple[Pos, ...]
    internal = True
    min_inputs = 0
    max_inputs = 0

    def output_shape(self, shapes):
        return tuple(self.shape)


@register
class Dense(Layer):
    """Fully connected: in*out weights + out biases; MACs in*out. With `per_pixel` it runs on
    a feature map, the same weights at every pixel over its channels (Keras' Dense on an
    HxWxC tensor; ConvNeXt's pointwise layers, torch's nn.Linear on channels-last):
    HxWxC -> HxWxN, C*N + N parameters, H*W*C*N MACs.

        >>> Dense(units=4, per_pixel=True).count_macs([(2, 2, 3)], (2, 2, 4))
        48
    """

    kind: Literal["dense"] = "dense"
    units: Pos
    bias: bool = True
    activation: OptActivation = None
    per_pixel: bool = False

    keywords = {"dense": {}, "fc": {}}
    positional = ("units",)
    flags = {"nobias": {"bias": False}, "per_pixel": {"per_pixel": True}}
    kind_doc = "dense N [act] [bias=false] [per_pixel]"

    def output_shape(self, shapes):
        if self.per_pixel:
            if len(shapes[0]) != 3:
                raise ShapeError(
                    f"dense per_pixel needs a feature map, but its input is the vector "
                    f"{fmt_shape(shapes[0])}",
                    hint="leave out 'per_pixel' for a dense layer on a vector",
                    code="E305",
                )
            return (*shapes[0][:-1], self.units)
        if len(shapes[0]) != 1:
            raise ShapeError(
                f"dense needs a vector, but its input is the feature map {fmt_shape(shapes[0])}",
                hint="put 'flatten' or 'gap' (global average pooling) before the dense layer, "
                "or write 'dense N per_pixel' for a dense layer over the channels of each pixel",
                code="E305",
            )
        return (self.units,)

    def count_params(self, shapes):
        return (shapes[0][-1] * self.units + self.units * self.bias, 0)

    def count_macs(self, shapes, out):
        return prod(shapes[0]) * self.units

    def explain(self, shapes, out):
        n = shapes[0][-1]
        bias = f" + {self.units}" if self.bias else ""
        pixels = prod(shapes[0][:-1])
        at = f"{pixels}*" if self.per_pixel else ""
        return [
            f"params: {n}*{self.units}{bias} = {fmt_int(self.count_params(shapes)[0])}",
            f"MACs: {at}{n}*{self.units} = {fmt_int(self.count_macs(shapes, out))}",
        ]


@register
class Flatten(Layer):
    """HxWxC -> H*W*C, in height, width, channel order (Keras' order; the torch backend
    permutes from NCHW first, so a dense layer after it has the same weights in both)."""

    kind: Literal["flatten"] = "flatten"
    keywords = {"flatten": {}}
    kind_doc = "flatten"

    def output_shape(self, shapes):
        return (prod(shapes[0]),)

    def explain(self, shapes, out):
        return [f"{'*'.join(map(str, shapes[0]))} = {fmt_int(out[0])}"]


def _dims(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


@register
class Reshape(Layer):
    """Reshape the features of one sample (in HWC order); one dimension may be -1."""

    kind: Literal["reshape"] = "reshape"
    shape: Annotated[tuple[int, ...], BeforeValidator(_dims)]

    keywords = {"reshape": {}}
    positional = ("shape",)
    kind_doc = "reshape HxWxC | N"

    def output_shape(self, shapes):
        size = prod(shapes[0])
        dims = list(self.shape)
        if dims.count(-1) > 1 or any(d == 0 or d < -1 for d in dims):
            raise ShapeError(
                f"reshape {fmt_shape(self.shape)}: sizes must be positive, with at most one -1",
                code="E306",
            )
        if -1 in dims:
            known = -prod(dims)
            if size % known:
                raise ShapeError(
                    f"cannot reshape {fmt_int(size)} values into {fmt_shape(self.shape)}",
                    code="E306",
                )
            dims[dims.index(-1)] = size // known
        if prod(dims) != size:
            raise ShapeError(
                f"cannot reshape {fmt_shape(shapes[0])} ({fmt_int(size)} values) into "
                f"{fmt_shape(self.shape)} ({fmt_int(prod(dims))} values)",
                code="E306",
            )
        if len(dims) not in (1, 3):
            raise ShapeError("reshape makes a vector (N) or a feature map (HxWxC)", code="E306")
        return tuple(dims)


@register
class Dropout(Layer):
    kind: Literal["dropout"] = "dropout"
    rate: float = Field(0.5, ge=0, lt=1)

    keywords = {"dropout": {}}
    positional = ("rate",)
    kind_doc = "dropout P (0 <= P < 1)"


def _act_name(value):
    return ACTIVATION_ALIASES.get(value, value) if isinstance(value, str) else value


@register
class Activation(Layer):
    kind: Literal["activation"] = "activation"
    fn: Annotated[Literal[ACTIVATIONS], BeforeValidator(_act_name)]  # type: ignore[valid-type]
    alpha: float | None = None  # leaky_relu slope (default 0.01) and elu alpha (default 1)
    axis: int = -1  # softmax: channels

    keywords = {
        **{a: {"fn": a} for a in ACTIVATIONS if a != "linear"},
        **{alias: {"fn": a} for alias, a in ACTIVATION_ALIASES.items()},
        "activation": {},
    }
    positional = ("alpha",)
    kind_doc = "relu | relu6 | leaky_relu [alpha] | elu | sigmoid | tanh | softmax | silu | ..."

    @property
    def slope(self) -> float:
        if self.alpha is not None:
            return self.alpha
        return 0.01 if self.fn == "leaky_relu" else 1.0

    def output_shape(self, shapes):
        if self.fn == "softmax" and self.axis not in (-1, len(shapes[0]) - 1):
            raise ShapeError("softmax runs over the channels (axis=-1)", code="E307")
        return shapes[0]


@register
class Identity(Layer):
    """Passes its input on; gives a name to a tensor (`skip = identity`)."""

    kind: Literal["identity"] = "identity"
    keywords = {"identity": {}}
    kind_doc = "identity (names a tensor: skip = identity)"


@register
class Rescale(Layer):
    """x * scale + offset (Keras Rescaling), e.g. `rescale scale=1/255`."""

    kind: Literal["rescale"] = "rescale"
    scale: float | tuple[float, ...] = 1.0
    offset: float | tuple[float, ...] = 0.0
    keywords = {"rescale": {}}
    positional = ("scale", "offset")
    kind_doc = (
        "rescale SCALE [OFFSET] (x * scale + offset, e.g. rescale 1/255; per channel: "
        "scale=(a, b, c))"
    )

    def output_shape(self, shapes):
        c = shapes[0][-1]
        for name in ("scale", "offset"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) not in (1, c):
                raise ShapeError(
                    f"rescale has {len(value)} {name} values for {c} channels",
                    hint=f"give one {name} or one per channel",
                    code="E314",
                )
        return shapes[0]


def _pads(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * 4
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (value[0], value[0], value[1], value[1])
    return value


# (top, bottom, left, right) in pixels, written as P, (vertical, horizontal) or all four
Sides = Annotated[
    tuple[
        Annotated[int, Field(ge=0)],
        Annotated[int, Field(ge=0)],
        Annotated[int, Field(ge=0)],
        Annotated[int, Field(ge=0)],
    ],
    BeforeValidator(_pads),
]


@register
class ZeroPad(Layer):
    """Pad with zeros: P, (vertical, horizontal) or (top, bottom, left, right)."""

    kind: Literal["zeropad"] = "zeropad"
    padding: Sides = (1, 1, 1, 1)
    keywords = {"zeropad": {}, "zeropadding": {}}
    positional = ("padding",)
    kind_doc = "zeropad P | (top, bottom, left, right)"

    def output_shape(self, shapes):
        h, w, c = need_image(shapes, "zeropad")
        t, b, l, r = self.padding
        return (h + t + b, w + l + r, c)


@register
class Crop(Layer):
    """Cut rows and columns off the borders: P, (vertical, horizontal) or (top, bottom, left,
    right); Keras' Cropping2D (NASNet aligns a shifted path with `zeropad (0, 1, 0, 1)` then
    `crop (1, 0, 1, 0)`).

        >>> Crop(cropping=(1, 0, 1, 0)).output_shape([(8, 8, 3)])
        (7, 7, 3)
    """

    kind: Literal["crop"] = "crop"
    cropping: Sides = (1, 1, 1, 1)
    keywords = {"crop": {}, "cropping": {}}
    positional = ("cropping",)
    kind_doc = "crop P | (top, bottom, left, right)"

    def output_shape(self, shapes):
        h, w, c = need_image(shapes, "crop")
        t, b, l, r = self.cropping
        if t + b >= h or l + r >= w:
            raise ShapeError(
                f"crop {self.cropping} of a {fmt_shape(shapes[0])} tensor leaves "
                f"{max(h - t - b, 0)}x{max(w - l - r, 0)}",
                hint="crop fewer rows and columns than the map has",
                code="E301",
            )
        return (h - t - b, w - l - r, c)


@register
class Upsample(Layer):
    """Nearest or bilinear upsampling by an integer factor (half-pixel centres, as Keras and
    torch's align_corners=False)."""

    kind: Literal["upsample"] = "upsample"
    factor: Pair = (2, 2)
    mode: Literal["nearest", "bilinear"] = "nearest"
    keywords = {"upsample": {}, "upsampling": {}}
    positional = ("factor",)
    flags = {"nearest": {"mode": "nearest"}, "bilinear": {"mode": "bilinear"}}
    kind_doc = "upsample F [nearest|bilinear]"

    def output_shape(self, shapes):
        h, w, c = need_image(shapes, "upsample")
        return (h * self.factor[0], w * self.factor[1], c)


@register
class StochasticDepth(Layer):
    """Stochastic depth (Huang et al., 2016), as torchvision's StochasticDepth(p, "row") and
    Keras' Dropout(p, noise_shape=(None, 1, 1, 1)): in training each sample's whole tensor is
    dropped with probability `rate` and the kept ones scaled by 1 / (1 - rate); the identity at
    inference. No parameters."""

    kind: Literal["stochastic_depth"] = "stochastic_depth"
    rate: float = Field(0.0, ge=0, lt=1)

    keywords = {"stochastic_depth": {}, "droppath": {}, "drop_path": {}}
    positional = ("rate",)
    kind_doc = "stochastic_depth P (drops whole samples with probability P in training)"

    def explain(self, shapes, out):
        return [
            (
                f"training: each sample kept with probability {1 - self.rate:g} and scaled by "
                f"1/{1 - self.rate:g}; inference: the identity"
            ),
            "params: 0",
        ]


def _need_groups(shapes, what: str, parts: int) -> tuple[int, ...]:
    shape = shapes[0]
    if shape[-1] % parts:
        raise ShapeError(
            f"{what}: {shape[-1]} channels do not split into {parts} equal parts",
            hint="choose a number that divides the channels",
            code="E313",
        )
    return shape


@register
class ChannelShuffle(Layer):
    """Channel shuffle (ShuffleNet): the C channels seen as G groups of C/G are transposed, so
    channel g*(C/G) + i moves to i*G + g; torch's nn.ChannelShuffle(G)."""

    kind: Literal["channel_shuffle"] = "channel_shuffle"
    groups: int = Field(2, ge=1)

    keywords = {"channel_shuffle": {}, "shuffle": {}}
    positional = ("groups",)
    kind_doc = "shuffle [G=2] (channel shuffle in G groups)"

    def output_shape(self, shapes):
        need_image(shapes, "shuffle")
        return _need_groups(shapes, f"shuffle {self.groups}", self.groups)

    def explain(self, shapes, out):
        c = out[-1]
        return [f"{self.groups} groups of {c // self.groups} channels, interleaved", "params: 0"]


@register
class ChannelSplit(Layer):
    """One of `parts` equal slices of the channels (torch's x.chunk(parts, dim=1)[index]):
    `left = split 2 0` and `right = split 2 1 from=x` name the two halves of ShuffleNetV2."""

    kind: Literal["split"] = "split"
    parts: int = Field(ge=1)
    index: int = Field(ge=0)

    keywords = {"split": {}, "chunk": {}}
    positional = ("parts", "index")
    kind_doc = "split PARTS INDEX (the INDEX-th of PARTS equal channel slices, from 0)"

    def output_shape(self, shapes):
        shape = _need_groups(shapes, f"split {self.parts}", self.parts)
        if self.index >= self.parts:
            raise ShapeError(
                f"split {self.parts} has parts 0 to {self.parts - 1}, not {self.index}", code="E313"
            )
        return (*shape[:-1], shape[-1] // self.parts)

    def channels(self, c: int) -> tuple[int, int]:
        """The slice [start, stop) of the channels."""
        step = c // self.parts
        return self.index * step, (self.index + 1) * step

    def explain(self, shapes, out):
        start, stop = self.channels(shapes[0][-1])
        return [f"channels {start} to {stop - 1} of {shapes[0][-1]}", "params: 0"]
