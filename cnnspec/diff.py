"""What changed between two networks, layer by layer: `cnnspec diff A.cnn B.cnn`.

Layers are matched by name first; the layers left over on both sides are then matched by
position (an alignment of their kinds, so a renamed or re-counted layer pairs with its old self
and an inserted one does not shift everything after it); only layers of the same kind pair.
What remains is added or removed.
For each pair the report lists what differs: kind, arguments, inputs, output shape,
parameters and MACs; then the totals with their deltas, and the compile/transfer settings.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field

from .ir import Model, Node
from .layers import fmt_int, fmt_shape


@dataclass
class LayerDiff:
    status: str  # "added", "removed", "changed", "same"
    a: str | None = None  # the name in A
    b: str | None = None  # the name in B
    kind_a: str | None = None
    kind_b: str | None = None
    changes: list[dict] = field(default_factory=list)  # {"what", "a", "b"}
    shape_a: list[int] | None = None
    shape_b: list[int] | None = None
    params_a: int = 0
    params_b: int = 0
    macs_a: int = 0
    macs_b: int = 0

    @property
    def name(self) -> str:
        if self.a and self.b and self.a != self.b:
            return f"{self.b} (was {self.a})"
        return self.b or self.a or ""


@dataclass
class ModelDiff:
    a: str
    b: str
    layers: list[LayerDiff]
    totals: dict[str, dict]  # name -> {"a", "b", "delta"}
    settings: list[dict]  # {"what", "a", "b"}

    @property
    def different(self) -> bool:
        return (
            bool(self.settings)
            or any(r.status != "same" for r in self.layers)
            or any(t["a"] != t["b"] for t in self.totals.values())
        )

    def to_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "different": self.different,
            "layers": [asdict(r) for r in self.layers if r.status != "same"],
            "unchanged": sum(r.status == "same" for r in self.layers),
            "totals": self.totals,
            "settings": self.settings,
        }


# --- matching ----------------------------------------------------------------------------------


def match(a: Model, b: Model) -> list[tuple[int | None, int | None]]:
    """Pairs of node indices (None for a side that has no counterpart), in B's order."""
    b_index = {n.name: j for j, n in enumerate(b.nodes)}
    pairs = {i: b_index[n.name] for i, n in enumerate(a.nodes) if n.name in b_index}
    left_a = [i for i in range(len(a.nodes)) if i not in pairs]
    taken = set(pairs.values())
    left_b = [j for j in range(len(b.nodes)) if j not in taken]
    kinds_a = [a.nodes[i].kind for i in left_a]
    kinds_b = [b.nodes[j].kind for j in left_b]
    sm = difflib.SequenceMatcher(a=kinds_a, b=kinds_b, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":  # only layers of one kind pair up: dropout -> bn is -1 +1
            for di in range(i2 - i1):
                pairs[left_a[i1 + di]] = left_b[j1 + di]
    return _order(pairs, len(a.nodes), len(b.nodes))


def _order(pairs: dict[int, int], n_a: int, n_b: int) -> list[tuple[int | None, int | None]]:
    """B's order, each removed layer placed after the match of the A layer before it."""
    rows: list[tuple[tuple, tuple[int | None, int | None]]] = []
    matched_b = set(pairs.values())
    for j in range(n_b):
        if j not in matched_b:
            rows.append(((j, 0, 0), (None, j)))
    anchor = -1
    for i in range(n_a):
        if i in pairs:
            anchor = pairs[i]
            rows.append(((pairs[i], 0, 0), (i, pairs[i])))
        else:
            rows.append(((anchor, 1, i), (i, None)))
    return [pair for _, pair in sorted(rows, key=lambda r: r[0])]


# --- comparing ---------------------------------------------------------------------------------


def _show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, int) for v in value):
        return "x".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _args(layer) -> dict:
    """The arguments that differ from the defaults, in one spelling per meaning: `padding=0` is
    the default `valid` written out, so it is no change."""
    args = layer.args()
    if args.get("padding") in ((0, 0), [0, 0]):
        default = type(layer).model_fields["padding"].default
        if default == "valid":
            del args["padding"]
    return args


def _compare(na: Node, nb: Node, renamed: dict[str, str]) -> list[dict]:
    changes = []
    if na.kind != nb.kind:
        changes.append({"what": "kind", "a": na.kind, "b": nb.kind})
    args_a, args_b = _args(na.layer), _args(nb.layer)
    for key in sorted(set(args_a) | set(args_b)):
        va, vb = args_a.get(key), args_b.get(key)
        if va != vb:
            changes.append({"what": key, "a": _show(va), "b": _show(vb)})
    ins_a = [renamed.get(i, i) for i in na.inputs]
    if ins_a != nb.inputs:
        changes.append({"what": "inputs", "a": ", ".join(na.inputs), "b": ", ".join(nb.inputs)})
    if na.shape != nb.shape:
        changes.append({"what": "shape", "a": fmt_shape(na.shape), "b": fmt_shape(nb.shape)})
    for what in ("trainable", "non_trainable", "macs"):
        va, vb = getattr(na, what), getattr(nb, what)
        if va != vb:
            changes.append({"what": what, "a": va, "b": vb})
    return changes


def _row(na: Node | None, nb: Node | None, renamed: dict[str, str]) -> LayerDiff:
    row = LayerDiff(
        status="same",
        a=na and na.name,
        b=nb and nb.name,
        kind_a=na and na.kind,
        kind_b=nb and nb.kind,
        shape_a=list(na.shape) if na else None,
        shape_b=list(nb.shape) if nb else None,
        params_a=na.params if na else 0,
        params_b=nb.params if nb else 0,
        macs_a=na.macs if na else 0,
        macs_b=nb.macs if nb else 0,
    )
    if na is None:
        row.status = "added"
    elif nb is None:
        row.status = "removed"
    else:
        row.changes = _compare(na, nb, renamed)
        if na.name != nb.name:
            row.changes.insert(0, {"what": "name", "a": na.name, "b": nb.name})
        row.status = "changed" if row.changes else "same"
    return row


