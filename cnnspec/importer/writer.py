"""Structured items -> readable spec text: repeated structures become blocks, runs become repeats.

Residuals and parallels whose statements are equal up to integers (a signature) and that occur
at least twice become one `block`. Its parameters are found from the integers of the
occurrences: an integer equal in all of them stays literal; one that always equals an earlier
parameter, or a fixed multiple of it (`f*4`), or of the block input's channels
(`in_channels*6`; only equality
or a multiple, since `in_channels//2` reads worse than a parameter), is written as that expression; the rest are parameters, a stride defaulting
to 1. The expression reproduces every occurrence exactly, so the blocks change no number.
Consecutive equal lines (`bottleneck 64` three times) become `repeat N { ... }`.

The source's own names are kept where they are names of the language: a torch model's
top-level container that holds several statements (ResNet's `layer1`, VGG's `features`)
becomes a block of that name called once (`layer1 = layer1`), and a top-level module that is
one statement is named after it (`fc = dense 1000`), so that transfer settings written against
the source's names (`freeze until layer3`) find them.
"""

from __future__ import annotations

import keyword
import re
from collections import Counter
from dataclasses import dataclass, field

from .ops import LEADING, MERGES, PRIMARY, Graph, Op, literal
from .structure import Item, Residual, ops_of

MAX_WIDTH = 96
MIN_RUN, MAX_RUN = 3, 40  # ops in a repeated run worth a block
ROLE = {
    "filters": "f",
    "units": "units",
    "kernel": "k",
    "stride": "stride",
    "padding": "pad",
    "size": "size",
    "multiplier": "m",
    "groups": "groups",
    "dilation": "d",
}


def signature(item) -> tuple:
    if isinstance(item, Op):
        return item.signature()
    if isinstance(item, Run):
        return ("run", tuple(op.signature() for op in item.ops))
    if isinstance(item, Residual):
        return (
            "residual",
            item.act,
            tuple(map(signature, item.body)),
            tuple(map(signature, item.shortcut)),
        )
    return ("parallel", item.op, item.act, tuple(tuple(map(signature, b)) for b in item.branches))


@dataclass
class Run:
    """Consecutive ops that form a block body (used bare and inside residuals)."""

    ops: list[Op]


@dataclass
class Stage:
    """Top-level items that one container of the source holds (ResNet's layer1)."""

    name: str
    items: list


@dataclass
class Block:
    name: str
    items: list[Item]  # the first occurrence, rendered with `texts`
    texts: list[str]  # per slot: literal or expression
    params: list[tuple[str, int | None]]  # (name, default)
    calls: dict[int, list[int]] = field(default_factory=dict)  # id(item) -> param values

    def call(self, item: Item) -> str:
        parts = [self.name]
        for (name, default), value in zip(self.params, self.calls[id(item)]):
            if default is None:
                parts.append(str(value))
            elif value != default:
                parts.append(f"{name}={value}")
        return " ".join(parts)


def infer(
    occurrences: list[list[int]], in_channels: list[int], roles_: list[str], force: bool = False
):
    """(texts per slot, params with defaults, values per occurrence) for one block. Calls that
    differ get at least one argument (`basic_block 128`, not a bare `basic_block` whose
    widths come from `in_channels` alone): then the first varying integer is a parameter."""
    texts, params, values = [], [], [[] for _ in occurrences]
    columns: list[tuple[str, tuple[int, ...]]] = []  # parameter name -> its values
    for s, role in enumerate(roles_):
        col = tuple(o[s] for o in occurrences)
        if len(set(col)) == 1:
            texts.append(literal(col[0]))
            continue
        expr = _relation(col, columns)
        if expr is None and not (force and not params):
            expr = _relation(col, [("in_channels", tuple(in_channels))])
        if expr is None:
            base = ROLE.get(role, "n")
            taken = {p for p, _ in params}
            name = (
                base
                if base not in taken
                else next(f"{base}{i}" for i in range(2, 99) if f"{base}{i}" not in taken)
            )
            default = 1 if base == "stride" and 1 in col else None
            params.append((name, default))
            columns.append((name, col))
            for v, c in zip(values, col):
                v.append(c)
            expr = name
        texts.append(expr)
    if not params and not force and any(o != occurrences[0] for o in occurrences):
        return infer(occurrences, in_channels, roles_, force=True)
    # parameters with a default go last, so that calls stay positional for the others
    order = sorted(range(len(params)), key=lambda i: params[i][1] is not None)
    return texts, [params[i] for i in order], [[v[i] for i in order] for v in values]


