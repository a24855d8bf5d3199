"""The network as a torch.nn.Module, built from the plan's ops (imports torch when called)."""

from __future__ import annotations

from dataclasses import dataclass

from ...ir import Model
from .. import torch_emit as te
from .plan import Plan, Step, layout, plan


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
    if isinstance(expr, te.Attr):
        name = expr.name
        return lambda m, xs: getattr(m, name)
    if isinstance(expr, te.Index):
        obj, items = compile_expr(expr.obj, ns), expr.items
        return lambda m, xs: obj(m, xs)[items]
    if isinstance(expr, te.BinOp):
        fn = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[
            expr.op
        ]
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
            *[a(m, xs) for a in args], **{k: v(m, xs) for k, v in kwargs}
        )
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
        prog.append(
            _Instr(
                compile_expr(s.op.forward, ns),
                s.attr,
                tuple(slot[i] for i in s.inputs),
                slot[s.node],
                s.softmax,
                tuple(slot[n] for n in names),
            )
        )
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
    around: list[list[tuple[int, int]]] = [[] for _ in live]  # the groups around each step
    for ks in ([at[m] for m in g if m in at] for g in groups):
        if ks:
            lo, hi = min(ks), max(ks)
            for k in range(lo, hi + 1):
                around[k].append((lo, hi))
    release: dict[str, int] = {}
    for k, s in enumerate(live):
        for name in s.inputs:
            made = at[name]  # made before k: a group around k lacks it iff it starts later
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
            self._prog, self._outs = _program(p, [g.members for g in model.groups], _namespace())
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

        def __reduce__(self):  # closures do not pickle: rebuild from the IR, then the state
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
