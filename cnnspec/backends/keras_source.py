"""Standalone Keras 3 source for a model, from templates/keras_model.py.j2.

The statements come from the same recipes that cnnspec.backends.keras.build instantiates, and
the layers Keras lacks are pasted in from cnnspec.backends.keras_layers, so the generated file
builds the very model `build` does. Output is deterministic: the same spec gives the same bytes.
"""

from __future__ import annotations

import ast
from pathlib import Path

from ..ir import Model
from . import keras_recipe, pysource
from .keras_plan import keras_name, keras_names, recipes


def literal(value):
    """A recipe argument (str, number, bool, None, tuples of these) as a pysource tree."""
    if isinstance(value, str):
        return pysource.string(value)
    if isinstance(value, (list, tuple)):
        return pysource.tuple_of(literal(v) for v in value)
    return repr(value)


def _call(target: str, cls_name: str, kwargs: dict, inputs: list[str]) -> list[str]:
    """`target = layers.Cls(k=v, ...)(x)`, laid out within the line width."""
    func = cls_name if cls_name in keras_recipe.CUSTOM else f"layers.{cls_name}"
    args = [pysource.kwarg(k, literal(v)) for k, v in kwargs.items() if k != "name"]
    args.append(pysource.kwarg("name", literal(kwargs["name"])))
    arg = pysource.Group(None, "[", tuple(inputs), "]") if len(inputs) > 1 else inputs[0]
    return pysource.statement(f"{target} = ", pysource.call(pysource.call(func, *args), arg), 1)


def _var(kname: str) -> str:
    return f"x_{kname}"


def statements(model: Model) -> tuple[list[str], set[str]]:
    """The body of build_model() after the Input line, and the custom classes it uses."""
    names = keras_names(model)
    lines: list[str] = []
    custom: set[str] = set()
    for name, inputs, recipe in recipes(model):
        target = _var(names[name])
        args = [_var(names[i]) for i in inputs]
        for cls_name, kwargs in recipe:
            if cls_name in keras_recipe.CUSTOM:
                custom.add(cls_name)
            lines += _call(target, cls_name, kwargs, args)
            args = [target]
    return lines, custom


def class_sources(names: set[str]) -> list[str]:
    """The source of the custom layer classes named, decorators included, read from
    keras_layers.py without importing it (so generating code needs no TensorFlow)."""
    text = (Path(__file__).with_name("keras_layers.py")).read_text(encoding="utf-8")
    lines = text.splitlines()
    found = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.ClassDef) and node.name in names:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            found[node.name] = "\n".join(lines[first - 1:node.end_lineno])
    return [found[c] for c in keras_recipe.CUSTOM if c in names]


def render(model: Model, source: str | None = None) -> str:
    body, custom = statements(model)
    names = keras_names(model)
    outputs = [_var(names[o]) for o in model.outputs]
    first = model.nodes[0].name
    start = pysource.statement(f"{_var(names[first])} = ", pysource.call(
        "keras.Input", pysource.kwarg("shape", literal(tuple(model.input_shape))),
        pysource.kwarg("name", pysource.string(names[first]))), 1)
    returned = pysource.statement("return ", pysource.call(
        "keras.Model", _var(names[first]),
        outputs[0] if len(outputs) == 1 else pysource.Group(None, "[", tuple(outputs), "]"),
        pysource.kwarg("name", pysource.string(keras_name(model.name)))), 1)
    return pysource.render(
        "keras_model.py.j2", model_name=model.name,
        source=Path(source or model.source or "SPEC").name, start=start, body=body,
        returned=returned, classes=class_sources(custom), totals=model.totals())
