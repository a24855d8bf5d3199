"""Pair a weights file's layers with a network's parameterised nodes, tensor by tensor.

Every loader goes through `match`: the torch backend's torchvision loader, the `transfer`
section (torch and Keras), and anything to come. Three ways, tried in this order:

  name    the file was written by cnnspec: every node's tensors are found under its name
          (torch module path, or the Keras-safe name);
  kind    a Keras 3 file names layers after their class (conv2d, conv2d_1, ...): the n-th
          conv of the file goes to the n-th conv of the network, and likewise per kind;
  order   anything else (torchvision, keras.applications): the i-th layer with tensors in
          the file goes to the i-th parameterised node, in the file's registration order.

Arrays are in torch's layout (cnnspec.weights.layouts turns Keras' round). Every pair is
shape-checked, and where the file flattened maps C, H, W (a torch model) the tensors that
index a flattened map's features are reordered to cnnspec's H, W, C (cnnspec.weights.
flatten), the same way for every loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import flatten as flat
from .layouts import tensors as layout_of


@dataclass
class SourceLayer:
    name: str  # the module path or Keras layer name in the file
    tensors: dict[str, np.ndarray]  # torch name -> array in torch layout
    kind: str | None = None  # cnnspec kind, where the file says (Keras classes)


@dataclass
class SourceWeights:
    label: str  # what the user named: the spec's text, a path
    layers: list[SourceLayer] = field(default_factory=list)
    framework: str = "torch"  # who wrote the file: "torch" or "keras"
    flatten: str = "hwc"  # how the file's model flattened: "chw" (torch)
    # Keras 3 files name groups after classes: the order holds within a kind only.
    by_kind: bool = False
    fingerprint: str | None = None  # the spec's, when cnnspec wrote the file

    def count(self) -> int:
        return sum(len(layer.tensors) for layer in self.layers)


@dataclass
class Target:
    """A parameterised node of the built network and the tensors it holds (torch layout)."""

    node: object  # cnnspec.ir.Node
    shapes: dict[str, tuple[int, ...]]  # torch name -> shape
    names: tuple[str, ...] = ()  # where a file written by cnnspec keeps it
    hwc: tuple[int, int, int] | None = None  # the map its input vector was flattened from
    features: dict[str, int] = field(default_factory=dict)  # torch name -> features axis


def targets(model, nodes, shapes_of, names_of=lambda name: ()) -> list[Target]:
    """Targets for `nodes` (in order): shapes_of(node) gives its tensors' shapes by torch
    name, names_of(node name) the extra names a cnnspec file may use for it."""
    sources = flat.flat_sources(model)
    out = []
    for n in nodes:
        features = {t.torch: t.features for t in layout_of(n) if t.features is not None}
        out.append(
            Target(
                n,
                shapes_of(n),
                (n.name, *names_of(n.name)),
                flat.input_map(model, n, sources),
                features,
            )
        )
    return out


class Misfit(NamedTuple):
    target: str  # node.role
    source: str  # the file's key
    expected: tuple
    received: tuple
    node: str
    role: str


@dataclass
class LoadReport:
    """What a load did: tensors matched, missing, unexpected, mis-shaped, reordered."""

    source: str = ""
    method: str = "order"
    origin: str = "the file"  # how messages call the source: "torchvision"
    matched: list[tuple[str, str]] = field(default_factory=list)  # (target, source)
    missing: list[str] = field(default_factory=list)  # target tensors
    unexpected: list[str] = field(default_factory=list)  # source tensors unused
    mis_shaped: list[Misfit] = field(default_factory=list)
    reordered: list[str] = field(default_factory=list)  # targets reordered C,H,W -> H,W,C
    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """Every tensor of the network found, with its shape (the file may hold more)."""
        return not self.missing and not self.mis_shaped

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "method": self.method,
            "matched": len(self.matched),
            "missing": self.missing,
            "unexpected": self.unexpected,
            "reordered": self.reordered,
            "mis_shaped": [
                {
                    "target": m.target,
                    "source": m.source,
                    "expected": list(m.expected),
                    "received": list(m.received),
                }
                for m in self.mis_shaped
            ],
        }

    def describe(self) -> str:
        """One line, for logs."""
        text = (
            f"transfer from {self.source}: {len(self.matched)} tensors loaded "
            f"(matched by {self.method})"
        )
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                text += f"; {len(items)} {label}: {_few(items)}"
        if self.mis_shaped:
            text += f"; {len(self.mis_shaped)} mis-shaped: " + _few(
                [
                    f"{m.target} {_shape(m.expected)} <- {m.source} {_shape(m.received)}"
                    for m in self.mis_shaped
                ]
            )
        return text

    def __str__(self) -> str:
        """Several lines, for errors: what does not fit, by layer."""
        lines = [f"{len(self.matched)} tensors matched (by {self.method})"]
        misfits = [
            f"cnnspec '{m.node}' <- {self.origin} '{m.source}': {m.role} is "
            f"{_shape(m.expected)} in cnnspec, {_shape(m.received)} in {self.origin}"
            for m in self.mis_shaped
        ]
        for title, items in (
            (f"missing in {self.origin}", self.missing),
            ("unexpected (no cnnspec layer left)", self.unexpected),
            ("mis-shaped", misfits),
        ):
            if items:
                lines.append(f"{len(items)} {title}:")
                lines += [f"  {i}" for i in items[:8]]
                lines += [f"  ... and {len(items) - 8} more"] if len(items) > 8 else []
        return "\n".join(lines)


def _few(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _shape(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def match(
    targets: list[Target],
    weights: SourceWeights,
    origin: str = "the file",
    method: str | None = None,
) -> LoadReport:
    """Pair `targets` (in graph order) with the file's layers and check every shape; the
    arrays to load are in report.values (node name -> torch name -> array)."""
    report = LoadReport(weights.label, origin=origin)
    pairs, rest = _pairs(targets, weights, report, method)
    # a file cnnspec wrote flattens as the spec does, whoever ran it
    chw = weights.flatten == "chw" and report.method != "name"
    for target, tensors in pairs:
        _compare(target, tensors, chw, report)
    for layer in rest:
        report.unexpected.extend(_key(layer.name, role) for role in layer.tensors)
    return report


def _key(prefix: str, role: str) -> str:
    return f"{prefix}.{role}" if prefix else role


Pair = tuple[Target, dict[str, tuple[str, np.ndarray]]]  # target, role -> (file key, array)


def _pairs(targets, weights: SourceWeights, report: LoadReport, method) -> tuple[list, list]:
    if method in (None, "name"):
        named = _by_name(targets, weights)
        if named is not None or method == "name":
            report.method = "name"
            return named or ([], weights.layers)
    if weights.by_kind and method in (None, "kind"):
        report.method = "kind"
        queues: dict[str | None, list[SourceLayer]] = {}
        for layer in weights.layers:
            queues.setdefault(layer.kind, []).append(layer)
        pairs = [
            (t, _tensors([queues[t.node.kind].pop(0)] if queues.get(t.node.kind) else [], t))
            for t in targets
        ]
        return pairs, [x for q in queues.values() for x in q]
    report.method = "order"
    layers, pairs = list(weights.layers), []
    for t in targets:
        # a node whose tensors sit in sub-modules ('0.weight', '1.weight': sepconv) takes
        # one file layer per sub-module
        subs = len(dict.fromkeys(r.rpartition(".")[0] for r in t.shapes)) or 1
        taken, layers = layers[:subs], layers[subs:]
        pairs.append((t, _tensors(taken, t)))
    return pairs, layers


def _tensors(layers: list[SourceLayer], target: Target) -> dict:
    """role -> (file key, array): the layers' tensors under the target's torch names."""
    subs = list(dict.fromkeys(r.rpartition(".")[0] for r in target.shapes))
    out = {}
    for i, layer in enumerate(layers):
        sub = subs[i] if len(layers) > 1 and i < len(subs) else ""
        for role, value in layer.tensors.items():
            out[_key(sub, role)] = (_key(layer.name, role), value)
    return out


def _by_name(targets, weights: SourceWeights):
    flat = {
        _key(layer.name, role): (id(layer), value)
        for layer in weights.layers
        for role, value in layer.tensors.items()
    }
    pairs, used = [], set()
    for t in targets:
        found = next((p for p in t.names if all(_key(p, r) in flat for r in t.shapes)), None)
        if found is None or not t.shapes:
            return None
        got = {r: (_key(found, r), flat[_key(found, r)][1]) for r in t.shapes}
        used.update(flat[_key(found, r)][0] for r in t.shapes)
        # the file's other tensors of that layer are unexpected, not silently dropped
        prefix = found + "." if found else ""
        for key, (_, value) in flat.items():
            if (
                key.startswith(prefix)
                and key[len(prefix) :] not in t.shapes
                and "." not in key[len(prefix) :]
            ):
                got[key[len(prefix) :]] = (key, value)
        pairs.append((t, got))
    if not targets:
        return None
    return pairs, [x for x in weights.layers if id(x) not in used]


def _compare(target: Target, tensors: dict, chw: bool, report: LoadReport) -> None:
    node = target.node.name
    values = {}
    unused = dict(tensors)
    for role, want in target.shapes.items():
        name = f"{node}.{role}"
        src = role if role in unused else _alias(role, unused, len(target.shapes))
        if src is None:
            report.missing.append(name)
            continue
        key, value = unused.pop(src)
        value = np.asarray(value)
        if chw and target.hwc and role in target.features:
            turned = flat.chw_to_hwc(value, target.hwc, target.features[role])
            if turned is not None:
                value = turned
                report.reordered.append(name)
        if tuple(value.shape) != tuple(want):
            report.mis_shaped.append(Misfit(name, key, tuple(want), tuple(value.shape), node, role))
            continue
        report.matched.append((name, key))
        values[role] = value
    report.unexpected.extend(key for key, _ in unused.values())
    if values:
        report.values[node] = values


def _alias(role: str, available: dict, wanted: int = 0) -> str | None:
    """A tensor one module deeper in the file ('conv.weight') still matches 'weight'; a
    layer of one tensor matches a target that wants one whatever its name (torchvision's
    ConvNeXt `layer_scale` is the spec's `gamma`): the shape is still checked."""
    tail = role.rsplit(".", 1)[-1]
    hits = [r for r in available if r.rsplit(".", 1)[-1] == tail]
    if not hits and wanted == 1 and len(available) == 1:
        return next(iter(available))
    return hits[0] if len(hits) == 1 else None
