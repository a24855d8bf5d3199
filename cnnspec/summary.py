"""Per-layer tables and totals, as text, markdown or JSON; with --explain, the arithmetic."""

from __future__ import annotations

import json

from .ir import Model
from .layers import fmt_int, fmt_shape

BYTES_PER_VALUE = 4  # float32


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"


def activation_values(model: Model) -> int:
    """Values held by all layer outputs for one sample (an upper bound on what inference keeps)."""
    total = 0
    for node in model.nodes:
        n = 1
        for d in node.shape:
            n *= d
        total += n
    return total


def memory_bytes(model: Model) -> int:
    """Parameters plus the batch-1 activations of every layer, in float32 bytes: what holding
    the network and running one sample needs at most (`cnnspec check --max-memory`)."""
    return (model.params + activation_values(model)) * BYTES_PER_VALUE


def parse_bytes(text: str) -> int:
    """'4GiB', '500MB', '1e9' -> bytes (KiB/MiB/GiB powers of 1024, kB/MB/GB of 1000).

    >>> parse_bytes("4GiB"), parse_bytes("1.5 MB"), parse_bytes("1024")
    (4294967296, 1500000, 1024)
    """
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([KMGT]i?B?|[kK]B|B)?\s*", text)
    if not m:
        raise ValueError(f"not a size: {text!r} (write e.g. 4GiB, 500MB or 1e9)")
    number, unit = float(m.group(1)), (m.group(2) or "B").upper().rstrip("B") or "B"
    powers = {
        "B": 1,
        "K": 1000,
        "M": 1000**2,
        "G": 1000**3,
        "T": 1000**4,
        "KI": 1024,
        "MI": 1024**2,
        "GI": 1024**3,
        "TI": 1024**4,
    }
    return int(number * powers[unit])


def human_bytes(n: int) -> str:
    return _human_bytes(n)


def to_dict(model: Model) -> dict:
    def hwc(shape):
        if len(shape) == 3:
            return {"height": shape[0], "width": shape[1], "channels": shape[2]}
        return {"features": shape[0]}

    outputs = model.output_shapes
    return {
        "name": model.name,
        "scale": model.scale,
        "input_shape": hwc(model.input_shape),
        "output_shape": hwc(outputs[0]),
        "output_shapes": {name: list(s) for name, s in zip(model.outputs, outputs)},
        **model.totals(),
        "param_bytes": model.params * BYTES_PER_VALUE,
        "activation_bytes": activation_values(model) * BYTES_PER_VALUE,
        "memory_bytes": memory_bytes(model),
        "mac_definition": "multiply-accumulates per sample of conv and dense weights; "
        "bias additions, pooling and normalisation not counted",
        "layers": [
            {
                "name": n.name,
                "kind": n.kind,
                "output_shape": list(n.shape),
                "params": n.params,
                "trainable": n.trainable,
                "non_trainable": n.non_trainable,
                "macs": n.macs,
                "frozen": n.frozen,
                "inputs": n.inputs,
                "args": n.layer.model_dump(mode="json", exclude={"kind"}),
                **(
                    {"explain": n.layer.explain([model.node(i).shape for i in n.inputs], n.shape)}
                    if n.inputs
                    else {}
                ),
            }
            for n in model.nodes
        ],
    }


def _rows(model: Model, explain: bool):
    for n in model.nodes:
        shapes = [model.node(i).shape for i in n.inputs]
        kind = (
            n.kind
            if n.kind not in ("activation", "merge", "pool", "global_pool")
            else {
                "activation": getattr(n.layer, "fn", ""),
                "merge": getattr(n.layer, "op", ""),
                "pool": f"{getattr(n.layer, 'op', '')}pool",
                "global_pool": f"global_{getattr(n.layer, 'op', '')}pool",
            }[n.kind]
        )
        act = getattr(n.layer, "activation", None)
        if act:
            kind += f"+{act}"
        if n.frozen:
            kind += " (frozen)"
        lines = n.layer.explain(shapes, n.shape) if explain and n.inputs else []
        yield n.name, kind, fmt_shape(n.shape), n.params, n.macs, lines


