"""The network as standalone PyTorch source (`cnnspec build --backend torch`); needs no torch.

The file keeps the spec's structure: a block definition used several times becomes one
nn.Module class (as torchvision writes `Bottleneck`), its instances attributes of the network
built with the constants that differ between them as constructor arguments; instances that
differ in structure (a projection shortcut only where the stride or width changes) get one
class per variant. Attribute paths, and so state_dict keys, are the runtime module's; tensors
are released where the runtime module releases them (`_release_points`), with `del`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ...ir import Model
from ...layers.preprocess import formula_of
from .. import blocks, pysource
from .. import torch_emit as te
from .plan import _CODE_NAMES, Plan, Step, class_name, identifier, layout, plan
from .runtime import _release_points

# Names of torch's positional constructor arguments, only to name a block class's arguments.
_POSITIONAL = {
    "nn.Conv2d": ("in_channels", "out_channels", "kernel_size"),
    "nn.ConvTranspose2d": ("in_channels", "out_channels", "kernel_size"),
    "nn.Linear": ("in_features", "out_features"),
    "nn.BatchNorm1d": ("num_features",),
    "nn.BatchNorm2d": ("num_features",),
}


def template_dir() -> Path:
    """templates/: inside the package when installed, beside it in a checkout."""
    from ...resources import path

    return path("templates")


# --- Block instances ------------------------------------------------------------------------


@dataclass
class _Instance(blocks.Instance):
    """A block instance as one module: where it lives, its steps, the groups inside it."""

    attr: tuple[str, ...] = ()
    steps: list[Step] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)


def _instance(group, p: Plan, model: Model) -> _Instance | None:
    """The group as one module call (blocks.find), described, or None where it cannot be one:
    its steps must be live, and all its modules under the one attribute the group's path
    names."""
    found = blocks.find(group, [(s.node, s.inputs) for s in p.steps], p.outputs)
    if found is None:
        return None
    members = set(found.nodes)
    steps = [s for s in p.steps if s.node in members]
    if any(not s.live or s.softmax for s in steps):
        return None
    depth = len(group.path.split("."))
    attrs = {s.attr[:depth] for s in steps if s.attr is not None}
    if len(attrs) != 1 or any(s.attr is not None and len(s.attr) == depth for s in steps):
        return None
    (attr,) = attrs
    if any(s.attr is not None and s.attr[:depth] == attr for s in p.steps if s not in steps):
        return None
    inner = [
        g.members
        for g in model.groups
        if g.path.startswith(group.path + ".") and set(g.members) <= set(group.members)
    ]
    inst = _Instance(
        found.path,
        found.block,
        found.nodes,
        found.input,
        found.output,
        attr=attr,
        steps=steps,
        groups=inner,
    )
    _describe(inst)
    return inst


def _is_constant(value) -> bool:
    if isinstance(value, tuple):
        return all(_is_constant(v) for v in value)
    return not isinstance(value, (te.Expr, list))


def _holes(expr, found: list, fn: str = "", pos: str = ""):
    """expr with each constant argument of a constructor call replaced by a numbered Var
    (appended to `found` as (value, a name for it))."""
    if isinstance(expr, te.Call):
        names = _POSITIONAL.get(expr.fn, ())
        args = tuple(
            _holes(a, found, expr.fn, names[i] if i < len(names) else "arg")
            for i, a in enumerate(expr.args)
        )
        kwargs = tuple((k, _holes(v, found, expr.fn, k)) for k, v in expr.kwargs)
        return replace(expr, args=args, kwargs=kwargs)
    if isinstance(expr, (list, tuple)) and not _is_constant(expr):
        return type(expr)(_holes(e, found, fn, pos) for e in expr)
    if _is_constant(expr) and fn:
        found.append((expr, pos))
        return te.Var(f"#{len(found) - 1}")
    return expr


def _describe(inst: _Instance) -> None:
    """The instance's structure (module calls with holes, forwards, wiring, inner groups) as
    a key, and its constants in order."""
    local = {inst.input: -1, **{s.node: k for k, s in enumerate(inst.steps)}}
    found: list = []
    key = []
    depth = len(inst.attr)
    for s in inst.steps:
        start = len(found)
        module = _holes(s.op.module, found) if s.op.module is not None else None
        setup = tuple((a, _holes(v, found)) for a, v in s.op.setup)
        where = "_".join(s.attr[depth:]) if s.attr else ""
        found[start:] = [(v, (n, where)) for v, n in found[start:]]
        key.append(
            (
                s.attr[depth:] if s.attr else None,
                module,
                setup,
                s.op.forward,
                tuple(local[i] for i in s.inputs),
            )
        )
    groups = tuple(tuple(sorted(local[m] for m in g if m in local)) for g in inst.groups)
    inst.key = repr((key, groups))  # forwards may hold lists: compare as text
    inst.constants = [v for v, _ in found]
    inst.names = [n for _, n in found]


def _choose(model: Model, p: Plan) -> tuple[list[blocks.Family], dict[str, _Instance]]:
    """Block definitions that become classes (blocks.choose): one class per structure,
    named after the definition (`Bottleneck`, `Bottleneck2`...)."""
    names = set(_CODE_NAMES) | {p.class_name, "Tensor"}

    def name(definition: str, k: int) -> str:
        chosen = identifier(class_name(definition) + (str(k + 1) if k else ""), names)
        names.add(chosen)
        return chosen

    return blocks.choose(model, lambda g: _instance(g, p, model), name, _CODE_NAMES)


# --- Forward code ---------------------------------------------------------------------------


def _variables(
    p: Plan, live: list[Step], release: dict[str, int], scope: str = ""
) -> dict[str, str]:
    """The forward's variable per value: `x` along a plain chain (read by the next line only,
    and released there), a name after the layer where a value is kept for later (skips,
    branches, a block's input held until the block ends, outputs)."""
    pos = {p.input: -1, **{s.node: k for k, s in enumerate(live)}}
    readers: dict[str, set[int]] = {n: set() for n in pos}
    for k, s in enumerate(live):
        for i in s.inputs:
            readers[i].add(k)
    taken = set(_CODE_NAMES)

    def chain(name: str) -> bool:
        if name in p.outputs:
            return len(p.outputs) == 1 and not readers[name] and pos[name] == len(live) - 1
        return readers[name] == {pos[name] + 1} and release.get(name) == pos[name] + 1

    def named(name: str) -> str:
        var = identifier(name.removeprefix(scope).replace(".", "_"), taken)
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


def _drops(
    p: Plan, live: list[Step], names: dict[str, str], release: dict[str, int], keep_input: bool
) -> dict[int, list[str]]:
    """The named variables to `del` after each line, so that the file releases tensors when
    the runtime module does; `x` is released by being rebound. A class's input is its
    caller's to release (keep_input)."""
    made = {p.input: -1, **{s.node: k for k, s in enumerate(live)}}
    last: dict[str, tuple[int, int]] = {}  # variable -> (released after, made at)
    for value, var in names.items():  # a variable may carry several values (aliases)
        if var != "x" and not (keep_input and var == names[p.input]):
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


def _forward(
    p: Plan, live: list[Step], groups: list[list[str]], depth: int, scope: str = "", shapes=None
) -> tuple[list[str], dict[str, str], set[str]]:
    """The forward's lines, the variables, and the namespaces used. In a block class (`scope`
    its first instance's path), variables drop the path, the input is the caller's to
    release, and a shape is noted only where every instance has it (`shapes`)."""
    release = _release_points(live, groups, p.input)
    names = _variables(p, live, release, scope)
    keep_input = bool(scope)
    drops = _drops(p, live, names, release, keep_input)
    used: set[str] = set()
    body: list[str] = []
    for k, step in enumerate(live):
        out = names[step.node]
        args = [names[i] for i in step.inputs]
        module = "self." + ".".join(step.attr) if step.attr else None
        doc = te.layout(step.op.forward, args, module)
        used |= te.namespaces(step.op.forward)
        if pysource.flat(doc) != out:
            shape = shapes(step) if shapes else step.shape
            body += pysource.statement(f"{out} = ", doc, depth, shape and _nchw(shape))
        if step.softmax:
            used.add("F")
            body += pysource.statement("if ", "not self.logits:", depth)
            body += pysource.statement(f"{out} = ", f"F.softmax({out}, dim=1)", depth + 1)
        # `x` is released by being rebound; where a kept value is written instead, the chain
        # value it read dies here
        dead = (["x"] if out != "x" and "x" in args else []) + drops.get(k, [])
        if dead:
            body += pysource.statement(
                "del ", pysource.Group(None, "", tuple(dead), "", bare=True), depth
            )
    return body, names, used


def _init(p: Plan, depth: int, args=None) -> tuple[list[str], set[str]]:
    """The constructor's lines: containers, modules, their setup attributes. `args(step)`
    gives a step's op with a class's arguments in place of constants."""
    lines: list[str] = []
    used = {"torch", "nn"}
    for path, step in layout(p):
        target = "self." + ".".join(path)
        if step is None:
            lines += pysource.statement(f"{target} = ", "nn.Module()", depth)
            continue
        op = args(step) if args else step.op
        lines += pysource.statement(f"{target} = ", te.layout(op.module, []), depth)
        used |= te.namespaces(step.op.module)
        for attr, value in op.setup:
            lines += pysource.statement(f"{target}.{attr} = ", te.layout(value, []), depth)
            used |= te.namespaces(value)
    return lines, used


def _block_class(cls: blocks.Family, model: Model) -> tuple[dict, set[str]]:
    """The template's view of one block class."""
    inst = cls.instances[0]
    depth = len(inst.attr)
    steps = [replace(s, attr=s.attr[depth:] if s.attr else None) for s in inst.steps]
    containers = sorted({s.attr[:k] for s in steps if s.attr for k in range(1, len(s.attr))})
    sub = Plan(
        cls.name,
        cls.name,
        inst.input,
        tuple(model.node(inst.input).shape),
        steps,
        [inst.output],
        containers,
    )

    def args(step):
        found: list = []
        module = _holes(step.op.module, found)
        setup = tuple((a, _holes(v, found)) for a, v in step.op.setup)
        at = offsets[step.node]
        return replace(
            step.op,
            module=_fill(module, at, cls, inst),
            setup=tuple((a, _fill(v, at, cls, inst)) for a, v in setup),
        )

    offsets, n = {}, 0
    for s in inst.steps:
        offsets[s.node] = n
        found: list = []
        if s.op.module is not None:
            _holes(s.op.module, found)
        for _, v in s.op.setup:
            _holes(v, found)
        n += len(found)
    init, used = _init(sub, 2, args)
    at = {s.node: k for k, s in enumerate(inst.steps)}

    def shapes(step):
        seen = {tuple(i.steps[at[step.node]].shape) for i in cls.instances}
        return seen.pop() if len(seen) == 1 else None

    body, names, used_f = _forward(sub, steps, inst.groups, 2, inst.path + ".", shapes)
    signature = pysource.lines(
        "def ", pysource.call("__init__", "self", *cls.params), 1, " -> None:"
    )
    where = inst.path + (f" and {len(cls.instances) - 1} more" if len(cls.instances) > 1 else "")
    doc = pysource.docstring(f"The spec's block {cls.block}, as used at {where}.", 1)
    return {
        "name": cls.name,
        "doc": doc,
        "signature": signature,
        "init": init,
        "input_var": names[inst.input],
        "body": body,
        "output": names[inst.output],
    }, used | used_f


def _fill(expr, offset: int, cls: blocks.Family, inst: _Instance):
    """A call with holes, each filled with the class's argument or the shared constant."""
    if isinstance(expr, te.Var) and expr.name.startswith("#"):
        k = offset + int(expr.name[1:])
        slot = cls.slots[k]
        return inst.constants[k] if slot is None else te.Var(cls.params[slot])
    if isinstance(expr, te.Call):
        return replace(
            expr,
            args=tuple(_fill(a, offset, cls, inst) for a in expr.args),
            kwargs=tuple((k, _fill(v, offset, cls, inst)) for k, v in expr.kwargs),
        )
    if isinstance(expr, (list, tuple)):
        return type(expr)(_fill(e, offset, cls, inst) for e in expr)
    return expr


def source_code(model: Model) -> str:
    """Readable PyTorch source for the network: a class per repeated block definition, the
    network's nn.Module class, a build_model() function; it imports torch only. The same spec
    gives the same bytes."""
    p = plan(model)
    classes, taken = _choose(model, p)
    views, used = [], {"torch", "nn"}
    for cls in classes:
        view, u = _block_class(cls, model)
        views.append(view)
        used |= u
    # the network: each block instance one step, calling its class
    constructor = {}
    for cls in classes:
        for inst in cls.instances:
            constructor[inst.path] = te.Call(cls.name, tuple(cls.arguments(inst)))
    steps, seen = [], set()
    for s in p.steps:
        inst = taken.get(s.node)
        if inst is None:
            steps.append(s)
        elif inst.path not in seen:
            seen.add(inst.path)
            last = inst.steps[-1]
            steps.append(
                Step(
                    inst.output,
                    te.TorchOp(te.Self((te.X,)), constructor[inst.path]),
                    [inst.input],
                    last.shape,
                    inst.attr,
                )
            )
    top = replace(p, steps=steps)
    init, u = _init(top, 2)
    used |= u
    live = [s for s in steps if s.live]
    groups = [
        list(dict.fromkeys(taken[m].output if m in taken else m for m in g.members))
        for g in model.groups
    ]
    body, names, u = _forward(top, live, groups, 2)
    used |= u
    outputs = [names[o] for o in p.outputs]
    returned = pysource.statement(
        "return ", pysource.Group(None, "", tuple(outputs), "", bare=True), 2
    )
    return pysource.render(
        "torch_model.py.j2",
        class_name=p.class_name,
        source=Path(model.source).name if model.source else model.name,
        input_var=names[p.input],
        input_shape=_nchw(p.input_shape),
        preprocess=formula_of(model),
        classes=views,
        init=init,
        body=body,
        returned=returned,
        several=len(outputs) > 1,
        output_shapes=[_nchw(model.node(o).shape) for o in p.outputs],
        uses_f="F" in used,
        softmax=bool(p.softmax_outputs),
        version=__import__("cnnspec").__version__,
    )
