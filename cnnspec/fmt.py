"""The canonical layout of a .cnn source: `cnnspec fmt`.

It formats the source, not the expanded IR: blocks, repeats, residuals, parallels, ifs and
sections stay as written, and comments stay where they were. The layout:

- one statement per line, 2 spaces of indent per brace level, `name = layer args`,
  `key=value` without spaces, arithmetic without spaces (`planes*4`), comparisons and
  `and`/`or`/`not` with spaces, tuples as `(a, b)`, integer tuples as sizes (`(3, 3)` -> `3x3`);
- one exception, so that idioms like `dense 4096 relu; dropout 0.5` survive: statements without
  a body that the source puts on one line stay joined by `; ` when the joined line fits in
  100 columns; a `{ ... }` body that the source writes on one line stays inline (`repeat n
  { conv f 3x3 same }`) when it holds only such statements and fits. Everything else is
  split, one statement per line. Nothing is ever joined that the source wrote on several lines,
  so the rule is stable: formatting twice changes nothing;
- blank lines between statements are kept, runs of them collapse to one, none after `{` or
  before `}`; line continuations (`\\`) are joined; long lines are not wrapped;
- a comment on a line of its own stays on its own line, indented like the code after it; a
  comment after code stays after the line that holds that code. Between a `}` and its `else`
  there is no line of their own: `} # why` ends the `} else {` line, and a comment line before
  `else` opens the else body.

Before returning, the result is parsed again and compared with the original syntax tree and
comments, so a formatter bug can never change what a spec means nor drop a comment: it is a
located error (E108) and nothing is written.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from functools import cache

from .errors import Span, SpecError
from .parse import MAX_SOURCE_BYTES, Token, Tree, parse_text
from .values import span_of

INDENT = "  "
MAX_WIDTH = 100

# Binding strength of each expression kind (higher binds tighter), as in the grammar.
_PREC = {"or_": 1, "and_": 2, "not_": 3, "compare": 4, "neg": 7}
_ADD_OPS = {"+", "-"}


def parse_with_comments(text: str) -> tuple[Tree, list[Token]]:
    """The syntax tree and the comment tokens in source order; a SpecError on bad syntax."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise SpecError("E104", "the spec is too large to format", Span(1, 1))
    tree = parse_text(text)
    return tree, comments_in(text)


# A string first, so that a '#' inside one is not a comment: the grammar's STRING and COMMENT.
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*')


def comments_in(text: str) -> list[Token]:
    """Every comment of a spec that parses, in source order, read from the text itself.

    Not from the lexer's ignored tokens: the grammar's `_ELSE` terminal takes the comments between
    a `}` and its `else` with it, and those were lost (issue 14). In a spec that parses, a '"'
    only ever opens a string, so strings and comments cannot be mistaken for each other here."""
    out, line, line_start, pos = [], 1, 0, 0
    for m in _STRING_OR_COMMENT.finditer(text):
        if m.group().startswith('"'):
            continue
        line += text.count("\n", pos, m.start())
        line_start = text.rfind("\n", 0, m.start()) + 1
        pos = m.start()
        column = m.start() - line_start + 1
        out.append(
            Token(
                "COMMENT",
                m.group(),
                m.start(),
                line,
                column,
                line,
                column + len(m.group()),
                m.end(),
            )
        )
    return out


# --- expressions -------------------------------------------------------------------------------


def _prec(tree) -> int:
    if isinstance(tree, Tree):
        if tree.data == "binop":
            return 5 if str(tree.children[1]) in _ADD_OPS else 6
        return _PREC.get(tree.data, 8)
    return 8


def _int_tuple(tree) -> bool:
    return (
        tree.data == "tuple"
        and len(tree.children) >= 2
        and all(isinstance(c, Tree) and c.data == "int" for c in tree.children)
    )