def render_table(model: Model, explain: bool = False, markdown: bool = False) -> str:
    rows = list(_rows(model, explain))
    head = ("layer", "kind", "output", "params", "MACs")
    if markdown:
        out = [f"## {_title(model)}", "", "| " + " | ".join(head) + " |", "|---|---|---|---:|---:|"]
        for name, kind, shape, params, macs, lines in rows:
            out.append(f"| {name} | {kind} | {shape} | {fmt_int(params)} | {fmt_int(macs)} |")
            for line in lines:
                out.append(f"| | | | | `{line}` |")
        out.append("")
        out.extend(f"- {line}" for line in _totals(model))
        return "\n".join(out)
    widths = [
        max(len(head[0]), *(len(r[0]) for r in rows)),
        max(len(head[1]), *(len(r[1]) for r in rows)),
        max(len(head[2]), *(len(r[2]) for r in rows)),
        max(len(head[3]), *(len(fmt_int(r[3])) for r in rows)),
        max(len(head[4]), *(len(fmt_int(r[4])) for r in rows)),
    ]
    rule = "-" * (sum(widths) + 8)

    def line(cells):
        return (
            f"{cells[0]:<{widths[0]}}  {cells[1]:<{widths[1]}}  {cells[2]:<{widths[2]}}  "
            f"{cells[3]:>{widths[3]}}  {cells[4]:>{widths[4]}}"
        ).rstrip()

    out = [_title(model), rule, line(head), rule]
    for name, kind, shape, params, macs, lines in rows:
        out.append(line((name, kind, shape, fmt_int(params), fmt_int(macs))))
        out.extend(" " * 4 + text for text in lines)
    out.append(rule)
    out.extend(_totals(model))
    return "\n".join(out)


def _title(model: Model) -> str:
    """The model's name, and the scale it was compiled at (`--scale b3`): one spec gives
    several networks, and the header says which one the table is."""
    return f"{model.name} (scale {model.scale})" if model.scale else model.name


def _totals(model: Model) -> list[str]:
    outs = ", ".join(
        f"{name} {fmt_shape(s)}" if len(model.outputs) > 1 else fmt_shape(s)
        for name, s in zip(model.outputs, model.output_shapes)
    )
    return [
        f"input: {fmt_shape(model.input_shape)}   output: {outs}",
        *_preprocess_line(model),
        f"total params: {fmt_int(model.params)}",
        f"trainable params: {fmt_int(model.trainable)}",
        f"non-trainable params: {fmt_int(model.non_trainable)}",
        *_frozen_line(model),
        (
            f"MACs: {fmt_int(model.macs)} per sample (conv and dense multiply-accumulates; "
            "bias adds not counted)"
        ),
        f"parameter memory: {_human_bytes(model.params * BYTES_PER_VALUE)} (float32)",
        (
            f"activation memory: {_human_bytes(activation_values(model) * BYTES_PER_VALUE)} "
            "(batch 1, all layer outputs, float32)"
        ),
        (
            f"total memory: {_human_bytes(memory_bytes(model))} (parameters + batch-1 "
            "activations, float32; what check --max-memory compares)"
        ),
    ]


def _preprocess_line(model: Model) -> list[str]:
    from .layers.preprocess import describe, preprocessing

    declared = preprocessing(model)
    return [f"preprocess: {describe(declared)}"] if declared is not None else []


def _frozen_line(model: Model) -> list[str]:
    frozen = sum(n.frozen for n in model.nodes)
    if not frozen:
        return []
    return [
        (
            f"frozen layers: {frozen} (transfer: freeze {model.transfer.freeze.mode}; their "
            "parameters count as non-trainable)"
        )
    ]


def render_json(model: Model) -> str:
    return json.dumps(to_dict(model), indent=2)
