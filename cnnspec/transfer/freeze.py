"""Which layers a `freeze` strategy fixes, decided on the IR so that every backend agrees.

The strategies count *parameterised* layers (a node with trainable parameters: conv, dense,
batch norm, ...) of the backbone, i.e. the nodes the transfer keeps, not the new head:

    freeze none                  everything trains
    freeze all                   the backbone is fixed, the head trains
    freeze first 10              the first 10 parameterised backbone layers
    freeze until layer3          every parameterised layer up to layer3's last one, inclusive
    freeze pattern "layer1.*"    layers whose dotted name matches the glob (fnmatch)

A frozen node keeps its parameters but counts them as non-trainable (`Node.frozen`), so the
summary's trainable total is what the framework will train: Keras' `trainable_weights`, or the
torch parameters with `requires_grad`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from ..errors import Span, SpecError, did_you_mean
from ..ir import Model, Node


def backbone(model: Model) -> list[Node]:
    """The nodes that come from the source: all but the head."""
    head = set(model.transfer.head) if model.transfer else set()
    return [n for n in model.nodes if n.name not in head]


def parameterised(nodes: list[Node]) -> list[Node]:
    return [n for n in nodes if n.trainable > 0 or n.frozen]


def frozen_names(model: Model) -> list[str]:
    """The names of the nodes the transfer section freezes, in graph order."""
    spec = model.transfer
    if spec is None:
        return []
    freeze = spec.freeze
    span = _span(spec.freeze_span or spec.span)
    layers = parameterised(backbone(model))
    if freeze.mode == "none":
        return []
    if freeze.mode == "all":
        return [n.name for n in layers]
    if freeze.mode == "first":
        if freeze.count > len(layers):
            raise SpecError(
                "E506",
                f"freeze first {freeze.count}: the backbone has {len(layers)} parameterised layers",
                span,
                hint=f"use 'freeze all', or a count up to {len(layers)}",
            )
        return [n.name for n in layers[: freeze.count]]
    if freeze.mode == "until":
        last = _last_index(model, freeze.layer, span)
        order = {n.name: i for i, n in enumerate(model.nodes)}
        return [n.name for n in layers if order[n.name] <= last]
    names = [n.name for n in parameterised(model.nodes) if fnmatchcase(n.name, freeze.pattern)]
    if not names:
        raise SpecError(
            "E506",
            f'freeze pattern "{freeze.pattern}" matches no layer with parameters',
            span,
            hint=f'names are dotted paths, e.g. "{_example(model)}.*"',
        )
    return names


def _last_index(model: Model, name: str, span) -> int:
    """The position of `name`'s last node: a node, a group (block, residual...) or a prefix."""
    index = {n.name: i for i, n in enumerate(model.nodes)}
    if name in index:
        return index[name]
    members = next((g.members for g in model.groups if g.path == name), None)
    if not members:
        members = [n for n in index if n.startswith(name + ".")]
    members = [m for m in members if m in index]
    if not members:
        raise SpecError(
            "E506",
            f"freeze until {name}: no layer or block is called '{name}'",
            span,
            hint=did_you_mean(name, list(index) + [g.path for g in model.groups]),
        )
    return max(index[m] for m in members)


def _example(model: Model) -> str:
    return next((g.path for g in model.groups), model.nodes[-1].name)


def apply_freeze(model: Model) -> Model:
    """Mark the frozen nodes and move their trainable counts to non-trainable (in place)."""
    names = set(frozen_names(model))
    for i, node in enumerate(model.nodes):
        if node.name in names and not node.frozen:
            model.nodes[i] = node.model_copy(
                update={
                    "frozen": True,
                    "trainable": 0,
                    "non_trainable": node.non_trainable + node.trainable,
                }
            )
    return model


def _span(ir_span) -> Span | None:
    if ir_span is None:
        return None
    return Span(ir_span.line, ir_span.column, ir_span.end_line, ir_span.end_column)
