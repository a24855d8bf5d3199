"""Python source as both backends write it: one Jinja environment, one escaping rule for text
that comes from a spec, one line width, and statements laid out as `ruff format` lays them out.

Generated files must pass `ruff check` and `ruff format --check` without cnnspec running ruff
(it is not a run-time dependency), so the layout is done here, on a small tree of the
expression (`Group` for anything in brackets, `Op` for operators), following the formatter's
rules for the shapes the backends produce:
- a statement that fits in WIDTH columns stays on one line;
- otherwise it is split at its last bracket pair whose opening line fits ("right-hand split"):
  `x = f(` / the contents, one line if they fit, else one item a line with a trailing comma /
  `)` and whatever follows the bracket;
- an operator chain or a bare tuple that cannot be split so is wrapped in parentheses, one
  operand (or item) a line;
- a trailing comment that would make the line too long goes on a line of its own above it.
Tests run ruff over every spec's generated source to hold this to the formatter's rules.

Text from a spec (file and model names) is untrusted: it reaches generated source only through
`string` (a Python literal) or `text` (inside a docstring or comment), never pasted.
"""

from __future__ import annotations

import functools
import keyword
import re
import textwrap
from dataclasses import dataclass

WIDTH = 100
INDENT = "    "


@dataclass(frozen=True)
class Group:
    """`prefix` + open + items separated by ", " + close: a call (prefix the callee), a
    subscript, a list or tuple (prefix None). `bare`: a tuple written without brackets
    (`return a, b`), which gains parentheses only where it is split."""

    prefix: object
    open: str
    items: tuple
    close: str
    single: bool = False  # a one-item tuple: `(x,)`
    bare: bool = False


@dataclass(frozen=True)
class Op:
    """Operands joined by a binary operator, left to right."""

    op: str
    operands: tuple


@dataclass(frozen=True)
class Cat:
    """Pieces written one after another (`k=` and a value, `obj` and `.name`)."""

    parts: tuple


def call(fn, *args) -> Group:
    return Group(fn, "(", tuple(args), ")")


def kwarg(name: str, value) -> Cat:
    return Cat((f"{name}=", value))


def tuple_of(items) -> Group:
    items = tuple(items)
    return Group(None, "(", items, ")", single=len(items) == 1)


def flat(doc) -> str:
    """The expression on one line."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Cat):
        return "".join(flat(p) for p in doc.parts)
    if isinstance(doc, Op):
        return f" {doc.op} ".join(flat(o) for o in doc.operands)
    inner = ", ".join(flat(i) for i in doc.items) + ("," if doc.single else "")
    if doc.bare:
        return inner
    return (flat(doc.prefix) if doc.prefix is not None else "") + doc.open + inner + doc.close


def _trailers(doc) -> list[Group]:
    """The bracket pairs that end the expression, last first: where a right-hand split may
    fall (`f(a)(b)`: the `(b)`, then the `(a)`)."""
    if isinstance(doc, Group) and not doc.bare:
        return [doc, *(_trailers(doc.prefix) if doc.prefix is not None else [])]
    if isinstance(doc, Cat):
        for part in reversed(doc.parts):
            if not isinstance(part, str):
                return _trailers(part)
            if part:
                return []
    return []


def _around(doc, target: Group) -> str:
    """The flat text before target's items, its opening bracket included."""
    mark = "\x00"

    def text(d) -> str:
        if isinstance(d, str):
            return d
        if isinstance(d, Cat):
            return "".join(text(p) for p in d.parts)
        if isinstance(d, Op):
            return f" {d.op} ".join(text(o) for o in d.operands)
        if d is target:
            inner = mark
        else:
            inner = ", ".join(text(i) for i in d.items) + ("," if d.single else "")
        if d.bare and d is not target:
            return inner
        return (text(d.prefix) if d.prefix is not None else "") + d.open + inner + d.close

    return text(doc).split(mark)[0]


def _after(doc, target: Group):
    """What follows target's items: its closing bracket and the trailers after it
    (`)(x)` for the `(...)` of `f(...)(x)`)."""
    if doc is target:
        return target.close
    if isinstance(doc, Op):
        return _after(doc.operands[-1], target)
    if isinstance(doc, Cat):
        for k in range(len(doc.parts) - 1, -1, -1):
            if not isinstance(doc.parts[k], str):
                return Cat((_after(doc.parts[k], target), *doc.parts[k + 1 :]))
    return Group(_after(doc.prefix, target), doc.open, doc.items, doc.close, doc.single)


