"""The PyTorch backend: the IR as a torch.nn.Module, as standalone source, and weight loading.

    import cnnspec
    from cnnspec.backends import torch as tb
    model = cnnspec.compile_file("specs/resnet18.cnn")
    net = tb.build(model)                  # nn.Module; input NCHW float, output NCHW / NC
    source = tb.generate(model)            # the same network as a readable .py file
    tb.load_torchvision_state_dict(net, model, torchvision_model.state_dict())

Tensors are NCHW (torch's layout); the spec's shapes are HWC. Every semantic choice that differs
between frameworks follows the spec (Keras): TensorFlow's 'same' padding, flatten in H, W, C
order, BatchNorm momentum in Keras' sense. The layers say how, through `Layer.torch_op`
(cnnspec/layers); this module only wires their modules and expressions along the graph, and
names no layer kind.

A network ending in softmax keeps it (inference); `build(model, logits=True)` or setting
`net.logits = True` skips those final softmaxes so that training uses cross-entropy on logits
(`net.softmax_outputs` lists the outputs concerned).

Only build/instantiate/load import torch; planning and `generate` need no framework.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..ir import Model
from . import torch_emit as te

# nn.Module's own attributes, and those the generated class adds: a layer called so gets "_".
_MODULE_ATTRS = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children",
    "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward",
    "get_buffer", "get_extra_state", "get_parameter", "get_submodule", "half", "ipu",
    "load_state_dict", "modules", "mtia", "named_buffers", "named_children", "named_modules",
    "named_parameters", "parameters", "register_backward_hook", "register_buffer",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_",
    "set_extra_state", "set_submodule", "share_memory", "smart_apply", "state_dict", "to",
    "to_empty", "train", "training", "type", "xpu", "zero_grad", "logits", "output_names",
    "softmax_outputs", "spec",
})
# Names the generated forward uses for itself.
_CODE_NAMES = frozenset({"self", "x", "inputs", "torch", "nn", "F", "float", "build_model"})


class WeightsError(ValueError):
    """Weights that do not fit the network: says which layer, which tensor, which shapes."""


# --- The plan: what build and generate share -------------------------------------------------

@dataclass
class Step:
    node: str
    op: te.TorchOp
    inputs: list[str]
    shape: tuple[int, ...]
    attr: tuple[str, ...] | None = None       # where the module lives, if the op has one
    softmax: bool = False                     # a final softmax, skipped for logits
    live: bool = True                         # feeds an output


@dataclass
class Plan:
    name: str
    class_name: str
    input: str
    input_shape: tuple[int, ...]
    steps: list[Step]
    outputs: list[str]
    containers: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def softmax_outputs(self) -> list[str]:
        return [s.node for s in self.steps if s.softmax]


def plan(model: Model) -> Plan:
    """Ask each layer for its torch op; name the modules; mark dead nodes and final softmaxes."""
    consumers: dict[str, int] = {n.name: 0 for n in model.nodes}
    for n in model.nodes:
        for i in n.inputs:
            consumers[i] += 1
    live = model.live()
    steps = []
    for node in model.nodes[1:]:
        layer, softmax = node.layer, False
        if node.name in model.outputs and consumers[node.name] == 0:
            layer, softmax = node.layer.without_softmax()
        shapes = [model.node(i).shape for i in node.inputs]
        op = layer.torch_op(shapes) if layer is not None else te.TorchOp(forward=te.X)
        steps.append(Step(node.name, op, list(node.inputs), tuple(node.shape),
                          softmax=softmax, live=node.name in live))
    _overwrite_where_safe(steps, consumers, model)
    containers = _name_modules(steps)
    return Plan(model.name, class_name(model.name), model.input.name, tuple(model.input_shape),
                steps, list(model.outputs), containers)


def _overwrite_where_safe(steps: list[Step], consumers: dict[str, int], model: Model) -> None:
    """Use a layer's in-place forward (which overwrites its first input) where that input is a
    fresh tensor read by it alone, as torchvision's ReLU(inplace=True) after batch norm and
    `out += identity`: same values, no new allocation."""
    by_name = {s.node: s for s in steps}
    for step in steps:
        if step.op.inplace is None:
            continue
        src = by_name.get(step.inputs[0])
        if src is not None and src.op.fresh and consumers[src.node] == 1 \
                and src.node not in model.outputs:
            step.op = replace(step.op, forward=step.op.inplace)


def identifier(text: str, taken: set[str] | frozenset = frozenset()) -> str:
    """A safe Python identifier for `text`: invalid characters become '_', keywords, dunders,
    and names in `taken` get a trailing '_' (never interpolated as anything but a name)."""
    name = re.sub(r"\W", "_", text, flags=re.ASCII) or "_"
    if name[0].isdigit():
        name = f"n{name}"
    if name.startswith("_"):
        name = f"n{name}"
    while keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in taken:
        name += "_"
    return name


def _name_modules(steps: list[Step]) -> list[tuple[str, ...]]:
    """Attribute paths for the modules: a dotted node name becomes nested containers, so that
    state_dict keys read `layer1.bottleneck1.conv1.weight`."""
    assigned: dict[tuple, tuple[str, ...]] = {}
    taken: dict[tuple[str, ...], set[str]] = {}
    containers: list[tuple[str, ...]] = []
    for step in steps:
        if step.op.module is None:
            continue
        parts = step.node.split(".")
        path: tuple[str, ...] = ()
        for i, part in enumerate(parts):
            leaf = i == len(parts) - 1
            key = (path, part, leaf)
            if key not in assigned:
                used = taken.setdefault(path, set())
                attr = identifier(part, _MODULE_ATTRS | used)
                used.add(attr)
                assigned[key] = (*path, attr)
                if not leaf:
                    containers.append(assigned[key])
            path = assigned[key]
        step.attr = path
    return containers


def layout(p: Plan):
    """(path, step) in registration order, step None for a container: each container just
    before its first member, so state_dict keys follow the spec's node order."""
    containers, made = set(p.containers), set()
    for step in p.steps:
        if step.attr is None:
            continue
        for k in range(1, len(step.attr)):
            if step.attr[:k] in containers and step.attr[:k] not in made:
                made.add(step.attr[:k])
                yield step.attr[:k], None
        yield step.attr, step


