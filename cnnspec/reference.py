"""The layer reference, read from the registry: every kind, how it is written, its arguments
with their types and defaults (from the kind's JSON Schema, so from the same declaration that
validates it), and its formulas, shown on a worked example through the kind's own `explain` rule.

`cnnspec kinds [KIND]` prints it; the README's table of kinds is `markdown_table()`, rebuilt by
`make docs` and held to the registry by tests/test_reference.py. A new kind needs an entry in
EXAMPLES (the test says so).
"""

from __future__ import annotations

from dataclasses import dataclass

from .layers import REGISTRY, Layer, fmt_int, fmt_shape

# One worked example per kind: the input shape and the spec lines, the last line the kind's.
EXAMPLES: dict[str, tuple[str, str]] = {
    "input": ("224x224x3", "identity"),
    "conv": ("32x32x3", "conv 64 3x3 stride=2 same relu"),
    "dwconv": ("32x32x16", "dwconv 3x3 stride=2 same"),
    "sepconv": ("32x32x16", "sepconv 32 3x3 same relu"),
    "deconv": ("16x16x64", "deconv 32 2x2 stride=2"),
    "dense": ("512", "dense 10 softmax"),
    "flatten": ("7x7x512", "flatten"),
    "reshape": ("12544", "reshape 7x7x256"),
    "dropout": ("4096", "dropout 0.5"),
    "activation": ("16x16x32", "leaky_relu 0.2"),
    "identity": ("16x16x32", "skip = identity"),
    "rescale": ("32x32x3", "rescale 1/255"),
    # written on the input line: the example's "shape" carries the arguments
    "preprocess": ("28x28x1 scale=1/255 mean=0.1307 std=0.3081", ""),
    "zeropad": ("32x32x3", "zeropad 1"),
    "upsample": ("16x16x32", "upsample 2 bilinear"),
    "merge": ("16x16x32", "skip = identity\nconv 32 3x3 same\nadd skip"),
    "detect": (
        "32x32x3",
        (
            "p3 = conv 16 3x3 stride=2 same\np4 = conv 16 3x3 stride=2 same\n"
            "detect p3 p4 classes=3 strides=(2, 4) sizes=(8, 16) ratios=(0.5, 1.0, 2.0) tower=1"
        ),
    ),
    "bn": ("16x16x32", "bn"),
    "lrn": ("27x27x96", "lrn size=5 alpha=1e-4 beta=0.75 k=2"),
    "pool": ("32x32x64", "maxpool 3 stride=2 same"),
    "global_pool": ("7x7x512", "gap"),
    "adaptive_pool": ("13x13x256", "adaptive_avgpool 6x6"),
    "layernorm": ("56x56x96", "layernorm eps=1e-6"),
    "groupnorm": ("28x28x64", "groupnorm 32"),
    "layerscale": ("56x56x96", "layerscale 1e-6"),
    "normalize": (
        "224x224x3",
        ("normalize mean=(0.485, 0.456, 0.406) variance=(0.052, 0.050, 0.051)"),
    ),
    "stochastic_depth": ("56x56x96", "stochastic_depth 0.1"),
    "channel_shuffle": ("28x28x116", "shuffle 2"),
    "split": ("28x28x116", "left = split 2 0"),
    "crop": ("84x84x3", "crop (1, 0, 1, 0)"),
}


@dataclass
class Argument:
    name: str
    type: str
    default: str | None  # None: required
    positional: int | None  # its place among the bare numbers, if it takes one


@dataclass
class KindReference:
    kind: str
    keywords: list[str]
    usage: str
    summary: str
    arguments: list[Argument]
    flags: dict[str, str]
    example: str | None
    example_lines: list[str]


def _type(prop: dict) -> str:
    """A JSON Schema property in words: `int >= 1`, `FxF (int >= 1)`, `same | valid | PxP`."""
    if "anyOf" in prop:
        parts = [_type(p) for p in prop["anyOf"] if p.get("type") != "null"]
        nullable = any(p.get("type") == "null" for p in prop["anyOf"])
        return " | ".join(parts) + (" | none" if nullable else "")
    if "enum" in prop:
        return " | ".join(str(v) for v in prop["enum"])
    kind = prop.get("type")
    if kind == "array":
        items = prop.get("prefixItems")
        if items:
            inner = _type(items[0])
            sizes = {2: "FxF", 4: "(top, bottom, left, right)"}
            # a field may name its own parts: detect's box_weights are (x, y, w, h)
            named = prop.get("description") or sizes.get(len(items), f"{len(items)} values")
            return f"{named} of {inner}"
        return f"list of {_type(prop.get('items', {}))}"
    words = {"integer": "int", "number": "float", "boolean": "bool", "string": "text"}
    text = words.get(kind, kind or "value")
    if "minimum" in prop:
        text += f" >= {prop['minimum']}"
    if "exclusiveMinimum" in prop:
        text += f" > {prop['exclusiveMinimum']}"
    if "maximum" in prop:
        text += f" <= {prop['maximum']}"
    if "exclusiveMaximum" in prop:
        text += f" < {prop['exclusiveMaximum']}"
    return text


