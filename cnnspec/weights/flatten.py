"""The flatten rule: which HxWxC map a vector's values come from, and in which order.

cnnspec (and Keras, channels_last) lays a map out as a vector in H, W, C order; torch's
`flatten` of an NCHW tensor gives C, H, W. A layer whose parameters index the features of
such a vector (a dense layer's columns, a batch norm's four vectors) therefore needs that
axis reordered when its weights come from a torch model (torchvision), and only then.

A vector keeps its source map through layers that leave every feature in its place:

    flatten / reshape N          start one (from an HxWxC input)
    dropout, activation, identity,
    rescale, bn, merge (same shapes)   pass it on (bn reads it, and passes it on)
    anything else (dense ...)    ends it

    >>> hwc_order((1, 2, 3))          # H=1, W=2, C=3: C,H,W index of each H,W,C position
    [0, 2, 4, 1, 3, 5]
"""

from __future__ import annotations

import numpy as np

# Kinds that lay a map out as a vector in H, W, C order (when their output is a vector).
VECTORISING = frozenset({"flatten", "reshape"})
# Kinds that keep every feature of a vector where it was (output i depends on input i).
ELEMENTWISE = frozenset({"dropout", "activation", "identity", "rescale", "bn", "merge"})

HWC = tuple[int, int, int]


def flat_sources(model) -> dict[str, HWC | None]:
    """Node name -> the (H, W, C) map its output vector holds in H, W, C order, or None."""
    out: dict[str, HWC | None] = {}
    for node in model.nodes:
        shapes = [tuple(model.node(i).shape) for i in node.inputs]
        out[node.name] = _source(node, shapes, [out[i] for i in node.inputs])
    return out


def _source(node, shapes: list[tuple], sources: list) -> HWC | None:
    if len(node.shape) != 1 or not shapes:
        return None
    if node.kind in VECTORISING:
        return shapes[0] if len(shapes[0]) == 3 else sources[0]
    same = all(s == tuple(node.shape) for s in shapes) and len(set(sources)) == 1
    return sources[0] if node.kind in ELEMENTWISE and same else None


def input_map(model, node, sources: dict[str, HWC | None] | None = None) -> HWC | None:
    """The map flattened into `node`'s input vector, if it reads one (one input)."""
    sources = flat_sources(model) if sources is None else sources
    if len(node.inputs) != 1:
        return None
    return sources.get(node.inputs[0])


def hwc_order(hwc: HWC) -> list[int]:
    """For each position of the H, W, C vector, the index of that value in C, H, W order."""
    h, w, c = hwc
    return np.arange(h * w * c).reshape(c, h, w).transpose(1, 2, 0).reshape(-1).tolist()


def chw_to_hwc(value: np.ndarray, hwc: HWC, axis: int) -> np.ndarray | None:
    """`value` with its `axis` reordered from C, H, W to H, W, C; None when nothing changes
    (the axis does not hold that map, or H*W or C is 1 and the orders agree)."""
    h, w, c = hwc
    if value.ndim <= axis or value.shape[axis] != h * w * c or h * w == 1 or c == 1:
        return None
    return np.ascontiguousarray(np.take(value, hwc_order(hwc), axis=axis))