def class_name(name: str) -> str:
    words = [w for w in re.split(r"[^0-9A-Za-z]+", name) if w]
    text = "".join(w[:1].upper() + w[1:] for w in words) or "Model"
    return identifier(text if not text[0].isdigit() else f"Net{text}",
                      _CODE_NAMES | {"Tensor"})


# --- Runtime: the module, built from the same ops -----------------------------------------

def _namespace():
    import torch
    from torch import nn
    from torch.nn import functional
    return {"torch": torch, "nn": nn, "F": functional}


def _resolve(dotted: str, ns: dict):
    head, *rest = dotted.split(".")
    obj = ns[head]
    for part in rest:
        obj = getattr(obj, part)
    return obj


def _constant(expr) -> bool:
    if isinstance(expr, (list, tuple)):
        return all(_constant(e) for e in expr)
    return not isinstance(expr, te.Expr)


def compile_expr(expr, ns: dict):
    """A function (module, inputs) -> value computing `expr`; resolved once, called per batch."""
    import functools
    import operator
    if _constant(expr):
        return lambda m, xs: expr
    if isinstance(expr, te.In):
        i = expr.index
        return lambda m, xs: xs[i]
    if isinstance(expr, list):
        parts = [compile_expr(e, ns) for e in expr]
        return lambda m, xs: [p(m, xs) for p in parts]
    if isinstance(expr, tuple):
        parts = [compile_expr(e, ns) for e in expr]
        return lambda m, xs: tuple(p(m, xs) for p in parts)
    if isinstance(expr, te.Index):
        obj, items = compile_expr(expr.obj, ns), expr.items
        return lambda m, xs: obj(m, xs)[items]
    if isinstance(expr, te.BinOp):
        fn = {"+": operator.add, "*": operator.mul, "/": operator.truediv}[expr.op]
        parts = [compile_expr(e, ns) for e in expr.operands]
        return lambda m, xs: functools.reduce(fn, [p(m, xs) for p in parts])
    args = [compile_expr(a, ns) for a in getattr(expr, "args", ())]
    kwargs = [(k, compile_expr(v, ns)) for k, v in getattr(expr, "kwargs", ())]
    if isinstance(expr, te.Self):
        if len(args) == 1:
            (a,) = args
            return lambda m, xs: m(a(m, xs))
        return lambda m, xs: m(*[a(m, xs) for a in args])
    if isinstance(expr, te.Method):
        obj, name = compile_expr(expr.obj, ns), expr.name
        return lambda m, xs: getattr(obj(m, xs), name)(
            *[a(m, xs) for a in args], **{k: v(m, xs) for k, v in kwargs})
    if isinstance(expr, te.Call):
        fn = _resolve(expr.fn, ns)
        return lambda m, xs: fn(*[a(m, xs) for a in args], **{k: v(m, xs) for k, v in kwargs})
    raise TypeError(f"cannot compile {expr!r}")