def expr(tree, floor: int = 0, tight: bool = True) -> str:
    """An expression, parenthesised where its binding is weaker than `floor` requires.

    `tight` writes arithmetic without spaces, as inside argument lists where a space separates
    arguments (`conv planes*4 1x1`); `repeat n - 1` and `if` conditions are spaced.
    """
    try:
        return _sub(tree, floor, tight)
    except RecursionError:
        # `1 + 1 + ... + 1` nests as deep as it is long; the compiler refuses it too (E106).
        raise SpecError(
            "E106",
            "the expression is too long to format",
            span_of(tree),
            hint="compute the value in fewer steps",
        ) from None


def _sub(tree, floor: int, tight: bool) -> str:
    text = _expr(tree, tight)
    return f"({text})" if _prec(tree) < floor else text


def _expr(tree, tight: bool) -> str:
    kind = tree.data
    ch = tree.children
    if kind in ("int", "float", "dims", "string", "ref", "name"):
        return str(ch[0])
    if kind == "tuple":
        if _int_tuple(tree):  # evaluates exactly like a size: (3, 3) == 3x3
            return "x".join(str(c.children[0]) for c in ch)
        return "(" + ", ".join(_sub(c, 0, tight) for c in ch) + ")"
    if kind == "call":  # round_filters(32): the bracket right after the name
        return (
            str(ch[0]) + "(" + ", ".join(_sub(c, 0, tight) for c in ch[1:] if c is not None) + ")"
        )
    if kind == "neg":
        return "-" + _sub(ch[0], 7, tight)
    if kind == "not_":
        return "not " + _sub(ch[0], 3, tight)
    if kind in ("or_", "and_"):
        level = _PREC[kind]
        word = " or " if kind == "or_" else " and "
        return word.join([_sub(ch[0], level, tight)] + [_sub(c, level + 1, tight) for c in ch[1:]])
    if kind == "compare":
        return f"{_sub(ch[0], 5, tight)} {ch[1]} {_sub(ch[2], 5, tight)}"
    if kind == "binop":
        level = _prec(tree)
        op = str(ch[1]) if tight else f" {ch[1]} "
        return f"{_sub(ch[0], level, tight)}{op}{_sub(ch[2], level + 1, tight)}"
    raise ValueError(f"cannot format expression {kind!r}")


# An argument, a repeat count and a parameter default are a `sum` in the grammar: a comparison
# or a condition there needs its parentheses back (`bias=(n == 1)`).
_SUM = 5


def _arg(tree, lists: frozenset[str] = frozenset()) -> str:
    if tree.data == "kwarg":
        name, value = tree.children
        if str(name) in lists and value.data == "dims":
            return f"{name}=({', '.join(str(value.children[0]).lower().split('x'))})"
        if str(name) in lists and _int_tuple(value):
            return f"{name}=({', '.join(str(c.children[0]) for c in value.children)})"
        return f"{name}={expr(value, _SUM)}"
    text = expr(tree.children[0], _SUM)
    # After another argument, '-1' would read as a subtraction: keep a negative in parentheses.
    return f"({text})" if text.startswith("-") else text


def _args(items, keyword=None) -> str:
    lists = _lists(str(keyword)) if keyword is not None else frozenset()
    return "".join(" " + _arg(a, lists) for a in items)


@cache
def _lists(keyword: str) -> frozenset[str]:
    """The arguments of a layer keyword that hold one number per level or channel (detect's
    strides, normalize's mean): written as tuples, `strides=(16, 32, 64)`, where an integer
    tuple would otherwise read as a size, `16x32x64`. Shapes stay sizes."""
    from .layers.base import KEYWORDS

    if keyword not in KEYWORDS:  # a block of the spec's own
        return frozenset()
    props = KEYWORDS[keyword][0].model_json_schema()["properties"]
    return frozenset(
        name
        for name, prop in props.items()
        if name != "shape"
        and any(
            p.get("type") == "array" and "prefixItems" not in p for p in prop.get("anyOf", [prop])
        )
    )


# --- statements --------------------------------------------------------------------------------


@dataclass
class Line:
    depth: int
    text: str
    start: int  # the first source line it comes from
    end: int  # the last source line it comes from
    opening: bool = False  # ends with '{': no blank line after it
    closing: bool = False  # starts with '}': no blank line before it
    comment: str = ""  # a comment after the code


