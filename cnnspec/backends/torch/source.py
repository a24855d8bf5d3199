"""The network as standalone PyTorch source (`cnnspec build --backend torch`); needs no torch."""

from __future__ import annotations

from pathlib import Path

from ...ir import Model
from .. import torch_emit as te
from .plan import _CODE_NAMES, Plan, Step, identifier, layout, plan
from .runtime import _release_points


def template_dir() -> Path:
    """templates/: inside the package when installed, beside it in a checkout."""
    from ...resources import path
    return path("templates")


def _variables(p: Plan) -> dict[str, str]:
    """The forward's variable per value: `x` along a plain chain (one reader, the next line),
    a name after the layer where a value is kept for later (skips, branches, outputs)."""
    live = [s for s in p.steps if s.live]
    pos = {p.input: -1, **{s.node: k for k, s in enumerate(live)}}
    readers: dict[str, set[int]] = {n: set() for n in pos}
    for k, s in enumerate(live):
        for i in s.inputs:
            readers[i].add(k)
    taken = set(_CODE_NAMES)

    def chain(name: str) -> bool:
        if name in p.outputs:
            return len(p.outputs) == 1 and not readers[name] and pos[name] == len(live) - 1
        return readers[name] == {pos[name] + 1}

    def named(name: str) -> str:
        var = identifier(name.replace(".", "_"), taken)
        taken.add(var)
        return var

    names = {p.input: "x" if chain(p.input) else "inputs"}
    for s in live:
        alias = s.op.forward == te.X and s.op.module is None and not s.softmax
        if alias and (chain(s.node) or names[s.inputs[0]] != "x"):
            names[s.node] = names[s.inputs[0]]
        else:
            names[s.node] = "x" if chain(s.node) else named(s.node)
    return names


def _drops(p: Plan, live: list[Step], names: dict[str, str],
           groups: list[list[str]]) -> dict[int, list[str]]:
    """The named variables to `del` after each line, so that the file releases tensors when
    the runtime module does (`_release_points`); `x` is released by being rebound."""
    release = _release_points(live, groups, p.input)
    made = {p.input: -1, **{s.node: k for k, s in enumerate(live)}}
    last: dict[str, tuple[int, int]] = {}    # variable -> (released after, made at)
    for value, var in names.items():         # a variable may carry several values (aliases)
        if var != "x":
            at, first = last.get(var, (-1, made[value]))
            last[var] = (max(at, release.get(value, len(live))), max(first, made[value]))
    for value in p.outputs:
        last.pop(names[value], None)
    drops: dict[int, list[tuple[int, str]]] = {}
    for var, (at, first) in last.items():
        if at < len(live) - 1:
            drops.setdefault(at, []).append((-first, var))
    # inner scopes first, as the runtime module releases them
    return {k: [var for _, var in sorted(v)] for k, v in drops.items()}


def _nchw(shape: tuple[int, ...]) -> str:
    dims = (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape
    return "(N, " + ", ".join(str(d) for d in dims) + ")"


def generate(model: Model) -> str:
    """Readable PyTorch source for the network: one nn.Module class, a build_model() function;
    it imports torch only. The same spec gives the same bytes."""
    import jinja2
    p = plan(model)
    names = _variables(p)
    used = {"torch", "nn"}
    init = []
    for path, step in layout(p):
        target = "self." + ".".join(path)
        if step is None:
            init.append(f"{target} = nn.Module()")
            continue
        init.append(f"{target} = {te.render(step.op.module, [])}")
        used |= te.namespaces(step.op.module)
        for attr, value in step.op.setup:
            init.append(f"{target}.{attr} = {te.render(value, [])}")
            used |= te.namespaces(value)
    body = []
    live = [s for s in p.steps if s.live]
    drops = _drops(p, live, names, [g.members for g in model.groups])
    for k, step in enumerate(live):
        out = names[step.node]
        args = [names[i] for i in step.inputs]
        module = "self." + ".".join(step.attr) if step.attr else None
        expr = te.render(step.op.forward, args, module)
        used |= te.namespaces(step.op.forward)
        if expr != out:
            body.append(f"{out} = {expr}  # {_nchw(step.shape)}")
        if step.softmax:
            used.add("F")
            body += ["if not self.logits:", f"    {out} = F.softmax({out}, dim=1)"]
        # `x` is released by being rebound; where a kept value is written instead, the chain
        # value it read dies here
        dead = (["x"] if out != "x" and "x" in args else []) + drops.get(k, [])
        if dead:
            body.append("del " + ", ".join(dead))
    outputs = [names[o] for o in p.outputs]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False, trim_blocks=True, lstrip_blocks=True)
    text = env.get_template("torch_model.py.j2").render(
        class_name=p.class_name, source=_comment(Path(model.source).name if model.source
                                                 else model.name),
        input_var=names[p.input], input_shape=_nchw(p.input_shape), init=init, body=body,
        outputs=outputs, output_shapes=[_nchw(model.node(o).shape) for o in p.outputs],
        uses_f="F" in used, softmax=bool(p.softmax_outputs),
        version=__import__("cnnspec").__version__)
    return text


def _comment(text: str) -> str:
    """Text safe inside a one-line comment or docstring: printable ASCII, no quotes doubled."""
    import json
    return json.dumps(text, ensure_ascii=True)[1:-1].replace('"""', '\\"\\"\\"')