def _relation(col, columns) -> str | None:
    for name, vals in columns:
        if vals == col:
            return name
        for k in range(2, 9):
            if all(c == v * k for c, v in zip(col, vals)):
                return f"{name}*{k}"
    return None


class Writer:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.channels = _channels(graph)
        self.blocks: list[Block] = []
        self.block_of: dict[int, Block] = {}
        self.labels: dict[int, str] = {}  # id(item) -> the source's name for it

    # --- finding blocks ----------------------------------------------------------------------
    def find_blocks(self, items: list[Item], runs: bool = True) -> list[Item]:
        """Decide the blocks; returns the items with residual bodies that also occur bare
        (MobileNet's inverted residuals with and without their skip) made into `Run`s, and
        with `runs`, other repeated runs of ops too."""
        items = self._runs(items)
        if runs:
            items = repeated_runs(items)
        groups: dict[tuple, list[Item]] = {}
        self._collect(items, groups)
        found = [occ for occ in groups.values() if len(occ) >= 2]
        for occ, name in zip(found, self._names([occ[0] for occ in found])):
            slots = [[s for op in ops_of(it) for s in op.slots()] for it in occ]
            role_list = [r for op in ops_of(occ[0]) for r in _roles(op)]
            ins = [self.channels[_input(it)] for it in occ]
            texts, params, values = infer(slots, ins, role_list)
            block = Block(name, occ[0].ops if isinstance(occ[0], Run) else [occ[0]], texts, params)
            for it, vals in zip(occ, values):
                block.calls[id(it)] = vals
                self.block_of[id(it)] = block
            self.blocks.append(block)
        return items

    def _runs(self, items: list[Item]) -> list[Item]:
        bodies: dict[tuple, list[Residual]] = {}
        for it in items:
            if (
                isinstance(it, Residual)
                and not it.shortcut
                and all(isinstance(x, Op) for x in it.body)
            ):
                bodies.setdefault(tuple(op.signature() for op in it.body), []).append(it)
        for sig, residuals in bodies.items():
            out, i, bare = [], 0, 0
            while i < len(items):
                window = items[i : i + len(sig)]
                if (
                    len(window) == len(sig)
                    and all(isinstance(x, Op) for x in window)
                    and tuple(op.signature() for op in window) == sig
                ):
                    out.append(Run(list(window)))
                    i, bare = i + len(sig), bare + 1
                else:
                    out.append(items[i])
                    i += 1
            if bare:
                items = out
                for r in residuals:
                    r.body = [Run(r.body)]
        return items

    def _collect(self, items, groups) -> None:
        for it in items:
            if isinstance(it, Op):
                continue
            if isinstance(it, Run):
                groups.setdefault(signature(it), []).append(it)
                continue
            if not (isinstance(it, Residual) and len(it.body) == 1 and isinstance(it.body[0], Run)):
                groups.setdefault(signature(it), []).append(it)
            for seq in [it.body, it.shortcut] if isinstance(it, Residual) else it.branches:
                self._collect(seq, groups)

    def _names(self, items: list[Item]) -> list[str]:
        """Block names: the source's class (torch), else the structure's kind; where two
        blocks would share one, a residual with a projection shortcut is `_proj`."""
        bases = [self._owner(it) or _kind_name(it) for it in items]
        count = Counter(bases)
        names, taken = [], set()
        for it, base in zip(items, bases):
            name = base
            if count[base] > 1 and isinstance(it, Residual) and it.shortcut:
                name = f"{base}_proj"
            stem, i = name, 2
            while name in taken:
                name, i = f"{stem}_{i}", i + 1
            taken.add(name)
            names.append(name)
        return names

    def _owner(self, item: Item) -> str | None:
        paths = [op.path.split(".") for op in ops_of(item) if op.path]
        if not paths or not self.graph.module_types:
            return None
        common = []
        for parts in zip(*paths):
            if len(set(parts)) > 1:
                break
            common.append(parts[0])
        while common:
            kind = self.graph.module_types.get(".".join(common), "")
            if kind not in ("Sequential", "ModuleList", "ModuleDict", ""):
                return _snake(kind)
            common.pop()
        return None

    def stages(self, items: list[Item]) -> list:
        """Top-level runs of items held by one container of the source as `Stage`s, and single
        top-level modules labelled with their names (see the module docstring)."""
        if not self.graph.module_types:
            return items
        from ..layers import KEYWORDS
        from ..textmate import grammar_keywords

        # a layer's keyword names a tensor well (`fc = dense 1000`); the grammar's words and
        # the blocks' names do not
        reserved = {
            *grammar_keywords(),
            "else",
            "input",
            "output",
            "model",
            *(b.name for b in self.blocks),
        }
        runs: list[tuple[str | None, list]] = []
        for it in items:
            root = self._root(it)
            if runs and root is not None and runs[-1][0] == root:
                runs[-1][1].append(it)
            else:
                runs.append((root, [it]))
        seen = Counter(root for root, _ in runs)
        out: list = []
        for root, run in runs:
            usable = (
                root is not None
                and seen[root] == 1
                and root.isidentifier()
                and not keyword.iskeyword(root)
                and not root.startswith("__")
                and root not in reserved
            )
            if usable and len(run) > 1:
                # a block may not take a layer kind's name (E216): those stay unnamed
                out += [Stage(root, run)] if root not in KEYWORDS else run
            elif usable and not re.fullmatch(r"[a-z]+[0-9]+", root):
                self.labels[id(run[0])] = root  # conv1, bn1: what the spec calls them too
                out += run
            else:
                out += run
        return out

    def _root(self, item) -> str | None:
        """The top-level module that holds all of an item's modules, if one does."""
        roots = {op.path.split(".")[0] for op in ops_of(item) if op.path}
        return roots.pop() if len(roots) == 1 else None

    # --- writing -----------------------------------------------------------------------------
    def definitions(self, stages: list | None = None) -> list[str]:
        lines = []
        for b in self.blocks:
            params = ", ".join(n if d is None else f"{n}={d}" for n, d in b.params)
            lines.append(f"block {b.name}({params}) {{")
            lines += _indent(self.sequence(b.items, iter(b.texts), inline=True))
            lines.append("}")
        for st in stages or []:  # after the blocks they call
            if isinstance(st, Stage):
                lines.append(f"block {st.name}() {{")
                lines += _indent(self.sequence(st.items))
                lines.append("}")
        return lines

    def sequence(self, items: list[Item], texts=None, inline=False) -> list[str]:
        """Lines for a sequence; `texts` (block bodies) supplies each slot's text in order."""
        lines: list[str] = []
        line: list[str] = []
        has_primary = False
        for it in items:
            label = self.labels.get(id(it)) if texts is None else None
            if isinstance(it, Stage):
                if line:
                    lines.append("; ".join(line))
                    line, has_primary = [], False
                lines.append(f"{it.name} = {it.name}")
                continue
            if isinstance(it, Op):
                text = it.render([next(texts) for _ in it.slots()] if texts else None)
                text = f"{label} = {text}" if label else text
                starts = _starts_line(it, line)
                if line and (starts and has_primary or len("; ".join(line + [text])) > MAX_WIDTH):
                    lines.append("; ".join(line))
                    line, has_primary = [], False
                line.append(text)
                has_primary = has_primary or it.word in PRIMARY
                continue
            if line:
                lines.append("; ".join(line))
                line, has_primary = [], False
            block = self.block_of.get(id(it)) if texts is None else None
            if isinstance(it, Run) and block is None:
                written = self.sequence(it.ops, texts, inline=True)
            else:
                written = [block.call(it)] if block else self.structure(it, texts)
            if label and written:
                written[0] = f"{label} = {written[0]}"
            lines += written
        if line:
            lines.append("; ".join(line))
        return lines if inline else _repeats(lines)

    def structure(self, item: Item, texts) -> list[str]:
        if isinstance(item, Residual):
            head = "residual" + (f" {item.act}" if item.act else "")
            body = self.sequence(item.body, texts, inline=True)
            if (
                len(body) == 1
                and not item.shortcut
                and _single(body[0])
                and len(head + body[0]) < MAX_WIDTH - 6
            ):
                return [f"{head} {{ {body[0]} }}"]
            lines = [f"{head} {{", *_indent(body)]
            if item.shortcut:
                lines += [
                    "} shortcut {",
                    *_indent(self.sequence(item.shortcut, texts, inline=True)),
                ]
            return lines + ["}"]
        lines = [f"parallel {item.op}{f' {item.act}' if item.act else ''} {{"]
        for branch in item.branches:
            body = self.sequence(branch, texts, inline=True)
            if not body:
                lines.append("  branch { }")
            elif len(body) == 1 and len(body[0]) < MAX_WIDTH - 12:
                lines.append(f"  branch {{ {body[0]} }}")
            else:
                lines += ["  branch {", *_indent(_indent(body)), "  }"]
        return lines + ["}"]