def lines(head: str, doc, depth: int, tail: str = "") -> list[str]:
    """`head` + doc + `tail` at `depth` indents, split as the formatter splits it."""
    pad = INDENT * depth
    one = pad + head + flat(doc) + tail
    if len(one) <= WIDTH:
        return [one]
    candidates = _trailers(doc.operands[-1]) if isinstance(doc, Op) else _trailers(doc)
    if isinstance(doc, Op) and not any(
        _trailers(o) or isinstance(o, Group) for o in doc.operands[:-1]
    ):
        candidates = []  # the formatter keeps an operator chain's brackets only after others
    for group in candidates:
        before = _around(doc, group)
        if len(pad + head + before) <= WIDTH:
            # what follows the closing bracket (`)(x)`) is laid out in turn
            rest = lines("", _after(doc, group), depth, tail)
            return [pad + head + before, *_body(group, depth + 1), *rest]
    if isinstance(doc, Op) or (isinstance(doc, Group) and doc.bare):
        wrapped = doc if isinstance(doc, Op) else Group(None, "(", doc.items, ")")
        return [pad + head + "(", *_body(wrapped, depth + 1), pad + ")" + tail]
    return [one]  # nothing to split at: the formatter leaves it long too


def _body(group, depth: int) -> list[str]:
    """The contents of a split bracket pair (or the operands of a parenthesised chain)."""
    pad = INDENT * depth
    if isinstance(group, Op):
        out = lines("", group.operands[0], depth)
        for operand in group.operands[1:]:
            out += lines(f"{group.op} ", operand, depth)
        return out
    one = pad + ", ".join(flat(i) for i in group.items) + ("," if group.single else "")
    if len(one) <= WIDTH:
        return [one]
    if len(group.items) == 1 and not group.single:
        item = group.items[0]
        if isinstance(item, Op):
            return _body(item, depth)
        return lines("", item, depth)
    out = []
    for item in group.items:
        out += lines("", item, depth, ",")
    return out


def statement(head: str, doc, depth: int, comment: str | None = None) -> list[str]:
    """A statement `head` + doc (head as `x = `, `return `, `del `), with an optional
    trailing comment: kept on the line where the whole fits, else on its own line above."""
    code = lines(head, doc, depth)
    if comment is None:
        return code
    if len(code) == 1 and len(code[0]) + 4 + len(comment) <= WIDTH:
        return [f"{code[0]}  # {comment}"]
    return [f"{INDENT * depth}# {comment}", *code]


# --- Names from the spec ----------------------------------------------------------------------


def identifier(text: str, taken: set[str] | frozenset = frozenset()) -> str:
    """A safe Python identifier for `text`: invalid characters become '_', keywords, dunders,
    and names in `taken` get a trailing '_' (never interpolated as anything but a name)."""
    name = re.sub(r"\W", "_", text, flags=re.ASCII) or "_"
    if name[0].isdigit():
        name = f"n{name}"
    if name.startswith("_"):
        name = f"n{name}"
    while keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in taken:
        name += "_"
    return name


# --- Text from the spec ----------------------------------------------------------------------


def string(value: str) -> str:
    """A Python string literal for `value`, quoted as the formatter quotes it (double quotes
    unless the text holds more of them than of single quotes); printable ASCII only, every
    other character escaped, so that no text can end the literal or the line."""
    quote = "'" if value.count('"') > value.count("'") else '"'
    body = "".join(_escape(c, quote) for c in value)
    return quote + body + quote


def text(value: str) -> str:
    """`value` for a docstring or a comment: printable ASCII, with double quotes, backslashes
    and every other character escaped (`\\x22`, `\\\\`, `\\n`...), so the text cannot end the
    docstring, start a line of code, or hold an escape that does not parse (`\\N{x}`). Read
    back as the docstring's value, the escapes give the original text."""
    return "".join(_escape(c, '"').replace('\\"', "\\x22") for c in value)


def docstring(value: str, depth: int) -> str:
    """`value` as the text of a one-paragraph docstring at `depth` indents: escaped as `text`,
    wrapped within the line width (the first line after its three quotes)."""
    pad = INDENT * depth
    first = pad + " " * 3
    return textwrap.fill(
        text(value),
        WIDTH - 3,
        initial_indent=first,
        subsequent_indent=pad,
        break_long_words=False,
        break_on_hyphens=False,
    )[len(first) :]


def _escape(c: str, quote: str) -> str:
    if c == "\\":
        return "\\\\"
    if c == quote:
        return "\\" + c
    if c.isascii() and c.isprintable():
        return c
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if c in named:
        return named[c]
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


@functools.cache
def environment():
    """The one Jinja environment for generated source: templates/ as the loader, undefined
    variables an error, no HTML escaping (this is Python: spec text goes through the `string`
    and `text` filters instead)."""
    import jinja2

    from ..resources import path

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["string"] = string
    env.filters["text"] = text
    env.globals["WIDTH"] = WIDTH
    return env


def render(template: str, **variables) -> str:
    return environment().get_template(template).render(**variables)