def _value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if (
        isinstance(value, (list, tuple))
        and len(value) > 1
        and any(isinstance(v, float) for v in value)
    ):
        return "(" + ", ".join(_value(v) for v in value) + ")"  # only integers make a size
    if isinstance(value, (list, tuple)):
        return "x".join(_value(v) for v in value)
    return str(value)


def _summary(cls: type[Layer]) -> str:
    doc = (cls.__doc__ or "").strip()
    if not doc or doc.startswith("Base of every layer"):
        return ""
    return " ".join(doc.split("\n\n")[0].split())


def _example(kind: str) -> tuple[str | None, list[str]]:
    """The example's text and its arithmetic (the kind's explain rule on the example)."""
    from .compiler import compile_text

    if kind not in EXAMPLES:
        return None, []
    shape, lines = EXAMPLES[kind]
    model = compile_text(f"input {shape}\n{lines}\n")
    node = model.nodes[{"input": 0, "preprocess": 1}.get(kind, -1)]
    shapes = [model.node(i).shape for i in node.inputs]
    text = "; ".join([f"input {shape}", *lines.splitlines()])
    out = [f"-> {fmt_shape(node.shape)}, params {fmt_int(node.params)}, MACs {fmt_int(node.macs)}"]
    if kind != "input":
        out += node.layer.explain(shapes, node.shape)
    return text, out


def reference(kind: str) -> KindReference:
    """The reference entry of one registry kind (KeyError for an unknown kind)."""
    cls = REGISTRY[kind]
    schema = cls.model_json_schema()
    required = set(schema.get("required", ()))
    args = []
    for name, prop in schema["properties"].items():
        if name == "kind":
            continue
        default = None if name in required else _value(prop.get("default"))
        place = cls.positional.index(name) + 1 if name in cls.positional else None
        args.append(Argument(name, _type(prop), default, place))
    flags = {
        word: ", ".join(f"{k}={_value(v)}" for k, v in preset.items())
        for word, preset in cls.flags.items()
    }
    keywords = [] if cls.internal else list(cls.keywords or {kind: {}})
    usage = cls.kind_doc or ("input HxWxC | input N" if kind == "input" else kind)
    example, lines = _example(kind)
    return KindReference(kind, keywords, usage, _summary(cls), args, flags, example, lines)


def kinds() -> list[str]:
    return list(REGISTRY)


def render_entry(ref: KindReference) -> str:
    out = [f"{ref.kind}: {ref.usage}"]
    if ref.summary:
        out.append(f"  {ref.summary}")
    if ref.keywords:
        out.append(f"  written as: {', '.join(ref.keywords)}")
    else:
        out.append("  written as: the `input` statement")
    if ref.arguments:
        out.append("  arguments:")
        width = max(len(a.name) for a in ref.arguments)
        for a in ref.arguments:
            default = "required" if a.default is None else f"default {a.default}"
            place = f", bare value #{a.positional}" if a.positional else ""
            out.append(f"    {a.name:<{width}}  {a.type}  ({default}{place})")
    if ref.flags:
        out.append("  flags: " + "; ".join(f"{w} ({v})" for w, v in ref.flags.items()))
    if ref.example:
        out.append(f"  example: {ref.example}")
        out += [f"    {line}" for line in ref.example_lines]
    return "\n".join(out)


def render_list() -> str:
    refs = [reference(k) for k in kinds()]
    width = max(len(r.kind) for r in refs)
    lines = [f"{r.kind:<{width}}  {r.usage}" for r in refs]
    lines.append("")
    lines.append("`cnnspec kinds KIND` shows a kind's arguments, defaults and formulas.")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table() -> str:
    """The README's table of kinds (between the `kinds:begin` and `kinds:end` markers)."""
    rows = ["| kind | written as | arguments (default) | flags |", "|---|---|---|---|"]
    for kind in kinds():
        ref = reference(kind)
        words = ", ".join(f"`{w}`" for w in ref.keywords) or "`input`"
        args = ", ".join(
            f"{a.name}" + ("" if a.default is None else f"={a.default}") for a in ref.arguments
        )
        flags = ", ".join(f"`{w}`" for w in ref.flags)
        rows.append(f"| {kind} | {words} | {_cell(args)} | {flags} |")
    return "\n".join(rows)


README_BEGIN = "<!-- kinds:begin (generated by `make docs` from the layer registry) -->"
README_END = "<!-- kinds:end -->"


def readme_with_table(readme: str) -> str:
    """The README text with its table of kinds replaced by the registry's."""
    head, sep, rest = readme.partition(README_BEGIN)
    if not sep or README_END not in rest:
        raise ValueError(f"README.md lacks the markers {README_BEGIN!r} ... {README_END!r}")
    _, _, tail = rest.partition(README_END)
    return f"{head}{README_BEGIN}\n{markdown_table()}\n{README_END}{tail}"


if __name__ == "__main__":  # make docs
    import sys
    from pathlib import Path

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(readme_with_table(path.read_text()))