def _starts_line(op: Op, line: list[str]) -> bool:
    """A windowed or dense layer starts a line, with the padding before it; so does a batch
    norm when the line has one already (pre-activation: `bn; relu; conv`)."""
    if op.word in PRIMARY or op.word in LEADING:
        return True
    return op.word == "bn" and any(t.split()[0] == "bn" for t in line)


def _line_starts(ops: list[Op]) -> list[bool]:
    starts, line, primary = [], [], False
    for op in ops:
        new = not line or (_starts_line(op, line) and primary)
        line = [op.render()] if new else line + [op.render()]
        primary = (primary and not new) or op.word in PRIMARY
        starts.append(new)
    return starts


def repeated_runs(items: list) -> list:
    """Runs of ops that occur twice or more (line-aligned, not overlapping) as `Run`s, the run
    covering the most ops first, until none is left (DenseNet transitions, MobileNet's
    stride-2 units)."""
    while True:
        best = None
        stretches = _stretches(items)
        for lo, hi in stretches:
            starts = _line_starts(items[lo:hi]) + [True]
            for i in range(lo, hi):
                if not starts[i - lo]:
                    continue
                for j in range(i + MIN_RUN, min(hi, i + MAX_RUN) + 1):
                    if not starts[j - lo] or not any(o.word in PRIMARY for o in items[i:j]):
                        continue
                    sig = tuple(o.signature() for o in items[i:j])
                    n = _count(items, stretches, sig)
                    score = (n - 1) * len(sig)
                    if n >= 2 and (best is None or score > best[0]):
                        best = (score, sig)
        if best is None:
            return items
        items = _replace(items, best[1])