def _evaluate(expr, ns):
    return compile_expr(expr, ns)(None, [])


def instantiate(op: te.TorchOp):
    """The nn.Module of a TorchOp (None if it has none), with its setup attributes."""
    if op.module is None:
        return None
    ns = _namespace()
    module = _evaluate(op.module, ns)
    for attr, value in op.setup:
        setattr(module, attr, _evaluate(value, ns))
    return module


def build(model: Model, logits: bool = False):
    """The network as an nn.Module. Input: float tensor (N, C, H, W), or (N, F) for a vector
    input. Output: NCHW / NC tensors; a tuple when the spec has several outputs."""
    return _network_class()(model, logits)


@dataclass
class _Instr:
    fn: object
    attr: tuple[str, ...] | None
    inputs: tuple[int, ...]
    out: int
    softmax: bool
    free: tuple[int, ...]


def _program(p: Plan, groups: list[list[str]], ns: dict) -> tuple[list[_Instr], list[int]]:
    """The steps as slot-addressed instructions, each value dropped when `_release_points`
    says."""
    live = [s for s in p.steps if s.live]
    slot = {p.input: 0, **{s.node: i + 1 for i, s in enumerate(live)}}
    release = _release_points(live, groups, p.input)
    free: dict[int, list[str]] = {}
    for name, at in release.items():
        if name not in p.outputs:
            free.setdefault(at, []).append(name)
    order = {s.node: k for k, s in enumerate(live)}
    prog = []
    for k, s in enumerate(live):
        # inner scopes first: the value made last is released first, as Python frees a
        # block's locals before the caller's
        names = sorted(free.get(k, ()), key=lambda n: -order.get(n, -1))
        prog.append(_Instr(compile_expr(s.op.forward, ns), s.attr,
                           tuple(slot[i] for i in s.inputs), slot[s.node], s.softmax,
                           tuple(slot[n] for n in names)))
    return prog, [slot[o] for o in p.outputs]


def _release_points(live: list[Step], groups: list[list[str]], input_name: str) -> dict[str, int]:
    """After which step each value is dropped: after its last use, or, where that use is
    inside a group (a block, residual, branch) that the value enters from outside, at the end
    of the outermost such group. That is when hand-written nested modules drop it: the
    caller's variable holds a module's input until the call returns (torchvision's
    `x = self.layer1(x)` keeps the stage input through all its blocks). Dropping earlier saves
    little and changes the allocator's pattern: glibc returns the freed top of the heap to
    the system and the next allocation faults its pages back in, which made resnet50's
    forward 4-6% slower than torchvision's with the same kernels."""
    at = {s.node: k for k, s in enumerate(live)}
    at[input_name] = -1
    around: list[list[tuple[int, int]]] = [[] for _ in live]   # the groups around each step
    for ks in ([at[m] for m in g if m in at] for g in groups):
        if ks:
            lo, hi = min(ks), max(ks)
            for k in range(lo, hi + 1):
                around[k].append((lo, hi))
    release: dict[str, int] = {}
    for k, s in enumerate(live):
        for name in s.inputs:
            made = at[name]       # made before k: a group around k lacks it iff it starts later
            end = max([hi for lo, hi in around[k] if lo > made], default=k)
            release[name] = max(release.get(name, -1), end)
    return release


_NETWORK = None


