"""Standalone Keras 3 source for a model, from templates/keras_model.py.j2.

The statements come from the same recipes that cnnspec.backends.keras.build instantiates, and
the layers Keras lacks are pasted in from cnnspec.backends.keras_layers, so the generated file
builds the very model `build` does. Output is deterministic: the same spec gives the same bytes.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from ..ir import Model
from . import keras_recipe

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
WIDTH = 100
INDENT = " " * 4


def literal(value) -> str:
    """Python source for a recipe argument (str, number, bool, None, tuples of these)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        items = ", ".join(literal(v) for v in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    return repr(value)


def _call(target: str, cls_name: str, kwargs: dict, arg: str) -> list[str]:
    """`target = layers.Cls(k=v, ...)(arg)`, wrapped to the line width."""
    func = cls_name if cls_name in keras_recipe.CUSTOM else f"layers.{cls_name}"
    args = [f"{k}={literal(v)}" for k, v in kwargs.items() if k != "name"]
    args.append(f"name={literal(kwargs['name'])}")
    head = f"{INDENT}{target} = {func}("
    one = f"{head}{', '.join(args)})({arg})"
    if len(one) <= WIDTH:
        return [one]
    lines, line = [head], INDENT * 2
    for i, a in enumerate(args):
        piece = a + (", " if i < len(args) - 1 else f")({arg})")
        if len(line) + len(piece.rstrip()) > WIDTH and line.strip():
            lines.append(line.rstrip())
            line = INDENT * 2
        line += piece
    lines.append(line)
    return lines


def _var(kname: str) -> str:
    return f"x_{kname}"


def statements(model: Model) -> tuple[list[str], set[str]]:
    """The body of build_model() after the Input line, and the custom classes it uses."""
    from .keras import keras_names, recipes
    names = keras_names(model)
    lines: list[str] = []
    custom: set[str] = set()
    for name, inputs, recipe in recipes(model):
        target = _var(names[name])
        args = [_var(names[i]) for i in inputs]
        arg = f"[{', '.join(args)}]" if len(args) > 1 else args[0]
        for cls_name, kwargs in recipe:
            if cls_name in keras_recipe.CUSTOM:
                custom.add(cls_name)
            lines += _call(target, cls_name, kwargs, arg)
            arg = target
    return lines, custom


def render(model: Model, source: str | None = None) -> str:
    import jinja2

    from . import keras_layers
    from .keras import keras_name, keras_names
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    body, custom = statements(model)
    names = keras_names(model)
    outputs = [_var(names[o]) for o in model.outputs]
    classes = [inspect.getsource(getattr(keras_layers, c)).rstrip()
               for c in keras_recipe.CUSTOM if c in custom]
    return env.get_template("keras_model.py.j2").render(
        model=model, source=Path(source or model.source or "SPEC").name,
        name=keras_name(model.name), input_var=_var(names[model.nodes[0].name]),
        input_name=names[model.nodes[0].name], input_shape=literal(tuple(model.input_shape)),
        body=body, outputs=outputs[0] if len(outputs) == 1 else f"[{', '.join(outputs)}]",
        classes=classes, totals=model.totals())
