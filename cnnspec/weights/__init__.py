"""Everything about weights that does not need a framework: one home for every loader.

    layouts      which tensors a layer kind holds, their torch and Keras names and layouts
    flatten      which HxWxC map a vector's values come from, in which order
    matching     pairing a file's layers with a network's nodes, and the one LoadReport
    fingerprint  the spec's fingerprint, written into and checked against weights files

numpy only: torch, TensorFlow and Keras are imported by the loaders that use this.
"""

from .fingerprint import ForeignWeights
from .flatten import flat_sources
from .layouts import LAYOUTS, LayoutError, Tensor
from .matching import LoadReport, SourceLayer, SourceWeights, Target, match, targets

__all__ = [
    "LAYOUTS",
    "ForeignWeights",
    "LayoutError",
    "LoadReport",
    "SourceLayer",
    "SourceWeights",
    "Target",
    "Tensor",
    "flat_sources",
    "match",
    "targets",
]
