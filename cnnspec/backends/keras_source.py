"""Standalone Keras 3 source for a model, from templates/keras_model.py.j2.

The statements come from the same recipes that cnnspec.backends.keras.build instantiates, and
the layers Keras lacks are pasted in from cnnspec.backends.keras_layers, so the generated file
builds the very model `build` does. Output is deterministic: the same spec gives the same bytes.

The file keeps the spec's structure as the torch source does (cnnspec.backends.blocks decides
for both): a block definition used several times becomes one function per structural variant,
`def bottleneck(x, filters, strides, name):`, called once per instance with the constants that
differ between instances; its layers are named `f"{name}_conv1"`, so the layer names (and the
`.weights.h5` layout) are those of the runtime model.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass
from pathlib import Path

from ..ir import Model
from ..layers.preprocess import formula_of
from . import blocks, keras_recipe, pysource
from .keras_plan import keras_name, keras_names, recipes
from .keras_recipe import Recipe
from .pysource import identifier

# Module-level names of the generated file, and the arguments every block function takes.
_RESERVED = frozenset({"x", "name", "keras", "layers", "ops", "build_model", *keras_recipe.CUSTOM})
# A block function must not shadow a builtin the pasted layer classes call (`float`, `tuple`).
_FUNCTIONS_AVOID = _RESERVED | frozenset(dir(builtins))


def literal(value):
    """A recipe argument (str, number, bool, None, tuples of these) as a pysource tree."""
    if isinstance(value, str):
        return pysource.string(value)
    if isinstance(value, (list, tuple)):
        return pysource.tuple_of(literal(v) for v in value)
    return repr(value)


def _call(target: str, cls_name: str, args: list, name, inputs: list[str]) -> list[str]:
    """`target = layers.Cls(k=v, ..., name=...)(x)`, laid out within the line width; `args`
    are (keyword, pysource tree) pairs."""
    func = cls_name if cls_name in keras_recipe.CUSTOM else f"layers.{cls_name}"
    kwargs = [pysource.kwarg(k, v) for k, v in args]
    kwargs.append(pysource.kwarg("name", name))
    arg = pysource.Group(None, "[", tuple(inputs), "]") if len(inputs) > 1 else inputs[0]
    return pysource.statement(f"{target} = ", pysource.call(pysource.call(func, *kwargs), arg), 1)


def _var(kname: str) -> str:
    return f"x_{kname}"


@dataclass
class _Network:
    """What the writer reads about the model: Keras names, recipes and inputs per node."""

    names: dict[str, str]
    recipes: dict[str, Recipe]
    inputs: dict[str, list[str]]
    order: list[str]


def _network(model: Model) -> _Network:
    planned = recipes(model)
    return _Network(
        keras_names(model),
        {n: r for n, _, r in planned},
        {n: list(i) for n, i, _ in planned},
        [n for n, _, _ in planned],
    )


# --- Block functions ------------------------------------------------------------------------


def _suffix(kname: str, prefix: str) -> str | None:
    """A layer's name within its block (`conv1` of `layer1_bottleneck1_conv1`), or None
    where it does not start with the block's."""
    rest = kname[len(prefix) :]
    return rest if kname.startswith(prefix) and rest else None


def _instance(group, net: _Network, model: Model) -> blocks.Instance | None:
    """The group as one function call (blocks.find), described: its recipes with every
    argument but the name a constant, and every layer named after the block's path (so the
    function can name it `f"{name}_conv1"`); None where it cannot be one."""
    inst = blocks.find(group, [(n, net.inputs[n]) for n in net.order], model.outputs)
    if inst is None:
        return None
    prefix = keras_name(inst.path) + "_"
    local = {inst.input: -1, **{n: k for k, n in enumerate(inst.nodes)}}
    key, found = [], []
    for node in inst.nodes:
        own = _suffix(net.names[node], prefix)
        if own is None:
            return None
        key.append((own, tuple(local[i] for i in net.inputs[node])))
        for cls_name, kwargs in net.recipes[node]:
            suffix = _suffix(kwargs["name"], prefix)
            if suffix is None:
                return None
            key.append((cls_name, suffix, tuple(kwargs)))
            found += [(v, (k, suffix)) for k, v in kwargs.items() if k != "name"]
    inst.key = repr(key)
    inst.constants = [v for v, _ in found]
    inst.names = [n for _, n in found]
    return inst


