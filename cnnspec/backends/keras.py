"""Keras 3 backend: the IR as a functional keras.Model, and the same as standalone source.

Every node becomes the Keras layers of its recipe, from the emitter table keyed by layer kind
(cnnspec.backends.keras_emitters); this module names no layer kind. The names and recipes that
building and source share are in keras_plan.py (Keras-safe names, `layer1.conv1` ->
`layer1_conv1`, so that weights map between frameworks by node name).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from ..errors import SpecError
from ..ir import Model
from . import error_span, keras_recipe
from .keras_plan import keras_name, keras_names, recipes

__all__ = ["build", "keras_name", "keras_names", "recipes", "source_code"]


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
    planned = recipes(model)
    for name, inputs, recipe in planned:
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
    with _recursion_room(model, sum(len(recipe) for _, _, recipe in planned) + len(dead) + 2):
        return keras.Model(
            tensors[first.name],
            outputs if len(outputs) > 1 else outputs[0],
            name=keras_name(model.name),
        )


@contextmanager
def _recursion_room(model: Model, layers: int):
    """Keras maps a functional graph recursively, a Python frame per layer along the longest
    path (keras/src/ops/function.py, `_build_map_helper`), so a chain of 19,000 layers hits
    Python's default limit of 1,000. Raise the limit for that call only: safe from Python 3.11
    on, where a Python-to-Python call takes no C stack. Before 3.11 each frame does, so a graph
    deeper than the limit is refused (E423) rather than risking a crash."""
    old = sys.getrecursionlimit()
    if sys.version_info < (3, 11):
        if layers + 200 > old:
            raise SpecError(
                "E423",
                f"{layers:,} Keras layers are deeper than Keras can build "
                f"on Python {sys.version_info[0]}.{sys.version_info[1]}",
                error_span(model.nodes[-1].span),
                path=model.source,
                hint="use Python 3.11 or later, or the torch backend",
            )
        yield
        return
    sys.setrecursionlimit(old + 4 * layers)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


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


def source_code(model: Model) -> str:
    """Standalone Keras 3 source for the model (see cnnspec.backends.keras_source)."""
    from .keras_source import render

    return render(model)