def _is_tree(node, *names) -> bool:
    return isinstance(node, Tree) and node.data in names


def _simple(stmt) -> bool:
    """A statement without a body: the only kind that may share a line with others."""
    if _is_tree(stmt, "named"):
        return _simple(stmt.children[1])
    if _is_tree(stmt, "model", "input", "output"):
        return True
    return _is_tree(stmt, "layer") and not any(_is_tree(c, "body") for c in stmt.children)


def _simple_text(stmt) -> str:
    ch = stmt.children
    kind = stmt.data
    if kind == "named":
        return f"{ch[0]} = {_simple_text(ch[1])}"
    if kind == "model":
        return f"model {ch[0]}"
    if kind == "input":
        return f"input {ch[0]}{_args(ch[1:])}"
    if kind == "output":
        return "output " + ", ".join(str(c) for c in ch)
    return f"{ch[0]}{_args(ch[1:], ch[0])}"


def _segments(stmt, prefix: str = "") -> list[tuple[str, Tree]] | None:
    """A statement with bodies as (header, body) pairs: `if a` {..} `else` {..}; None for a
    parallel, whose branches are not one body."""
    kind, ch = stmt.data, stmt.children
    if kind == "named":
        return _segments(ch[1], f"{prefix}{ch[0]} = ")
    if kind == "block_def":
        params = ", ".join(
            str(p.children[0]) + (f"={expr(p.children[1], _SUM)}" if len(p.children) > 1 else "")
            for p in ch[1:-1]
        )
        return [(f"{prefix}block {ch[0]}({params})", ch[-1])]
    if kind in ("compile", "transfer", "defaults", "scales"):
        return [(f"{prefix}{kind}", ch[0])]
    if kind == "layer":
        return [(f"{prefix}{ch[0]}{_args(ch[1:-1], ch[0])}", ch[-1])]
    if kind == "repeat":
        var = f" as {ch[1]}" if len(ch) == 3 else ""
        return [(f"{prefix}repeat {expr(ch[0], _SUM, False)}{var}", ch[-1])]
    if kind == "residual":
        bodies = [c for c in ch if _is_tree(c, "body")]
        head = f"{prefix}residual{_args(c for c in ch if not _is_tree(c, 'body'))}"
        return [(head, bodies[0])] + [("shortcut", b) for b in bodies[1:]]
    if kind == "if_stmt":
        return _if_segments(stmt, f"{prefix}if")
    if kind == "parallel":
        return None
    raise ValueError(f"cannot format statement {kind!r}")


def _if_segments(stmt, word: str) -> list:
    cond, then, *other = stmt.children
    segs = [(f"{word} {expr(cond, 0, False)}", then)]
    if other and _is_tree(other[0], "if_stmt"):
        segs += _if_segments(other[0], "else if")
    elif other:
        segs.append(("else", other[0]))
    return segs


def _one_line(stmt) -> str | None:
    """A statement on one line, bodies as `{ a; b }`; None for a parallel inside."""
    if _simple(stmt):
        return _simple_text(stmt)
    segs = _segments(stmt)
    if segs is None:
        return None
    parts = []
    for head, body in segs:
        inner = [_one_line(s) for s in body.children]
        if any(t is None for t in inner):
            return None
        parts.append(f"{head} {{ {'; '.join(inner)} }}" if inner else f"{head} {{}}")
    return " ".join(parts)


