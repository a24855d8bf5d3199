"""Every layer kind of the language. Importing this package fills the registry."""

from . import conv, core, detect, merge, norm, pool, preprocess  # noqa: F401  (registration side effects)
from .base import ACTIVATIONS, KEYWORDS, REGISTRY, Layer, Shape, ShapeError, fmt_int, fmt_shape

__all__ = [
    "ACTIVATIONS",
    "KEYWORDS",
    "REGISTRY",
    "Layer",
    "Shape",
    "ShapeError",
    "fmt_int",
    "fmt_shape",
]
