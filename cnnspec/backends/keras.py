"""Keras 3 backend: the IR as a functional keras.Model, and the same as standalone source.

Every node becomes the Keras layers of its recipe (`layer.keras_layers(name, in_shapes)`, see
cnnspec.backends.keras_recipe); this module names no layer kind. Keras layer names are the
spec's dotted names made Keras-safe (`layer1.conv1` -> `layer1_conv1`), so weights can be
mapped between frameworks by node name (cnnspec.convert).
"""

from __future__ import annotations

import re

from ..ir import Model
from . import keras_recipe


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


def recipes(model: Model) -> list[tuple[str, list[str], keras_recipe.Recipe]]:
    """(node name, input node names, recipe) for every node after the input."""
    names = keras_names(model)
    taken = set(names.values())
    out = []
    for node in model.nodes[1:]:
        shapes = [model.node(i).shape for i in node.inputs]
        recipe = node.layer.keras_layers(names[node.name], shapes)
        for _, kwargs in recipe:   # helper layers (`conv1_pad`) must not take a node's name
            if kwargs["name"] != names[node.name] and kwargs["name"] in taken:
                raise ValueError(f"node {node.name!r} needs a Keras layer {kwargs['name']!r}, "
                                 "which another node is called; rename that node")
            taken.add(kwargs["name"])
        out.append((node.name, node.inputs, recipe))
    return out


def _layer_class(cls_name: str):
    import keras
    if cls_name in keras_recipe.CUSTOM:
        from . import keras_layers
        return getattr(keras_layers, cls_name)
    return getattr(keras.layers, cls_name)


def build(model: Model):
    """The IR as a keras.Model (functional API); outputs in the spec's order."""
    import keras
    names = keras_names(model)
    first = model.nodes[0]
    tensors = {first.name: keras.Input(shape=first.shape, name=names[first.name])}
    for name, inputs, recipe in recipes(model):
        args = [tensors[i] for i in inputs]
        x = args if len(args) > 1 else args[0]
        for cls_name, kwargs in recipe:
            x = _layer_class(cls_name)(**kwargs)(x)
        tensors[name] = x
    outputs = [tensors[o] for o in model.outputs]
    dead = _dead_ends(model)
    if dead:
        from .keras_layers import KeepAlive
        keep = _free_name("keep_alive", set(names.values()))
        outputs[0] = KeepAlive(name=keep)([outputs[0], *(tensors[n] for n in dead)])
    return keras.Model(tensors[first.name], outputs if len(outputs) > 1 else outputs[0],
                       name=keras_name(model.name))


def _dead_ends(model: Model) -> list[str]:
    """Nodes that neither an output nor any other node reads, outputs' ancestors aside."""
    live = model.live()
    read = {i for n in model.nodes for i in n.inputs}
    return [n.name for n in model.nodes if n.name not in live and n.name not in read]


def _free_name(stem: str, taken: set[str]) -> str:
    name, i = stem, 1
    while name in taken:
        i += 1
        name = f"{stem}_{i}"
    return name


def generate(model: Model) -> str:
    """Standalone Keras 3 source for the model (see cnnspec.backends.keras_source)."""
    from .keras_source import render
    return render(model)