class Printer:
    def __init__(self, source: str, comments: list[Token]):
        self.lines: list[Line] = []
        self.source_lines = source.splitlines()
        self.comments = comments
        self.comment_lines = {c.line for c in comments}

    # statements in one body, or at the top
    def stmts(self, items, depth: int) -> None:
        run: list = []
        for stmt in items:
            if run and not (
                _simple(stmt) and self._one_line(stmt) and stmt.meta.line == run[-1].meta.end_line
            ):
                self._run(run, depth)
                run = []
            if _simple(stmt) and self._one_line(stmt):
                run.append(stmt)
            elif _simple(stmt):
                self._emit(depth, _simple_text(stmt), stmt)
            else:
                self.compound(stmt, depth)
        if run:
            self._run(run, depth)

    @staticmethod
    def _one_line(stmt) -> bool:
        return stmt.meta.line == stmt.meta.end_line

    def _run(self, run: list, depth: int) -> None:
        texts = [_simple_text(s) for s in run]
        joined = "; ".join(texts)
        if len(run) > 1 and len(INDENT * depth + joined) <= MAX_WIDTH:
            self._emit(depth, joined, run[0])
        else:
            for stmt, text in zip(run, texts):
                self._emit(depth, text, stmt)

    def _emit(self, depth: int, text: str, node, **kw) -> None:
        self.lines.append(Line(depth, text, node.meta.line, node.meta.end_line, **kw))

    # statements with bodies: a header, then one or more bodies joined by words
    def compound(self, stmt, depth: int) -> None:
        inner = stmt.children[1] if _is_tree(stmt, "named") else stmt
        if _is_tree(inner, "parallel"):
            prefix = f"{stmt.children[0]} = " if inner is not stmt else ""
            return self.parallel(inner, depth, prefix)
        return self.segments(stmt, depth, _segments(stmt))

    def segments(self, stmt, depth: int, segs: list) -> None:
        """`head { ... } word { ... }`: each body inline or expanded on its own."""
        text, start = "", stmt.meta.line
        for i, (head, body) in enumerate(segs):
            text += (" " if text else "") + head
            inline = self._inline(body, depth, text)
            if inline is not None:
                text += " " + inline
                continue
            self.lines.append(
                Line(
                    depth,
                    text + " {",
                    start,
                    body.meta.line,
                    opening=True,
                    closing=text.startswith("}"),
                )
            )
            self.stmts(body.children, depth + 1)
            text, start = "}", body.meta.end_line
        self.lines.append(
            Line(depth, text, start, stmt.meta.end_line, closing=text.startswith("}"))
        )

    def _inline(self, body, depth: int, text: str) -> str | None:
        """The body as `{ a; b }` when the source wrote it on one line and it fits (bodies
        inside it are then on that line too: they stay inline with it)."""
        if not body.children:
            inside = range(body.meta.line + 1, body.meta.end_line)
            return None if any(n in self.comment_lines for n in inside) else "{}"
        if body.meta.line != body.meta.end_line:
            return None
        inner = [_one_line(s) for s in body.children]
        if any(t is None for t in inner):
            return None
        inline = "{ " + "; ".join(inner) + " }"
        return inline if len(INDENT * depth + text + " " + inline) <= MAX_WIDTH else None

    def parallel(self, stmt, depth: int, prefix: str) -> None:
        args = [c for c in stmt.children if not _is_tree(c, "branch")]
        branches = [c for c in stmt.children if _is_tree(c, "branch")]
        self.lines.append(
            Line(
                depth,
                f"{prefix}parallel{_args(args)} {{",
                stmt.meta.line,
                stmt.meta.line,
                opening=True,
            )
        )
        for br in branches:
            name = f" {br.children[0]}" if len(br.children) == 2 else ""
            self.segments(br, depth + 1, [(f"branch{name}", br.children[-1])])
        self.lines.append(Line(depth, "}", stmt.meta.end_line, stmt.meta.end_line, closing=True))

    # comments and blank lines
    def render(self) -> str:
        lines = self._with_comments()
        blank = [0]
        for text in self.source_lines:
            blank.append(blank[-1] + (not text.strip()))
        gap = [
            i > 0
            and not lines[i - 1].opening
            and not line.closing
            and line.start > lines[i - 1].end + 1
            and blank[line.start - 1] - blank[lines[i - 1].end] > 0
            for i, line in enumerate(lines)
        ]
        out: list[str] = []
        for line, column, blank_before in zip(lines, _comment_columns(lines, gap), gap):
            if blank_before:
                out.append("")
            code = INDENT * line.depth + line.text
            out.append(code.ljust(column) + line.comment if line.comment else code.rstrip())
        return "\n".join(out) + "\n" if out else ""

    def _with_comments(self) -> list[Line]:
        lines = list(self.lines)
        trailing: dict[int, list[str]] = {}
        standalone: list[Token] = []
        starts = [ln.start for ln in lines]
        for tok in self.comments:
            src = self.source_lines[tok.line - 1] if tok.line <= len(self.source_lines) else ""
            before = src[: tok.column - 1]
            owner = None
            if before.strip():
                # the last output line whose source lines hold the comment's line
                i = bisect.bisect_right(starts, tok.line) - 1
                while i >= 0 and lines[i].end < tok.line:
                    i -= 1
                owner = i if i >= 0 else None
            if owner is None:
                standalone.append(tok)
            else:
                trailing.setdefault(owner, []).append(str(tok).rstrip())
        for i, texts in trailing.items():
            lines[i].comment = "  ".join(texts)
        for tok in reversed(standalone):
            at = bisect.bisect_right(starts, tok.line)
            if at < len(lines):
                nxt = lines[at]
                depth = nxt.depth + 1 if nxt.closing else nxt.depth
            else:
                depth = 0
            lines.insert(at, Line(depth, str(tok).rstrip(), tok.line, tok.line))
            starts.insert(at, tok.line)
        return lines


