"""Head surgery for the `transfer` section: where the source network is cut, and what of it
is kept, before the spec's new head is elaborated after the cut.

    transfer { source torchvision:resnet18; head at=layer4 { gap; dense 10 softmax } }

Pure functions on the IR's nodes and groups: the elaborator resolves the names and builds the
head's layers; this module decides the cut.
"""

from __future__ import annotations

from ..ir import Group, Node


def default_cut(nodes: list[Node]) -> str:
    """The classifier is what follows the last feature map: the head replaces it."""
    last = max((i for i, n in enumerate(nodes) if len(n.shape) == 3), default=0)
    return nodes[last].name


def cut_at(nodes: list[Node], groups: list[Group], at: str) -> tuple[list[Node], list[Group]]:
    """The nodes up to `at` (inclusive), and the groups that keep at least one member."""
    keep = nodes[: [n.name for n in nodes].index(at) + 1]
    dropped = {n.name for n in nodes[len(keep) :]}
    return keep, [g for g in groups if not set(g.members) <= dropped]
