"""Standalone Keras 3 source for a model, from templates/keras_model.py.j2.

The statements come from the same recipes that cnnspec.backends.keras.build instantiates, and
the layers Keras lacks are pasted in from cnnspec.backends.keras_layers, so the generated file
builds the very model `build` does. Output is deterministic: the same spec gives the same bytes.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from ..ir import Model
from . import keras_recipe

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


def _call(target: str, cls_name: str, kwargs: dict, inputs: list[str]) -> list[str]:
    """`target = layers.Cls(k=v, ...)(x)`, wrapped to the line width."""
    func = cls_name if cls_name in keras_recipe.CUSTOM else f"layers.{cls_name}"
    args = [f"{k}={literal(v)}" for k, v in kwargs.items() if k != "name"]
    args.append(f"name={literal(kwargs['name'])}")
    head = f"{INDENT}{target} = {func}("
    arg = f"[{', '.join(inputs)}]" if len(inputs) > 1 else inputs[0]
    one = f"{head}{', '.join(args)})({arg})"
    if len(one) <= WIDTH:
        return [one]
    lines, line = [head], INDENT * 2
    for i, a in enumerate(args):   # leave room for the "([" that may follow the last line
        piece = a + (", " if i < len(args) - 1 else ")")
        if len(line) + len(piece.rstrip()) > WIDTH - 2 and line.strip():
            lines.append(line.rstrip())
            line = INDENT * 2
        line += piece
    lines.append(line)
    if len(lines[-1]) + len(arg) + 2 <= WIDTH:
        lines[-1] += f"({arg})"
    elif len(INDENT * 2) + len(arg) + 1 <= WIDTH or len(inputs) == 1:
        # one input stays one tensor, however long its name: `([x,])` would pass a list
        lines[-1] += "("
        lines.append(f"{INDENT * 2}{arg})")
    else:
        lines[-1] += "(["
        lines += [f"{INDENT * 2}{x}," for x in inputs]
        lines.append(f"{INDENT}])")
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
    import jinja2

    from ..resources import path
    from .keras import keras_name, keras_names
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(path("templates")), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    body, custom = statements(model)
    names = keras_names(model)
    outputs = [_var(names[o]) for o in model.outputs]
    classes = class_sources(custom)
    return env.get_template("keras_model.py.j2").render(
        model=model, source=Path(source or model.source or "SPEC").name,
        name=keras_name(model.name), input_var=_var(names[model.nodes[0].name]),
        input_name=names[model.nodes[0].name], input_shape=literal(tuple(model.input_shape)),
        body=body, outputs=outputs[0] if len(outputs) == 1 else f"[{', '.join(outputs)}]",
        classes=classes, totals=model.totals())