def _stretches(items) -> list[tuple[int, int]]:
    out, start = [], None
    for k, it in enumerate(items + [None]):
        if isinstance(it, Op) and start is None:
            start = k
        elif not isinstance(it, Op) and start is not None:
            out.append((start, k))
            start = None
    return out


def _count(items, stretches, sig) -> int:
    n = 0
    for lo, hi in stretches:
        k = lo
        while k + len(sig) <= hi:
            if tuple(o.signature() for o in items[k : k + len(sig)]) == sig:
                n, k = n + 1, k + len(sig)
            else:
                k += 1
    return n


def _replace(items, sig) -> list:
    out, k = [], 0
    while k < len(items):
        window = items[k : k + len(sig)]
        if (
            len(window) == len(sig)
            and all(isinstance(o, Op) for o in window)
            and tuple(o.signature() for o in window) == sig
        ):
            out.append(Run(list(window)))
            k += len(sig)
        else:
            out.append(items[k])
            k += 1
    return out


def _kind_name(item: Item) -> str:
    if isinstance(item, Run):
        return "unit"
    if isinstance(item, Residual):
        return "res_block"
    if item.op == "concat" and any(not b for b in item.branches):
        return "dense_layer"  # x ++ f(x): DenseNet's name for it
    return f"{item.op}_block"


def _roles(op: Op) -> list[str]:
    from ..layers import KEYWORDS
    from .ops import _slot

    positional = KEYWORDS[op.word][0].positional if op.word in KEYWORDS else ()
    out, pos = [], 0
    for arg in op.args:
        role = None
        if arg[0] == "pos":
            role = positional[pos] if pos < len(positional) else "n"
            pos += 1
        elif arg[0] == "kw":
            role = arg[1]
        if arg[0] != "flag" and _slot(arg[-1]):
            out.append(role)
    return out