def _choose(model: Model, net: _Network) -> tuple[list[blocks.Family], dict[str, blocks.Instance]]:
    """Block definitions that become functions (blocks.choose), named after the definition
    (`bottleneck`, `bottleneck2`...), never as build_model's variables."""
    names = set(_FUNCTIONS_AVOID) | {_var(k) for k in net.names.values()}

    def name(definition: str, k: int) -> str:
        chosen = identifier(definition + (str(k + 1) if k else ""), names)
        names.add(chosen)
        return chosen

    return blocks.choose(model, lambda g: _instance(g, net, model), name, _RESERVED)


def _function(fam: blocks.Family, net: _Network) -> list[str]:
    """One block function: the first instance's layers, its differing constants the
    function's arguments, its layer names the `name` argument plus their suffix."""
    inst = fam.instances[0]
    prefix = keras_name(inst.path) + "_"
    var = {inst.input: "x", **{n: "x_" + net.names[n][len(prefix) :] for n in inst.nodes}}
    where = inst.path + (f" and {len(fam.instances) - 1} more" if len(fam.instances) > 1 else "")
    lines = pysource.lines("def ", pysource.call(fam.name, "x", *fam.params, "name"), 0, ":")
    doc = pysource.docstring(f"The spec's block {fam.block}, as used at {where}.", 1)
    lines.append(f'    """{doc}"""')
    k = 0
    for node in inst.nodes:
        args = [var[i] for i in net.inputs[node]]
        for cls_name, kwargs in net.recipes[node]:
            values = []
            for key, value in kwargs.items():
                if key == "name":
                    continue
                slot = fam.slots[k]
                values.append((key, literal(value) if slot is None else fam.params[slot]))
                k += 1
            name = 'f"{name}_' + kwargs["name"][len(prefix) :] + '"'
            lines += _call(var[node], cls_name, values, name, args)
            args = [var[node]]
    lines.append(f"    return {var[inst.output]}")
    return lines


# --- The network ----------------------------------------------------------------------------


def statements(
    model: Model,
    net: _Network | None = None,
    taken: dict[str, blocks.Instance] | None = None,
    families: list[blocks.Family] = (),
) -> tuple[list[str], set[str]]:
    """The body of build_model() after the Input line, and the custom classes it uses; a
    block instance in `taken` is one call of its family's function."""
    net = net or _network(model)
    taken = taken or {}
    family = {id(inst): fam for fam in families for inst in fam.instances}
    lines: list[str] = []
    custom: set[str] = {c for r in net.recipes.values() for c, _ in r if c in keras_recipe.CUSTOM}
    for name in net.order:
        inst = taken.get(name)
        if inst is not None:
            if name == inst.nodes[0]:
                fam = family[id(inst)]
                call = pysource.call(
                    fam.name,
                    _var(net.names[inst.input]),
                    *(literal(v) for v in fam.arguments(inst)),
                    pysource.kwarg("name", pysource.string(keras_name(inst.path))),
                )
                lines += pysource.statement(f"{_var(net.names[inst.output])} = ", call, 1)
            continue
        target = _var(net.names[name])
        args = [_var(net.names[i]) for i in net.inputs[name]]
        for cls_name, kwargs in net.recipes[name]:
            values = [(k, literal(v)) for k, v in kwargs.items() if k != "name"]
            lines += _call(target, cls_name, values, literal(kwargs["name"]), args)
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
            found[node.name] = "\n".join(lines[first - 1 : node.end_lineno])
    return [found[c] for c in keras_recipe.CUSTOM if c in names]


def render(model: Model, source: str | None = None) -> str:
    """The standalone source: a function per repeated block definition (as the torch source
    has a class), then build_model(). The same spec gives the same bytes."""
    net = _network(model)
    families, taken = _choose(model, net)
    body, custom = statements(model, net, taken, families)
    names = net.names
    outputs = [_var(names[o]) for o in model.outputs]
    first = model.nodes[0].name
    start = pysource.statement(
        f"{_var(names[first])} = ",
        pysource.call(
            "keras.Input",
            pysource.kwarg("shape", literal(tuple(model.input_shape))),
            pysource.kwarg("name", pysource.string(names[first])),
        ),
        1,
    )
    returned = pysource.statement(
        "return ",
        pysource.call(
            "keras.Model",
            _var(names[first]),
            outputs[0] if len(outputs) == 1 else pysource.Group(None, "[", tuple(outputs), "]"),
            pysource.kwarg("name", pysource.string(keras_name(model.name))),
        ),
        1,
    )
    return pysource.render(
        "keras_model.py.j2",
        model_name=model.name,
        source=Path(source or model.source or "SPEC").name,
        start=start,
        body=body,
        returned=returned,
        classes=class_sources(custom),
        functions=[_function(f, net) for f in families],
        totals=model.totals(),
        preprocess=formula_of(model),
    )
