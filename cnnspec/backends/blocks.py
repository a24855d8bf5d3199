"""Block definitions as reusable code, for both source writers: which instances of a spec's
block definition become one class (torch) or one function (Keras), grouped by structure, and
which of their constants become arguments. Framework-free: a backend says which instances it
can write as one call and what each looks like (`Instance.key`, `Instance.constants`); this
module compares them and decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..ir import Group, Model
from .pysource import identifier


@dataclass
class Instance:
    """One use of a block definition, written as one call."""

    path: str  # the group's path (`layer1.bottleneck1`)
    block: str  # the block definition's name
    nodes: list[str]  # its nodes, in the backend's order
    input: str  # the one value it reads from outside
    output: str  # the one value read outside it (its last node)
    key: str = ""  # its structure, constants left out (set by the backend)
    constants: list = field(default_factory=list)
    names: list = field(default_factory=list)  # (argument, where) per constant


@dataclass
class Family:
    """The instances written with one class or function."""

    name: str
    block: str
    instances: list
    params: list[str]
    slots: list[int | None]  # per constant: its parameter, None where all agree

    def arguments(self, inst: Instance) -> list:
        """The values of the parameters for one instance."""
        values = [None] * len(self.params)
        for k, slot in enumerate(self.slots):
            if slot is not None:
                values[slot] = inst.constants[k]
        return values


def find(
    group: Group, sequence: list[tuple[str, list[str]]], outputs: list[str]
) -> Instance | None:
    """The group as one call along `sequence` ((node, inputs) in the order the backend writes
    them), or None where it cannot be one: its nodes must be a run of that sequence with one
    input from outside and one value read outside (its last node)."""
    members = set(group.members)
    order = {node: k for k, (node, _) in enumerate(sequence)}
    run = [(node, inputs) for node, inputs in sequence if node in members]
    if not run:
        return None
    ks = [order[node] for node, _ in run]
    if ks != list(range(ks[0], ks[0] + len(ks))):
        return None
    outside = {i for _, inputs in run for i in inputs if i not in members}
    read_out = {
        i for node, inputs in sequence if node not in members for i in inputs if i in members
    }
    read_out |= members & set(outputs)
    if len(outside) != 1 or read_out != {run[-1][0]}:
        return None
    return Instance(group.path, group.block, [node for node, _ in run], outside.pop(), run[-1][0])


def choose(
    model: Model,
    make: Callable[[Group], Instance | None],
    name: Callable[[str, int], str],
    reserved: frozenset | set = frozenset(),
) -> tuple[list[Family], dict[str, Instance]]:
    """Block definitions that become classes or functions, outermost first: a definition
    whose instances share their structure often enough (each variant used twice on average)
    gets one per structure (`name(definition, k)` for the k-th); the others are written out,
    their inner blocks considered in turn. `make` gives a group's described instance, or None
    where the backend cannot write it as one call. Returns the families and each taken node's
    instance."""
    blocks = [g for g in model.groups if g.kind == "block" and g.block]
    taken: dict[str, Instance] = {}
    families: list[Family] = []
    first = {g.block: k for k, g in reversed(list(enumerate(blocks)))}
    # a definition before those it contains (they have fewer members)
    definitions = sorted(
        first, key=lambda b: (-max(len(g.members) for g in blocks if g.block == b), first[b])
    )
    for definition in definitions:
        found = []
        for g in blocks:
            if g.block == definition and not any(m in taken for m in g.members):
                inst = make(g)
                if inst is not None:
                    found.append(inst)
        variants: dict[str, list[Instance]] = {}
        for inst in found:
            variants.setdefault(inst.key, []).append(inst)
        if not found or len(found) < 2 * len(variants):
            continue
        for k, group in enumerate(variants.values()):
            families.append(_parameters(name(definition, k), definition, group, reserved))
            for inst in group:
                taken.update({node: inst for node in inst.nodes})
    return families, taken


def _parameters(
    name: str, block: str, instances: list[Instance], reserved: frozenset | set
) -> Family:
    """Arguments: one per distinct column of constants that differ between the instances,
    named after the first argument it fills."""
    params: list[str] = []
    slots: list[int | None] = []
    columns: dict[tuple, int] = {}
    first = instances[0]
    for k in range(len(first.constants)):
        column = tuple(repr(inst.constants[k]) for inst in instances)
        if len(set(column)) == 1:
            slots.append(None)
            continue
        if column not in columns:
            columns[column] = len(params)
            arg, where = first.names[k]
            if arg in params:  # a second argument of that name: say whose it is
                arg = f"{where}_{arg}"
            params.append(identifier(arg, set(reserved) | set(params)))
        slots.append(columns[column])
    return Family(name, block, instances, params, slots)