def _input(item: Item) -> str:
    first = ops_of(item)
    return first[0].inputs[0] if first else "?"


def _channels(graph: Graph) -> dict[str, int]:
    """Output channels of every op (what `in_channels` is in a block reading it)."""
    ch = {graph.input_name: graph.input_shape[-1]}
    for op in graph.ops:
        ins = [ch[i] for i in op.inputs]
        first = op.args[0][-1] if op.args else None
        if op.word in ("conv", "dense"):
            ch[op.name] = first
        elif op.word == "dwconv":
            mult = {a[1]: a[2] for a in op.args if a[0] == "kw"}.get("multiplier", 1)
            ch[op.name] = ins[0] * mult
        elif op.word == "concat":
            ch[op.name] = sum(ins)
        elif op.word == "reshape":
            ch[op.name] = first.values[-1] if hasattr(first, "values") else first
        else:
            ch[op.name] = ins[0] if ins else 0
    return ch


def _repeats(lines: list[str]) -> list[str]:
    """Runs of one single-line statement as `repeat N { statement }`."""
    out, i = [], 0
    while i < len(lines):
        j = i
        while j + 1 < len(lines) and lines[j + 1] == lines[i] and _single(lines[i]):
            j += 1
        n = j - i + 1
        out.append(f"repeat {n} {{ {lines[i]} }}" if n > 1 else lines[i])
        i = j + 1
    return out


def _single(line: str) -> bool:
    """A whole statement on one line, at the sequence's own level."""
    return line.count("{") == line.count("}") and not line.startswith((" ", "}"))


def _indent(lines: list[str]) -> list[str]:
    return [f"  {ln}" for ln in lines]


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().strip("_")


def flat(graph: Graph) -> list[str]:
    """Every op in order, with named tensors where an op reads other than the one before it
    (`skip = conv ...`, `from=skip`, `concat a b`): for graphs that residual and parallel
    cannot say, and for several outputs."""
    names = _tensor_names(graph)
    need, prev = set(), graph.input_name
    for op in graph.ops:
        rest = op.inputs[1:] if op.word in MERGES and op.inputs[0] == prev else op.inputs
        need |= {i for i in rest if i != prev or op.word in MERGES}
        prev = op.name
    outs = graph.outputs
    if len(outs) > 1 or outs[-1] != prev:
        need |= set(outs)
    lines, line, has_primary, prev = [], [], False, graph.input_name
    for op in graph.ops:
        text = op.render()
        if op.word in MERGES:
            refs = [names[i] for i in op.inputs]
            text += " " + (
                " ".join(refs[1:]) if op.inputs[0] == prev else f"from=({', '.join(refs)})"
            )
        elif op.inputs[0] != prev:
            text += f" from={names[op.inputs[0]]}"
        alone = op.name in need or op.word in MERGES or op.inputs[0] != prev
        if op.name in need:
            text = f"{names[op.name]} = {text}"
        if line and (
            alone
            or (_starts_line(op, line) and has_primary)
            or len("; ".join(line + [text])) > MAX_WIDTH
        ):
            lines.append("; ".join(line))
            line, has_primary = [], False
        line.append(text)
        has_primary = has_primary or op.word in PRIMARY
        if op.name in need:
            lines.append("; ".join(line))
            line, has_primary = [], False
        prev = op.name
    if line:
        lines.append("; ".join(line))
    if len(outs) > 1 or outs[-1] != prev:
        lines.append("output " + ", ".join(names[o] for o in outs))
    return _repeats(lines)


def _tensor_names(graph: Graph) -> dict[str, str]:
    from ..layers import KEYWORDS
    from ..textmate import grammar_keywords

    # the grammar's own words (`compile`, `transfer`...; `else` is a terminal of its own)
    reserved = {*KEYWORDS, *grammar_keywords(), "else"}
    names, taken = {graph.input_name: "input"}, {"input"}
    for op in graph.ops:
        name = re.sub(r"[^A-Za-z0-9_]", "_", op.name).strip("_") or "t"
        name = name if name[:1].isalpha() else f"t_{name}"
        if name in reserved:
            name += "_"
        stem, i = name, 2
        while name in taken:
            name, i = f"{stem}_{i}", i + 1
        taken.add(name)
        names[op.name] = name
    return names
