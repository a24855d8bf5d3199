"""A Graph as nested structure: sequences of ops, residuals and parallels.

Where a tensor fans out, its immediate post-dominator (the first op every path from it reaches)
is the merge that closes the fan-out; the paths in between are the branches. A two-way `add`
becomes `residual { longer path } shortcut { shorter path }` (an empty shortcut is the identity)
with a following activation folded in (`residual relu`); a concat, multiply or wider add becomes
`parallel OP { branch { } ... }` with branches in the merge's input order (an empty branch is
the identity). Graphs that do not decompose this way are refused (E413), never rewired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SpecError
from .ops import MERGES, Graph, Op

FOLDABLE = {"relu", "relu6", "silu", "sigmoid", "tanh", "gelu", "hard_swish", "elu"}


def ops_of(item) -> list[Op]:
    """The ops an item holds, in order: an op, a run of ops (anything with `.ops`), or the
    body and shortcut of a residual / the branches of a parallel, recursively."""
    if isinstance(item, Op):
        return [item]
    if hasattr(item, "ops"):
        return list(item.ops)
    seqs = [item.body, item.shortcut] if isinstance(item, Residual) else item.branches
    return [op for seq in seqs for it in seq for op in ops_of(it)]


@dataclass
class Residual:
    body: list
    shortcut: list
    act: str | None = None
    merge: Op | None = None


@dataclass
class Parallel:
    op: str
    branches: list[list] = field(default_factory=list)
    merge: Op | None = None
    act: str | None = None


Item = Op | Residual | Parallel


def chain_concats(graph: Graph) -> None:
    """concat(a, b, c, d) where concat(a, b, c) exists already is concat(that, d): the same
    values in the same order. torchvision's DenseNet concatenates all earlier features for
    each layer; chained, it is Keras' x = concat(x, f(x)), which `parallel` can say."""
    concats: list[tuple[str, list[str]]] = []  # (name, the inputs as first written)
    for op in graph.ops:
        if op.word != "concat":
            continue
        written = list(op.inputs)
        prefixes = [
            (n, ins) for n, ins in concats if len(ins) < len(written) and written[: len(ins)] == ins
        ]
        if prefixes:
            name, ins = max(prefixes, key=lambda c: len(c[1]))
            op.inputs = [name] + written[len(ins) :]
        concats.append((op.name, written))


def decompose(graph: Graph) -> list[Item]:
    """The graph's ops as one sequence of items, from the input to the (single) output."""
    chain_concats(graph)
    if len(graph.outputs) != 1:
        raise SpecError(
            "E413",
            f"{graph.source}: {len(graph.outputs)} outputs; the importer "
            "writes models with one output",
        )
    return _Decomposer(graph).sequence(graph.input_name, None)[0]


