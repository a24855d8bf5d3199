"""A final activation left out of a model trained on logits: the one place that says how.

A softmax or sigmoid that ends a network stays there for inference; training folds it into
the loss instead (logits + cross-entropy, as torch's CrossEntropyLoss and Keras'
`from_logits=True`, the numerically stable forms), so that it is never applied twice. The torch
backend leaves a final softmax out of the graph and applies it unless `net.logits` is set
(backends/torch/plan.py); training strips the heads it trains on logits (train/plan.py,
train/generate.py). All three ask the functions below. Framework-free.
"""

from __future__ import annotations

from collections.abc import Iterable

from .ir import Model
from .layers import REGISTRY, Layer


def final_activation(layer: Layer) -> str | None:
    """The activation a layer ends in: an activation layer's function, else the layer's own
    `activation` argument (`dense 10 softmax`), else None."""
    if layer.kind == "activation":
        return layer.fn
    return getattr(layer, "activation", None)


def without_final_activation(layer: Layer) -> Layer:
    """The layer without the activation it ends in: an activation layer becomes an identity
    (the node keeps its name, so weights and outputs still find it)."""
    if layer.kind == "activation":
        return REGISTRY["identity"]()
    if getattr(layer, "activation", None) is None:
        return layer
    return layer.model_copy(update={"activation": None})


def strip_final_activations(model: Model, names: Iterable[str]) -> Model:
    """A copy of the model whose nodes `names` end without their activation (the model itself
    when there is nothing to strip)."""
    strip = set(names)
    if not strip:
        return model
    nodes = [
        node.model_copy(update={"layer": without_final_activation(node.layer)})
        if node.name in strip
        else node
        for node in model.nodes
    ]
    copy = model.model_copy(update={"nodes": nodes})
    copy.__dict__.pop("_node_index", None)  # the name index would still hold the old nodes
    return copy