def _network_class():
    global _NETWORK
    if _NETWORK is not None:
        return _NETWORK
    from torch import nn
    from torch.nn import functional

    class Network(nn.Module):
        """A cnnspec network. forward(x): x is NCHW (N, C, H, W) float, or (N, F) for a vector
        input; returns NCHW / NC tensors, a tuple for several outputs. `logits=True` skips the
        final softmaxes (`softmax_outputs`) for training with cross-entropy."""

        def __init__(self, model: Model, logits: bool = False):
            super().__init__()
            p = plan(model)
            self.spec = model
            self.logits = logits
            self.output_names = tuple(p.outputs)
            self.softmax_outputs = tuple(p.softmax_outputs)
            for path, step in layout(p):
                module = nn.Module() if step is None else instantiate(step.op)
                _parent(self, path).add_module(path[-1], module)
            self._prog, self._outs = _program(p, [g.members for g in model.groups],
                                              _namespace())
            self._size = 1 + sum(s.live for s in p.steps)

        def forward(self, x):
            values = [None] * self._size
            values[0] = x
            for ins in self._prog:
                mod = self
                if ins.attr is not None:
                    for a in ins.attr:
                        mod = getattr(mod, a)
                y = ins.fn(mod, [values[i] for i in ins.inputs])
                if ins.softmax and not self.logits:
                    y = functional.softmax(y, dim=1)
                values[ins.out] = y
                for i in ins.free:
                    values[i] = None
            if len(self._outs) == 1:
                return values[self._outs[0]]
            return tuple(values[i] for i in self._outs)

        def __reduce__(self):   # closures do not pickle: rebuild from the IR, then the state
            return (_rebuild, (self.spec, self.logits, self.state_dict(), self.training))

    _NETWORK = Network
    return Network


def _rebuild(model, logits, state, training):
    net = build(model, logits)
    net.load_state_dict(state)
    return net.train(training)


def _parent(root, path: tuple[str, ...]):
    for a in path[:-1]:
        root = getattr(root, a)
    return root


# --- Standalone source ----------------------------------------------------------------------

def template_dir() -> Path:
    """templates/: inside the package when installed, beside it in a checkout."""
    from ..resources import path
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


# --- Weights from torchvision -------------------------------------------------------------

@dataclass
class LoadReport:
    """What `load_torchvision_state_dict` matched: (cnnspec key, torchvision key) pairs."""

    matched: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)       # cnnspec keys without a source
    unexpected: list[str] = field(default_factory=list)    # torchvision keys left over
    mismatched: list[str] = field(default_factory=list)    # described pairs that differ
    reordered: list[str] = field(default_factory=list)     # dense weights re-ordered CHW->HWC

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"{len(self.matched)} tensors matched"]
        for title, items in (("missing in the torchvision weights", self.missing),
                             ("unexpected (no cnnspec layer left)", self.unexpected),
                             ("mismatched", self.mismatched)):
            if items:
                shown = items[:8] + ([f"... and {len(items) - 8} more"] if len(items) > 8 else [])
                lines.append(f"{len(items)} {title}:")
                lines += [f"  {i}" for i in shown]
        return "\n".join(lines)


def _groups(keys) -> list[tuple[str, list[str]]]:
    """State-dict keys grouped by the module that owns them, in order."""
    out: list[tuple[str, list[str]]] = []
    for key in keys:
        owner, _, _ = key.rpartition(".")
        if out and out[-1][0] == owner:
            out[-1][1].append(key)
        else:
            out.append((owner, [key]))
    return out


def _flat_sources(model: Model) -> dict[str, tuple | None]:
    sources: dict[str, tuple | None] = {}
    for n in model.nodes:
        shapes = [model.node(i).shape for i in n.inputs]
        sources[n.name] = n.layer.flat_source(shapes, [sources[i] for i in n.inputs]) \
            if n.inputs else None
    return sources


def _shape(t) -> str:
    return "x".join(str(d) for d in t.shape) or "scalar"


