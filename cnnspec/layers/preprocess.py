"""Input preprocessing declared on the input line: `input 28x28x1 scale=1/255 mean=0.13 std=0.31`.

It belongs to the network, not to the run folder: the built models, the generated source and
the ONNX export all compute y = (x * scale - mean) / std (torchvision's Normalize after
ToTensor's 1/255, Keras' Rescaling then Normalization), so a weights file moved anywhere
predicts the same. A spec that declares it reads the image's pixel values, 0..255; one that
does not reads them in [0, 1], as before. No parameters: the constants are part of the code
(torch: expressions in forward, not state_dict entries; Keras: layers without weights).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from .base import Layer, ShapeError, register

ARGUMENTS = ("scale", "mean", "std")


def _floats(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,)
    return value


Floats = Annotated[tuple[float, ...], BeforeValidator(_floats)]
PositiveFloats = Annotated[tuple[Annotated[float, Field(gt=0)], ...], BeforeValidator(_floats)]


@register
class Preprocess(Layer):
    """(x * scale - mean) / std per channel; made by the compiler from the input line's
    arguments (one value for every channel, or one per channel)."""

    kind: Literal["preprocess"] = "preprocess"
    scale: float = Field(1.0, gt=0)
    mean: Floats = (0.0,)
    std: PositiveFloats = (1.0,)

    internal = True
    kind_doc = "input HxWxC [scale=S] [mean=(m1, m2, m3)] [std=(s1, s2, s3)]"

    def output_shape(self, shapes):
        if len(shapes[0]) != 3:
            raise ShapeError(
                "input preprocessing (scale, mean, std) is for images, not vectors",
                hint="declare an HxWxC input, or preprocess the vectors before the network",
                code="E314",
            )
        c = shapes[0][-1]
        name = self.mismatched(c)
        if name is not None:
            n = len(getattr(self, name))
            raise ShapeError(
                f"input preprocessing has {n} {name} values for {c} channels",
                hint=f"give one {name} for every channel, or exactly {c}",
                code="E314",
            )
        return shapes[0]

    def mismatched(self, c: int) -> str | None:
        """The first of mean, std whose length is neither 1 nor the channel count c."""
        return next((n for n in ("mean", "std") if len(getattr(self, n)) not in (1, c)), None)

    def values(self, c: int) -> tuple[list[float], list[float]]:
        """mean and std, one per channel."""
        return ([*self.mean] * (c // len(self.mean)), [*self.std] * (c // len(self.std)))

    def explain(self, shapes, out):
        return [
            "y = (x * scale - mean) / std per channel, x the pixel values 0..255",
            "params: 0 (constants of the network, not weights)",
        ]


def preprocessing(model) -> Preprocess | None:
    """The spec's declared input preprocessing, or None."""
    for node in model.nodes[1:2]:  # the compiler places it right after the input
        if node.kind == "preprocess":
            return node.layer
    return None


def formula(layer: Preprocess) -> str:
    """What the network does to the pixels x it reads, as a line of text."""

    def nums(values) -> str:
        return f"{values[0]:g}" if len(values) == 1 else f"({', '.join(f'{v:g}' for v in values)})"

    return f"(x * {layer.scale:g} - {nums(layer.mean)}) / {nums(layer.std)}"


def describe(layer: Preprocess) -> str:
    """One line for `cnnspec summary`."""
    return f"{formula(layer)}, x the pixels 0..255"


def formula_of(model) -> str | None:
    """The model's preprocessing formula (for generated code's docstrings), or None."""
    declared = preprocessing(model)
    return formula(declared) if declared is not None else None