class _Decomposer:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.ops = {op.name: op for op in graph.ops}
        self.order = {graph.input_name: -1, **{op.name: i for i, op in enumerate(graph.ops)}}
        self.users: dict[str, list[str]] = {graph.input_name: []}
        for op in graph.ops:
            self.users[op.name] = []
            for i in op.inputs:
                self.users[i].append(op.name)
        self.pdom: dict[str, frozenset] = {}
        self.ipdom = self._post_dominators()

    def _post_dominators(self) -> dict[str, str | None]:
        sink = "<end>"
        pdom: dict[str, frozenset] = self.pdom
        ipdom: dict[str, str | None] = {}
        for name in reversed([self.graph.input_name] + [op.name for op in self.graph.ops]):
            succ = self.users[name] or [sink]
            common = frozenset.intersection(*(pdom.get(s, frozenset({sink})) for s in succ))
            pdom[name] = common | {name}
            strict = [n for n in common if n != sink]
            ipdom[name] = min(strict, key=self.order.__getitem__) if strict else None
        return ipdom

    def sequence(self, cur: str, stop: str | None) -> tuple[list[Item], str]:
        """Items from the tensor `cur` up to (not including) the op `stop`; and the last op."""
        items: list[Item] = []
        while True:
            users = self.users[cur]
            if not users or (len(users) == 1 and users[0] == stop):
                return items, cur
            if len(users) == 1:
                op = self.ops[users[0]]
                if op.word in MERGES and len(op.inputs) > 1:
                    raise self._tangled(op)
                items.append(op)
                cur = op.name
                continue
            merge = self._merge_of(users)
            if merge is None or (
                stop is not None and merge != stop and self.order[merge] > self.order[stop]
            ):
                raise self._tangled(self.ops[users[0]])
            item, cur = self._fan_out(cur, users, self.ops[merge])
            items.append(item)

    def _merge_of(self, users: list[str]) -> str | None:
        """The first op that every path from `users` reaches (their common post-dominator)."""
        common = frozenset.intersection(*(self.pdom[u] for u in users)) - {"<end>"}
        return min(common, key=self.order.__getitem__) if common else None

    def _fan_out(self, cur: str, users: list[str], merge: Op) -> tuple[Item, str]:
        if (
            merge.word == "add"
            and len(merge.inputs) == 2
            and cur in merge.inputs
            and len(users) > 2
        ):
            # x + f(x) where f itself fans x out (InceptionResNet: x + s * conv(concat(...))):
            # the body is the sequence from x through the other users alone
            saved = self.users[cur]
            self.users[cur] = [u for u in users if u != merge.name]
            try:
                body, end = self.sequence(cur, merge.name)
            finally:
                self.users[cur] = saved
            if sorted([cur, end]) != sorted(merge.inputs):
                raise self._tangled(merge)
            return self._residual([body, []], merge)
        paths: dict[str, list[Item]] = {}
        for user in users:
            if user == merge.name:
                paths.setdefault(cur, [])
                continue
            op = self.ops[user]
            if op.word in MERGES and len(op.inputs) > 1:
                raise self._tangled(op)
            rest, end = self.sequence(user, merge.name)
            if end in paths:
                raise self._tangled(merge)
            paths[end] = [op] + rest
        if sorted(paths) != sorted(merge.inputs) or merge.word not in MERGES:
            raise self._tangled(merge)
        branches = [paths[i] for i in merge.inputs]
        if merge.word == "add" and len(branches) == 2:
            return self._residual(branches, merge)
        return Parallel(merge.word, branches, merge=merge), merge.name

    def _residual(self, branches: list[list[Item]], merge: Op) -> tuple[Item, str]:
        body, short = sorted(branches, key=lambda b: -_size(b))
        if short and self._rank(short) < self._rank(body):
            # the source registers the shortcut's weights first (RegNet's `proj`): the
            # branches keep its order, so that weights loaded by order land right
            item: Item = Parallel("add", [short, body], merge=merge)
        else:
            item = Residual(body, short, merge=merge)
        after = self.users[merge.name]
        if (
            len(after) == 1
            and self.ops[after[0]].word in FOLDABLE
            and not self.ops[after[0]].args
            and merge.name not in self.graph.outputs
        ):
            item.act = self.ops[after[0]].word
            return item, after[0]
        return item, merge.name

    def _rank(self, items: list[Item]) -> int:
        """Where the source registers the first module of `items` (torch's named_modules
        order, which its state_dict follows); the graph's order where it does not say."""
        registered = {p: i for i, p in enumerate(self.graph.module_types)}
        ranks = [registered[op.path] for it in items for op in ops_of(it) if op.path in registered]
        return min(ranks) if ranks else self.order[ops_of(items[0])[0].name]

    def _tangled(self, op: Op) -> SpecError:
        return SpecError(
            "E413",
            f"cannot import '{op.name}' ({op.source_type}): its inputs do "
            "not come from one fan-out closed by one merge, which is what "
            "residual and parallel can say",
            hint="this importer writes series-parallel graphs only",
        )


def _size(items: list[Item]) -> int:
    total = 0
    for it in items:
        if isinstance(it, Op):
            total += 1
        elif isinstance(it, Residual):
            total += _size(it.body) + _size(it.shortcut) + 1
        else:
            total += sum(_size(b) for b in it.branches) + 1
    return total
