"""What building a Keras model and writing its source share: the Keras layer names and each
node's recipe from the emitter table (keras_emitters.py). Needs no framework.

Keras layer names are the spec's dotted names made Keras-safe (`layer1.conv1` ->
`layer1_conv1`), so weights can be mapped between frameworks by node name (cnnspec.convert).
"""

from __future__ import annotations

import re

from ..ir import Model
from .keras_emitters import keras_layers
from .keras_recipe import Recipe


def keras_name(name: str) -> str:
    """The Keras layer name of an IR node: letters, digits and '_' only."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return safe if safe[:1].isalpha() else f"n_{safe}"


def keras_names(model: Model) -> dict[str, str]:
    """Node name -> Keras layer name, refusing two nodes that would share one."""
    names = {n.name: keras_name(n.name) for n in model.nodes}
    seen: dict[str, str] = {}
    for node, kname in names.items():
        if kname in seen:
            raise ValueError(f"nodes {seen[kname]!r} and {node!r} both become the Keras layer "
                             f"name {kname!r}; rename one of them")
        seen[kname] = node
    return names


def recipes(model: Model) -> list[tuple[str, list[str], Recipe]]:
    """(node name, input node names, recipe) for every node after the input."""
    names = keras_names(model)
    taken = set(names.values())
    out = []
    for node in model.nodes[1:]:
        shapes = [model.node(i).shape for i in node.inputs]
        recipe = keras_layers(node.layer, names[node.name], shapes, node.span, model.source)
        for _, kwargs in recipe:   # helper layers (`conv1_pad`) must not take a node's name
            if kwargs["name"] != names[node.name] and kwargs["name"] in taken:
                raise ValueError(f"node {node.name!r} needs a Keras layer {kwargs['name']!r}, "
                                 "which another node is called; rename that node")
            taken.add(kwargs["name"])
        out.append((node.name, node.inputs, recipe))
    return out