def load_torchvision_state_dict(module, model: Model, state_dict, strict: bool = True):
    """Copy a torchvision-style state_dict into a built cnnspec network, layer by layer in
    order: the i-th module with tensors in torchvision's state_dict goes to the i-th in the
    spec's node order, tensor names (weight, bias, running_mean, ...) and shapes checked.
    A dense layer reading a flattened HxWxC map gets its columns reordered from torchvision's
    C, H, W flatten to cnnspec's H, W, C. Raises WeightsError naming the layers when
    something does not fit (strict), else returns the LoadReport with what was copied."""
    import torch
    target = module.state_dict()
    node_of = {}
    for step in plan(model).steps:
        if step.attr is not None:
            node_of[".".join(step.attr)] = step.node
    sources = _flat_sources(model)
    dst = _groups(target.keys())
    src = _groups(state_dict.keys())
    report = LoadReport()
    updates = {}
    for k, ((d_owner, d_keys), (s_owner, s_keys)) in enumerate(zip(dst, src)):
        d_names = [key[len(d_owner) + 1:] for key in d_keys]
        s_names = [key[len(s_owner) + 1:] for key in s_keys]
        node = next((node_of[o] for o in node_of if d_owner == o or
                     d_owner.startswith(o + ".")), d_owner)
        where = f"layer {k + 1}: cnnspec '{node}' ({d_owner}) <- torchvision '{s_owner}'"
        if sorted(d_names) != sorted(s_names):
            report.mismatched.append(f"{where}: tensors {sorted(d_names)} vs {sorted(s_names)}")
            continue
        for name in d_names:
            dk, sk = f"{d_owner}.{name}", f"{s_owner}.{name}"
            value = state_dict[sk]
            flat = _input_flat(model, sources, node)
            if flat and name == "weight" and value.dim() == 2:
                h, w, c = flat
                if h * w > 1 and c > 1 and value.shape[1] == h * w * c:
                    value = value.reshape(-1, c, h, w).permute(0, 2, 3, 1).reshape(
                        value.shape[0], -1)
                    report.reordered.append(dk)
            if tuple(value.shape) != tuple(target[dk].shape):
                report.mismatched.append(f"{where}: {name} is {_shape(target[dk])} in cnnspec, "
                                         f"{_shape(value)} in torchvision")
                continue
            updates[dk] = value.detach().to(target[dk].dtype)
            report.matched.append((dk, sk))
    for _, keys in dst[len(src):]:
        report.missing += keys
    for _, keys in src[len(dst):]:
        report.unexpected += keys
    if strict and not report.ok:
        raise WeightsError(f"the torchvision weights do not fit '{model.name}':\n{report}")
    with torch.no_grad():
        for key, value in updates.items():
            target[key].copy_(value)
    return report



def _input_flat(model: Model, sources: dict, node: str) -> tuple | None:
    """The HxWxC map flattened into this node's (one) input, if any."""
    if node not in sources:
        return None
    inputs = model.node(node).inputs
    return sources[inputs[0]] if len(inputs) == 1 else None


# --- Weights files and ONNX ------------------------------------------------------------------

def read_weights(path) -> dict:
    """A state_dict from .safetensors (safetensors) or a torch file read with
    weights_only=True (no pickle code runs); a dict holding "state_dict" is unwrapped."""
    import torch
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001  (a corrupt file: say which, no traceback)
        raise WeightsError(f"{path}: not a readable weights file ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise WeightsError(f"{path}: expected a mapping of names to tensors (a state_dict)")
    return state


def load_weights(module, model: Model, state: dict, fmt: str = "cnnspec"):
    """Load a state_dict with cnnspec's keys (fmt 'cnnspec') or torchvision's ('torchvision',
    matched by order); raises WeightsError listing what does not fit."""
    if fmt == "torchvision":
        return load_torchvision_state_dict(module, model, state)
    target = module.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [f"{k}: {_shape(state[k])} in the file, {_shape(target[k])} in the network"
              for k in target if k in state and state[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        report = LoadReport(missing=missing, unexpected=unexpected, mismatched=shapes)
        raise WeightsError(f"the weights do not fit '{model.name}':\n{report}\n(torchvision "
                           "weights: use the torchvision format, matched by order)")
    module.load_state_dict(state)
    return None


def input_example(model: Model, batch: int = 1):
    import torch
    shape = model.input_shape
    nchw = (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)
    return torch.randn(batch, *nchw, generator=torch.Generator().manual_seed(0))


def export_onnx(module, model: Model, path, opset: int = 17) -> None:
    """Write the network (eval mode) as ONNX, batch size dynamic; atomically (temp + rename).
    Uses torch's TorchScript-based exporter (the dynamo one needs onnxscript)."""
    import os
    import tempfile
    import warnings

    import torch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs = [identifier(o) for o in model.outputs]
    axes = {"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    was_training = module.training
    module.eval()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (input_example(model),), tmp, dynamo=False,
                              input_names=["input"], output_names=outputs,
                              dynamic_axes=axes, opset_version=opset)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        module.train(was_training)
