"""A Graphviz drawing of a compiled network: `cnnspec graph`.

One box per IR node (name, layer and arguments, output shape; parameters and MACs on request),
one cluster per group (block instance, residual, parallel, branch, shortcut), nested as the
groups nest. Skip connections are drawn dashed: an edge into a node with several inputs is a
skip when no residual/parallel/branch/shortcut group holds both of its ends and it does not come
from the node just before (identity shortcuts, `concat skip1`, `from=` references).
"""

from __future__ import annotations

import shutil
import subprocess

from .ir import Group, Model, Node
from .layers import fmt_int, fmt_shape

FORMATS = ("svg", "png", "dot")
_STRUCTURAL = {"residual", "parallel", "branch", "shortcut"}
_SIZE_ARGS = {"kernel", "stride", "size", "factor", "dilation", "shape", "pool"}
_FILL = {
    "block": "#f4f4f8",
    "residual": "#eef6ee",
    "parallel": "#f6f1e8",
    "branch": "#fbf8f1",
    "shortcut": "#eaf1f8",
}


class GraphvizMissing(RuntimeError):
    """The `dot` program is not installed; the DOT text is still available."""


def quote(text: str) -> str:
    """A DOT quoted string: backslashes and quotes escaped, newlines as DOT's centred breaks."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\r", "").replace("\n", "\\n") + '"'


def _value(key: str, value) -> str:
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, int) for v in value):
        return "x".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def describe(node: Node) -> str:
    """`conv 64 kernel=3x3 padding=same activation=relu`: the kind and its non-default args."""
    args = node.layer.args()
    parts = [node.kind] + [f"{k}={_value(k, v)}" for k, v in args.items()]
    return " ".join(parts)


def label(node: Node, params: bool = False) -> str:
    lines = [node.name, describe(node), fmt_shape(node.shape)]
    if params:
        lines.append(f"params {fmt_int(node.params)}  MACs {fmt_int(node.macs)}")
    return "\n".join(lines)


def _nesting(model: Model) -> tuple[dict[int, int | None], dict[str, int]]:
    """Each group's parent group, and each node's innermost group (indices into groups)."""
    groups = [g for g in model.groups if g.members]
    # Inner groups are recorded before the groups around them; with equal member sets the later
    # one is the outer one (a block whose body is one residual).
    sets = [frozenset(g.members) for g in groups]
    parent: dict[int, int | None] = {}
    for i, s in enumerate(sets):
        around = [
            j for j in range(len(groups)) if j != i and s <= sets[j] and (s != sets[j] or j > i)
        ]
        parent[i] = min(around, key=lambda j: (len(sets[j]), j)) if around else None
    owner: dict[str, int] = {}
    for i, s in enumerate(sets):
        for name in s:
            j = owner.get(name)
            if j is None or len(s) < len(sets[j]):  # equal sizes: the earlier (inner) wins
                owner[name] = i
    return parent, owner


def skip_edges(model: Model) -> set[tuple[str, str]]:
    """The edges drawn as skip connections (see the module docstring)."""
    structural = [frozenset(g.members) for g in model.groups if g.kind in _STRUCTURAL]
    index = {n.name: i for i, n in enumerate(model.nodes)}
    skips = set()
    for i, node in enumerate(model.nodes):
        if len(node.inputs) < 2:
            continue
        for src in node.inputs:
            if index.get(src) == i - 1:
                continue
            if not any(src in s and node.name in s for s in structural):
                skips.add((src, node.name))
    return skips


def to_dot(model: Model, params: bool = False) -> str:
    """The network as Graphviz DOT text."""
    groups = [g for g in model.groups if g.members]
    parent, owner = _nesting(model)
    children: dict[int | None, list[int]] = {}
    for i in range(len(groups)):
        children.setdefault(parent[i], []).append(i)
    nodes_in: dict[int | None, list[Node]] = {}
    for node in model.nodes:
        nodes_in.setdefault(owner.get(node.name), []).append(node)
    outputs = set(model.outputs)

    out = [
        f"digraph {quote(model.name)} {{",
        "  graph [rankdir=TB, fontname=Helvetica, fontsize=11, nodesep=0.3, ranksep=0.35];",
        (
            '  node [shape=box, style="rounded,filled", fillcolor=white, fontname=Helvetica, '
            "fontsize=10];"
        ),
        "  edge [arrowsize=0.6];",
    ]

    def emit(key: int | None, depth: int) -> None:
        pad = "  " * depth
        for node in nodes_in.get(key, []):
            extra = ""
            if node.kind == "input":
                extra = ', shape=ellipse, fillcolor="#dde8f6"'
            elif node.name in outputs:
                extra = ', peripheries=2, fillcolor="#f6e2dd"'
            out.append(f"{pad}{quote(node.name)} [label={quote(label(node, params))}{extra}];")
        for i in children.get(key, []):
            g: Group = groups[i]
            title = f"{g.kind} {g.path}" + (f" ({g.block})" if g.block else "")
            out.append(f"{pad}subgraph {quote(f'cluster_{i}')} {{")
            out.append(
                f'{pad}  label={quote(title)}; labeljust=l; style="rounded,filled"; '
                f'fillcolor={quote(_FILL.get(g.kind, "#f4f4f4"))}; color="#999999";'
            )
            emit(i, depth + 1)
            out.append(f"{pad}}}")

    emit(None, 1)
    skips = skip_edges(model)
    for node in model.nodes:
        for src in node.inputs:
            style = ' [style=dashed, color="#3366cc"]' if (src, node.name) in skips else ""
            out.append(f"  {quote(src)} -> {quote(node.name)}{style};")
    out.append("}")
    return "\n".join(out) + "\n"


def has_dot() -> bool:
    return shutil.which("dot") is not None


def render(dot_text: str, fmt: str, timeout: float = 120) -> bytes:
    """Run Graphviz `dot`; raises GraphvizMissing when it is not installed."""
    if fmt == "dot":
        return dot_text.encode()
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing("Graphviz 'dot' is not installed")
    proc = subprocess.run(
        [exe, f"-T{fmt}"],
        input=dot_text.encode(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout
