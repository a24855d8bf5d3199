"""A dense detection head: `detect`, one layer over the feature maps of a neck.

It reads one or more named feature maps ("levels": an FPN's P3..P7, a PAN's outputs) and
predicts at every cell of each, once per anchor (RetinaNet, Lin et al. 2017; SSD, Liu et al.
2016; YOLOv3) or once per cell when anchor-free (FCOS, Tian et al. 2019; YOLOX/YOLOv8).
Two branches run on each level: a classification tower then a class predictor, and a box
tower then a box predictor (plus the extra column, FCOS's centre-ness or YOLO's objectness,
predicted from the box tower as torchvision's FCOSRegressionHead does). A tower is `tower`
convs of `kernel` (3x3, 'same') at `width` channels, each with its norm and activation.

`shared` (RetinaNet, FCOS): ONE set of tower and predictor weights applied to every level,
so the levels must have equal channels; parameters are counted once, MACs per level summed.
`separate` (SSD, SSDlite): each level has its own towers and predictors (channels may differ).

The output is one tensor of (P, 4 + classes + extra) per image, in the layout of
cnnspec.detection.priors (level by level, then row, column, anchor; box, classes, extra).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator

from .base import (
    Layer,
    Pair,
    Pos,
    Shape,
    ShapeError,
    fmt_int,
    fmt_shape,
    register,
)
from .base import _activation as _activation_name

# the activations a tower may end with (the modules both backends have by name)
TOWER_ACTIVATIONS = ("relu", "relu6", "silu", "gelu", "hard_swish")
TowerActivation = Annotated[
    Literal[TOWER_ACTIVATIONS] | None,  # type: ignore[valid-type]
    BeforeValidator(_activation_name),
]

PosFloat = Annotated[float, Field(gt=0)]


def _per_level(value):
    """One number for a one-level head: `strides=32` is `strides=(32,)` (the language has no
    one-item tuple)."""
    return (value,) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


Levels = Annotated[tuple[Pos, ...], BeforeValidator(_per_level)]
LevelFloats = Annotated[tuple[PosFloat, ...], BeforeValidator(_per_level)]


@register
class Detect(Layer):
    """A dense detection head over named feature maps (RetinaNet, FCOS, SSD, YOLO): per prior
    (cell and anchor of each level) 4 box numbers, the class logits and an optional extra
    column, as one (priors, 4 + classes + extra) output; towers shared by the levels or one
    per level."""

    kind: Literal["detect"] = "detect"
    classes: Pos
    strides: Levels
    sizes: LevelFloats | None = None  # anchor size per level; None: anchor-free
    octaves: Pos = 1  # anchors per size: size * 2**(i / octaves), i < octaves (RetinaNet: 3)
    ratios: LevelFloats = (1.0,)  # anchor aspect ratios, height / width
    # grid: RetinaNet's anchors (sizes in pixels, octaves x ratios a cell); ssd: SSD's default
    # boxes (sizes: relative scales, one more than the levels; 2 + 2 x ratios a cell)
    anchors: Literal["grid", "ssd"] = "grid"
    tower: Annotated[int, Field(ge=0)] = 4
    width: Pos | None = None  # tower channels; None: the level's own
    norm: Literal["none", "bn", "gn"] = "none"
    groups: Pos = 32  # group norm's groups
    eps: float = Field(1e-5, gt=0)  # of the tower's norm
    act: TowerActivation = "relu"  # of the tower (a bare relu, relu6, silu... sets it)
    kernel: Pair = (3, 3)  # of the tower's convs
    predictor: Pair = (3, 3)  # of the class, box and extra convs
    depthwise: bool = False  # tower convs depthwise (SSDlite)
    shared: bool = True
    extra: Literal["none", "objectness", "centerness"] = "none"
    scores: Literal["sigmoid", "softmax"] = "sigmoid"
    # divisors of the (dx, dy, dw, dh) offsets, as torchvision's BoxCoder weights (SSD: 10, 10, 5, 5)
    box_weights: Annotated[
        tuple[PosFloat, PosFloat, PosFloat, PosFloat], Field(description="(x, y, w, h)")
    ] = (1.0, 1.0, 1.0, 1.0)
    box_relu: bool = False  # FCOS: distances through a relu
    offset: float = Field(0.0, ge=0, le=1)  # a prior's centre within its cell, in cells

    keywords = {"detect": {}}
    positional = ("classes",)
    flags = {
        "shared": {"shared": True},
        "separate": {"shared": False},
        "depthwise": {"depthwise": True},
        "centerness": {"extra": "centerness"},
        "objectness": {"extra": "objectness"},
        **{fn: {"act": fn} for fn in TOWER_ACTIVATIONS},
    }
    takes_refs = True
    refs_only: ClassVar[bool] = True  # reads only the maps it names, not the tensor before it
    min_inputs = 1
    max_inputs = 16
    kind_doc = (
        "detect P3 P4 ... classes=K strides=(S, ...) [sizes=(A, ...) octaves=N ratios=(R, ...)] "
        "[anchors=grid|ssd] "
        "[tower=4] [width=W] [norm=none|bn|gn] [shared|separate] [depthwise] "
        "[centerness|objectness] [scores=sigmoid|softmax] [box_relu=true]"
    )

    @field_validator("kernel", "predictor")
    @classmethod
    def _odd(cls, k):
        if k[0] % 2 == 0 or k[1] % 2 == 0:
            raise ValueError(f"must be odd (a 'same' window): received {k[0]}x{k[1]}")
        return k

    # --- the facts shared by the rules, the backends and cnnspec.detection.heads --------------
    @property
    def coder(self) -> str:
        return "distances" if self.sizes is None else "offsets"

    @property
    def extras(self) -> int:
        return int(self.extra != "none")

    @property
    def per_cell(self) -> int:
        """A, the anchors per cell (1 when anchor-free)."""
        if self.sizes is None:
            return 1
        if self.anchors == "ssd":
            return 2 + 2 * len(self.ratios)
        return self.octaves * len(self.ratios)

    def level_sizes(self, level: int) -> tuple[float, ...]:
        """The anchor sizes of a level, as torchvision's RetinaNet writes them:
        `(x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3)))`.

        >>> Detect(classes=1, strides=(8,), sizes=(32,), octaves=3).level_sizes(0)
        (32.0, 40.0, 50.0)
        """
        base = self.sizes[level]
        return tuple(
            float(base if i == 0 else int(base * 2 ** (i / self.octaves)))
            for i in range(self.octaves)
        )

    def columns(self) -> int:
        return 4 + self.classes + self.extras

    def tower_width(self, channels: int) -> int:
        return self.width or channels

    def tower_convs(self, channels: int) -> list[tuple[int, int]]:
        """(in, out) channels of each tower conv of a level with `channels` channels."""
        w = self.tower_width(channels)
        return [(channels if j == 0 else w, w) for j in range(self.tower)]

    def predictor_outputs(self) -> tuple[int, int]:
        """Output channels of the class predictor and the box predictor (box + extra)."""
        a = self.per_cell
        return a * self.classes, a * (4 + self.extras)

    # --- the rules ----------------------------------------------------------------------------
    def output_shape(self, shapes):
        self._check_levels(shapes)
        a = self.per_cell
        return (sum(h * w * a for h, w, _ in shapes), self.columns())

    def _check_levels(self, shapes: list[Shape]) -> None:
        n = len(shapes)
        for i, s in enumerate(shapes):
            if len(s) != 3:
                raise ShapeError(
                    f"detect reads feature maps, but level {i} is a vector of {fmt_shape(s)}",
                    hint="name the neck's feature maps (before any flatten or global pooling)",
                    code="E302",
                )
        if len(self.strides) != n:
            raise ShapeError(
                f"detect reads {n} feature map(s) but strides= gives {len(self.strides)}",
                hint="one stride per level, in the order the maps are named",
                code="E316",
            )
        if self.sizes is not None and self.anchors == "ssd" and len(self.sizes) != n + 1:
            raise ShapeError(
                f"SSD default boxes need a scale per level and one more: {n + 1}, "
                f"received {len(self.sizes)}",
                hint="sizes=(0.2, ..., 1.0): the scales of the levels, then the last one's "
                "neighbour (torchvision: linspace(0.2, 0.95) and 1.0)",
                code="E316",
            )
        if self.sizes is not None and self.anchors == "grid" and len(self.sizes) != n:
            raise ShapeError(
                f"detect has anchor sizes for {len(self.sizes)} level(s), not {n}",
                hint="one anchor size per level (sizes=(32, 64, ...)); leave sizes out for an "
                "anchor-free head",
                code="E316",
            )
        if not self.shared and self.extra != "none":
            raise ShapeError(
                f"a separate detect head has no {self.extra} column yet",
                hint="write 'shared' (FCOS, YOLO), or leave the extra column out (SSD)",
                code="E317",
            )
        channels = {s[2] for s in shapes}
        if self.shared and len(channels) > 1:
            raise ShapeError(
                "a shared detect head applies one set of weights to every level, which needs "
                f"equal channels; received {', '.join(fmt_shape(s) for s in shapes)}",
                hint="give the neck's outputs one width (an FPN's 256), or write 'separate'",
                code="E317",
            )
        for c in channels:
            w = self.tower_width(c)
            if self.depthwise and self.tower and w != c:
                raise ShapeError(
                    f"a depthwise tower keeps the channels: width={w} on {c} channels",
                    code="E317",
                )
            if self.norm == "gn" and self.tower and w % self.groups:
                raise ShapeError(
                    f"group norm of {self.groups} groups on a {w}-channel tower",
                    hint="a width that the groups divide, or groups=",
                    code="E313",
                )

    def check_image(self, image: Shape, shapes: list[Shape]) -> None:
        """Each level's map must be the input divided by its stride (rounded either way, as
        convolutions round): a head whose strides do not match its maps would place every
        prior in the wrong place."""
        for i, (s, stride) in enumerate(zip(shapes, self.strides)):
            for axis in (0, 1):
                size, got = image[axis], s[axis]
                if got not in (size // stride, -(-size // stride)):
                    actual = size / got
                    ratio = f"{actual:g}" if actual != int(actual) else str(int(actual))
                    raise ShapeError(
                        f"detect level {i} ({fmt_shape(s)}) has stride {ratio} on the "
                        f"{fmt_shape(image)} input, but strides= gives {stride}",
                        hint=f"strides=({', '.join(str(self._stride_of(image, t)) for t in shapes)})"
                        " would match the maps named, in their order",
                        code="E315",
                    )

    @staticmethod
    def _stride_of(image: Shape, s: Shape) -> int:
        return max(1, round(image[0] / s[0]))

    def _branch_params(self, c: int, outputs: int) -> tuple[int, int]:
        """Trainable and non-trainable parameters of one tower plus its predictor."""
        kh, kw = self.kernel
        trainable = frozen = 0
        for cin, cout in self.tower_convs(c):
            weights = kh * kw * cin if self.depthwise else kh * kw * cin * cout
            trainable += weights + (cout if self.norm != "bn" else 0)
            if self.norm != "none":
                trainable += 2 * cout
            if self.norm == "bn":
                frozen += 2 * cout
        cin = self.tower_width(c) if self.tower else c
        ph, pw = self.predictor
        return trainable + ph * pw * cin * outputs + outputs, frozen

    def count_params(self, shapes):
        levels = shapes[:1] if self.shared else shapes
        cls_out, box_out = self.predictor_outputs()
        trainable = frozen = 0
        for s in levels:
            for outputs in (cls_out, box_out):
                t, f = self._branch_params(s[2], outputs)
                trainable, frozen = trainable + t, frozen + f
        return trainable, frozen

    def _level_macs(self, s: Shape) -> int:
        h, w, c = s
        kh, kw = self.kernel
        ph, pw = self.predictor
        tower = sum(
            h * w * kh * kw * cin * (1 if self.depthwise else cout)
            for cin, cout in self.tower_convs(c)
        )
        cin = self.tower_width(c) if self.tower else c
        return 2 * tower + sum(h * w * ph * pw * cin * o for o in self.predictor_outputs())

    def count_macs(self, shapes, out):
        return sum(self._level_macs(s) for s in shapes)

    def explain(self, shapes, out):
        a = self.per_cell
        cells = " + ".join(f"{h}*{w}" for h, w, _ in shapes)
        trainable, _ = self.count_params(shapes)
        how = "one tower pair shared by" if self.shared else "a tower pair for each of"
        return [
            f"priors: ({cells}) * {a} anchor(s) = {fmt_int(out[0])}",
            f"columns: 4 box + {self.classes} classes + {self.extras} extra = {out[1]}",
            f"params: {how} {len(shapes)} level(s) = {fmt_int(trainable)}",
            f"MACs: summed over the levels = {fmt_int(self.count_macs(shapes, out))}",
        ]