def _comment_columns(lines: list[Line], gap: list[bool]) -> list[int]:
    """Where each trailing comment starts: consecutive lines with comments (no blank line
    between) align them, as gofmt does, two spaces after the longest code of the run."""
    columns = [0] * len(lines)
    i = 0
    while i < len(lines):
        if not lines[i].comment:
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].comment and (j == i or not gap[j]):
            j += 1
        column = max(len(INDENT * ln.depth + ln.text) for ln in lines[i:j]) + 2
        columns[i:j] = [column] * (j - i)
        i = j
    return columns


def format_text(text: str) -> str:
    """The canonical layout of a spec; raises SpecError when the text does not parse."""
    tree, comments = parse_with_comments(text)
    printer = Printer(text, comments)
    printer.stmts(tree.children, 0)
    result = printer.render()
    _check_same(tree, comments, result)
    return result


# --- the safety net: the result must mean what the source meant --------------------------------


def _shape(node):
    """The syntax tree without positions, with integer tuples read as sizes."""
    if isinstance(node, Token):
        return (node.type, str(node))
    if _int_tuple(node):
        return ("dims", "x".join(str(c.children[0]) for c in node.children))
    if node.data == "dims":
        return ("dims", str(node.children[0]))
    return (node.data, tuple(_shape(c) for c in node.children))


def _words(comments: list[Token]) -> list[str]:
    return [w for c in comments for w in str(c).split()]


def _check_same(tree: Tree, comments: list[Token], result: str) -> None:
    """A formatter bug is refused as a located error and nothing is written: the result must
    parse to the same tree and hold every comment, word for word."""
    try:
        new_tree, new_comments = parse_with_comments(result)
    except SpecError as err:
        raise SpecError(
            "E108",
            "cnnspec fmt would write text that does not parse "
            f"({err.message}); the file is left as it was",
            Span(1, 1),
            hint="please report this with the spec",
        ) from None
    if _shape(new_tree) != _shape(tree):
        raise SpecError(
            "E108",
            "cnnspec fmt would change the meaning of the spec; the file is left as it was",
            Span(1, 1),
            hint="please report this with the spec",
        )
    # Two comments that end up on one line read back as one: compare their words.
    kept = _words(new_comments)
    if _words(comments) != kept:
        lost = next(
            (c for c in comments if not set(str(c).split()) <= set(kept)),
            comments[0] if comments else None,
        )
        span = Span(lost.line, lost.column, lost.end_line, lost.end_column) if lost else Span(1, 1)
        raise SpecError(
            "E108",
            "cnnspec fmt would lose or move this comment; the file is left as it was",
            span,
            hint="please report this with the spec; moving the "
            "comment to a line of its own avoids it",
        )
