"""Pair the source's layers with the spec's parameterised layers, tensor by tensor.

Three ways, tried in this order:
  by name   the source was written by cnnspec (a checkpoint of this or an earlier spec):
            its layer names are the node names (torch) or their Keras-safe form (Keras);
  by kind   a Keras 3 file names layers after their class (conv2d, conv2d_1, ...): the n-th
            conv of the file is the n-th conv of the spec, and likewise per kind;
  by order  anything else (torchvision, keras.applications): the i-th layer with weights in
            the file is the i-th parameterised layer of the spec's backbone.
Every pair is shape-checked, so a spec that does not follow the source's layout is refused
with the first tensors that disagree, rather than loaded wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir import Model, Node
from .tensors import SourceLayer, SourceWeights

# Nodes between a flatten and a dense that keep the vector as it is.
PASS_THROUGH = ("dropout", "activation", "identity")


@dataclass
class Target:
    """A parameterised node of the built network and the tensors it holds (torch layout)."""

    node: Node
    shapes: dict[str, tuple[int, ...]]


@dataclass
class LoadReport:
    """What a load did: tensors matched, missing, unexpected and mis-shaped."""

    source: str
    method: str = "order"
    matched: list[tuple[str, str]] = field(default_factory=list)     # (target, source)
    missing: list[str] = field(default_factory=list)                 # target tensors
    unexpected: list[str] = field(default_factory=list)              # source tensors unused
    mis_shaped: list[tuple[str, str, tuple, tuple]] = field(default_factory=list)
    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mis_shaped

    def to_dict(self) -> dict:
        return {"source": self.source, "method": self.method, "matched": len(self.matched),
                "missing": self.missing, "unexpected": self.unexpected,
                "mis_shaped": [{"target": t, "source": s, "expected": list(w),
                                "received": list(g)} for t, s, w, g in self.mis_shaped]}

    def describe(self) -> str:
        text = (f"transfer from {self.source}: {len(self.matched)} tensors loaded "
                f"(matched by {self.method})")
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                text += f"; {len(items)} {label}: {_few(items)}"
        if self.mis_shaped:
            text += f"; {len(self.mis_shaped)} mis-shaped: " + _few(
                [f"{t} {_shape(w)} <- {s} {_shape(g)}" for t, s, w, g in self.mis_shaped])
        return text


def _few(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _shape(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def match(model: Model, targets: list[Target], weights: SourceWeights,
          keras_name=lambda name: name) -> LoadReport:
    """Pair `targets` (in graph order) with the source's layers and check every shape."""
    report = LoadReport(weights.source.text)
    pairs, rest = _pairs(targets, weights, keras_name, report)
    flatten = weights.source.flatten
    if report.method == "name":
        flatten = "hwc"                    # written by cnnspec: its flatten is H, W, C
    for target, layer in pairs:
        if layer is None:
            report.missing.extend(f"{target.node.name}.{role}" for role in target.shapes)
            continue
        _compare(model, target, layer, flatten, report)
    for layer in rest:
        report.unexpected.extend(f"{layer.name}.{role}" if layer.name else role
                                 for role in layer.tensors)
    return report


def _pairs(targets, weights: SourceWeights, keras_name, report: LoadReport):
    by_name = {layer.name: layer for layer in weights.layers}
    named = [by_name.get(t.node.name) or by_name.get(keras_name(t.node.name)) for t in targets]
    if targets and all(named):
        report.method = "name"
        used = {id(layer) for layer in named}
        return list(zip(targets, named)), [x for x in weights.layers if id(x) not in used]
    if weights.by_kind:
        report.method = "kind"
        queues: dict[str | None, list[SourceLayer]] = {}
        for layer in weights.layers:
            queues.setdefault(layer.kind, []).append(layer)
        pairs = [(t, queues[t.node.kind].pop(0) if queues.get(t.node.kind) else None)
                 for t in targets]
        return pairs, [x for q in queues.values() for x in q]
    report.method = "order"
    layers = list(weights.layers)
    pairs = [(t, layers[i] if i < len(layers) else None) for i, t in enumerate(targets)]
    return pairs, layers[len(targets):]


def _compare(model: Model, target: Target, layer: SourceLayer, flatten: str,
             report: LoadReport) -> None:
    values = {}
    unused = dict(layer.tensors)
    for role, want in target.shapes.items():
        name = f"{target.node.name}.{role}"
        src_role = role if role in unused else _alias(role, unused)
        if src_role is None:
            report.missing.append(name)
            continue
        value = unused.pop(src_role)
        if flatten == "chw" and target.node.kind == "dense" and value.ndim == 2:
            value = _chw_to_hwc(model, target.node, value)
        source_name = f"{layer.name}.{src_role}" if layer.name else src_role
        if tuple(value.shape) != tuple(want):
            report.mis_shaped.append((name, source_name, tuple(want), tuple(value.shape)))
            continue
        report.matched.append((name, source_name))
        values[role] = value
    report.unexpected.extend(f"{layer.name}.{r}" for r in unused)
    if values:
        report.values[target.node.name] = values


def _alias(role: str, available: dict) -> str | None:
    """A torch module nested one deeper ('conv.weight') still matches 'weight'."""
    tail = role.rsplit(".", 1)[-1]
    hits = [r for r in available if r.rsplit(".", 1)[-1] == tail]
    return hits[0] if len(hits) == 1 else None


def _chw_to_hwc(model: Model, node: Node, weight: np.ndarray) -> np.ndarray:
    """A dense layer after a flatten: torch flattened C,H,W, the spec flattens H,W,C, so the
    input columns are reordered (a no-op after a global pool, where H = W = 1)."""
    hwc = flatten_input_shape(model, node)
    if hwc is None or weight.shape[1] != hwc[0] * hwc[1] * hwc[2]:
        return weight
    h, w, c = hwc
    out = weight.shape[0]
    return np.ascontiguousarray(weight.reshape(out, c, h, w).transpose(0, 2, 3, 1)
                                .reshape(out, -1))


def flatten_input_shape(model: Model, node: Node) -> tuple[int, int, int] | None:
    """The (H, W, C) map a dense layer reads through a flatten, or None."""
    current = node
    while current.inputs:
        prev = model.node(current.inputs[0])
        if prev.kind == "flatten":
            shape = model.node(prev.inputs[0]).shape
            return tuple(shape) if len(shape) == 3 else None
        if prev.kind not in PASS_THROUGH:
            return None
        current = prev
    return None

