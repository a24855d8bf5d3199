"""What building a Keras model and writing its source share: the Keras layer names and each
node's recipe from the emitter table (keras_emitters.py). Needs no framework.

Keras layer names are the spec's dotted names made Keras-safe (`layer1.conv1` ->
`layer1_conv1`), so weights can be mapped between frameworks by node name (cnnspec.convert).
"""

from __future__ import annotations

import re

from ..errors import SpecError
from ..ir import Model
from . import error_span
from .keras_emitters import keras_layers
from .keras_recipe import Recipe


def keras_name(name: str) -> str:
    """The Keras layer name of an IR node: letters, digits and '_' only."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return safe if safe[:1].isalpha() else f"n_{safe}"


def keras_names(model: Model) -> dict[str, str]:
    """Node name -> Keras layer name; E421 at the second of two nodes that would share one
    (`stage1.conv1` beside `stage1_conv1`)."""
    names = {n.name: keras_name(n.name) for n in model.nodes}
    seen: dict[str, str] = {}
    for node in model.nodes:
        kname = names[node.name]
        if kname in seen:
            raise _error(
                "E421",
                model,
                node,
                f"nodes '{seen[kname]}' and '{node.name}' both "
                f"become the Keras layer name '{kname}'",
                "rename one of them: Keras names hold letters, digits and '_' only",
            )
        seen[kname] = node.name
    return names


def recipes(model: Model) -> list[tuple[str, list[str], Recipe]]:
    """(node name, input node names, recipe) for every node after the input."""
    names = keras_names(model)
    taken = set(names.values())
    out = []
    for node in model.nodes[1:]:
        shapes = [model.node(i).shape for i in node.inputs]
        recipe = keras_layers(node.layer, names[node.name], shapes, node.span, model.source)
        for _, kwargs in recipe:  # helper layers (`conv1_pad`) must not take a node's name
            if kwargs["name"] != names[node.name] and kwargs["name"] in taken:
                raise _error(
                    "E421",
                    model,
                    node,
                    f"node '{node.name}' needs a Keras layer "
                    f"'{kwargs['name']}', which another node is called",
                    "rename that node",
                )
            taken.add(kwargs["name"])
            _check_sizes(model, node, kwargs)
        out.append((node.name, node.inputs, recipe))
    return out


# Keras and TensorFlow hold layer arguments (strides, sizes, pads) as 32-bit integers; a
# larger one aborts the process inside TensorFlow instead of raising.
INT32_MAX = 2**31 - 1


def _check_sizes(model: Model, node, kwargs: dict) -> None:
    def walk(key, value):
        if isinstance(value, (list, tuple)):
            for v in value:
                walk(key, v)
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT32_MAX:
            raise _error(
                "E422",
                model,
                node,
                f"Keras argument {key}={value} is larger than "
                f"Keras can hold (at most {INT32_MAX:,})",
                "use a smaller value",
            )

    for key, value in kwargs.items():
        walk(key, value)


def _error(code: str, model: Model, node, message: str, hint: str) -> SpecError:
    return SpecError(code, message, error_span(node.span), hint=hint, path=model.source)