def _flat(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            if k != "span":
                _flat(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value
    return out


def _settings(a: Model, b: Model) -> list[dict]:
    changes = []
    for section in ("compile", "transfer"):
        da = _flat(section, getattr(a, section).model_dump(), {}) if getattr(a, section) else {}
        db = _flat(section, getattr(b, section).model_dump(), {}) if getattr(b, section) else {}
        if bool(da) != bool(db):
            changes.append(
                {"what": section, "a": "yes" if da else "none", "b": "yes" if db else "none"}
            )
        for key in sorted(set(da) | set(db)):
            if da and db and da.get(key) != db.get(key):
                changes.append({"what": key, "a": _show(da.get(key)), "b": _show(db.get(key))})
    return changes


def _totals(a: Model, b: Model) -> dict[str, dict]:
    values = {
        "layers": (len(a.nodes) - 1, len(b.nodes) - 1),
        "params": (a.params, b.params),
        "trainable": (a.trainable, b.trainable),
        "non_trainable": (a.non_trainable, b.non_trainable),
        "macs": (a.macs, b.macs),
    }
    out = {k: {"a": va, "b": vb, "delta": vb - va} for k, (va, vb) in values.items()}
    out["input"] = {"a": fmt_shape(a.input_shape), "b": fmt_shape(b.input_shape), "delta": None}
    out["outputs"] = {
        "a": ", ".join(fmt_shape(s) for s in a.output_shapes),
        "b": ", ".join(fmt_shape(s) for s in b.output_shapes),
        "delta": None,
    }
    return out


def diff(a: Model, b: Model, name_a: str = "A", name_b: str = "B") -> ModelDiff:
    pairs = match(a, b)
    renamed = {
        a.nodes[i].name: b.nodes[j].name for i, j in pairs if i is not None and j is not None
    }
    rows = [
        _row(a.nodes[i] if i is not None else None, b.nodes[j] if j is not None else None, renamed)
        for i, j in pairs
    ]
    return ModelDiff(name_a, name_b, rows, _totals(a, b), _settings(a, b))


# --- rendering ---------------------------------------------------------------------------------

_MARK = {"added": "+", "removed": "-", "changed": "~"}


def _num(v) -> str:
    return fmt_int(v) if isinstance(v, int) and not isinstance(v, bool) else _show(v)


def _delta(t: dict) -> str:
    if t["delta"] is None:
        return f"{t['a']} -> {t['b']}" if t["a"] != t["b"] else str(t["a"])
    if t["a"] == t["b"]:
        return _num(t["a"])
    pct = f", {t['delta'] / t['a'] * 100:+.2f}%" if t["a"] else ""
    return f"{_num(t['a'])} -> {_num(t['b'])} ({t['delta']:+,}{pct})"


def _what(row: LayerDiff) -> str:
    if row.status == "added":
        return (
            f"{row.kind_b} {fmt_shape(row.shape_b)}, {fmt_int(row.params_b)} params, "
            f"{fmt_int(row.macs_b)} MACs"
        )
    if row.status == "removed":
        return (
            f"{row.kind_a} {fmt_shape(row.shape_a)}, {fmt_int(row.params_a)} params, "
            f"{fmt_int(row.macs_a)} MACs"
        )
    return (
        "; ".join(
            f"{c['what']} {_num(c['a'])} -> {_num(c['b'])}"
            for c in row.changes
            if c["what"] != "name"
        )
        or "renamed"
    )


def render_text(d: ModelDiff) -> str:
    lines = [f"--- {d.a}", f"+++ {d.b}"]
    shown = [r for r in d.layers if r.status != "same"]
    width = max((len(r.name) for r in shown), default=0)
    for r in shown:
        lines.append(f"{_MARK[r.status]} {r.name:<{width}}  {_what(r)}")
    same = len(d.layers) - len(shown)
    lines.append(
        f"  ({same} layer{'s' if same != 1 else ''} unchanged)" if shown else "  no layer changed"
    )
    for s in d.settings:
        lines.append(f"~ {s['what']}: {s['a']} -> {s['b']}")
    lines.append("totals:")
    for key, t in d.totals.items():
        lines.append(f"  {key:<14}{_delta(t)}")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(d: ModelDiff) -> str:
    lines = [f"**{_cell(d.a)}** → **{_cell(d.b)}**", ""]
    shown = [r for r in d.layers if r.status != "same"]
    if shown:
        lines += ["| | layer | change |", "|---|---|---|"]
        for r in shown:
            lines.append(f"| {_MARK[r.status]} | `{_cell(r.name)}` | {_cell(_what(r))} |")
        lines.append("")
    lines.append(f"{len(d.layers) - len(shown)} layers unchanged.")
    if d.settings:
        lines += ["", "| setting | before | after |", "|---|---|---|"]
        lines += [
            f"| `{_cell(s['what'])}` | {_cell(s['a'])} | {_cell(s['b'])} |" for s in d.settings
        ]
    lines += ["", "| total | before | after | delta |", "|---|---:|---:|---:|"]
    for key, t in d.totals.items():
        delta = "" if t["delta"] is None else f"{t['delta']:+,}"
        lines.append(f"| {key} | {_cell(_num(t['a']))} | {_cell(_num(t['b']))} | {delta} |")
    return "\n".join(lines)


def render_json(d: ModelDiff) -> str:
    return json.dumps(d.to_dict(), indent=2)
