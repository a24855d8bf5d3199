"""Text -> syntax tree, with syntax errors turned into located SpecErrors.

The grammar is grammar/cnnspec.lark; lark builds its LALR tables (`write_tables`, stored as
JSON beside the grammar) and cnnspec.lalr runs them, so that a start does not import lark."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

from . import resources
from .errors import Span, SpecError
from .lalr import (
    FORMAT,
    Parser,
    Token,
    Tree,
    UnexpectedCharacters,
    UnexpectedInput,
    UnexpectedToken,
    build_tables,
)

MAX_SOURCE_BYTES = 8 * 1024 * 1024
MAX_NESTING = 100      # braces and parentheses; deeper nesting would exhaust Python's stack
_BRACKETS = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[{}()]')

# What each terminal is called in an error message.
_TERMINAL_WORDS = {
    "NAME": "a name", "INT": "a whole number", "FLOAT": "a number", "DIMS": "a size like 3x3",
    "STRING": "a quoted string", "REF": "a source like torchvision:resnet18",
    "_NL": "a new line", "_SEMI": "';'", "LBRACE": "'{'", "RBRACE": "'}'", "LPAR": "'('",
    "RPAR": "')'", "COMMA": "','", "EQUAL": "'='", "COMP_OP": "a comparison",
    "ADD_OP": "'+' or '-'", "MUL_OP": "'*' or '/'", "_NEG": "'-'",
    "$END": "the end of the file",
}


def grammar_path() -> Path:
    """The grammar ships inside the package (cnnspec/grammar) or beside it in a checkout."""
    return resources.path("grammar") / "cnnspec.lark"


def tables_path() -> Path:
    """The LALR tables built from the grammar, stored as JSON beside it (see `write_tables`)."""
    return grammar_path().with_suffix(".tables.json")


_OPTIONS = {'parser': "lalr", 'lexer': "contextual", 'propagate_positions': True,
                'maybe_placeholders': False}


def _fingerprint(grammar: str) -> str:
    return hashlib.sha256(f"{FORMAT}\n{_OPTIONS}\n{grammar}".encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def parser() -> Parser:
    """The LALR parser. lark takes ~0.1 s to build its tables, half a `cnnspec summary`, so
    they are built once and stored as JSON data (never a pickle: loading one runs code); a
    stale or missing file (a grammar edit) falls back to building them with lark."""
    grammar = grammar_path().read_text(encoding="utf-8")
    try:
        stored = json.loads(tables_path().read_text(encoding="utf-8"))
        if stored.get("fingerprint") == _fingerprint(grammar):
            return Parser(stored["tables"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return Parser(build_tables(grammar, _OPTIONS))


def write_tables() -> Path:
    """Build the tables from the grammar with lark and store them; run after editing the
    grammar: `python -c "from cnnspec.parse import write_tables; write_tables()"`."""
    grammar = grammar_path().read_text(encoding="utf-8")
    tables = build_tables(grammar, _OPTIONS)
    out = tables_path()
    out.write_text(json.dumps({"fingerprint": _fingerprint(grammar), "tables": tables},
                              separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
    return out


def _describe_expected(expected) -> str:
    words = sorted({_TERMINAL_WORDS.get(t, f"'{t.lower()}'" if t.isupper() else t)
                    for t in expected if not t.startswith("__")})
    if len(words) > 8:
        words = words[:8] + ["..."]
    return ", ".join(words)


def _token_text(token: Token) -> str:
    if token.type == "$END":
        return "the end of the file"
    if token.type == "_NL":
        return "the end of the line"
    return repr(str(token))


def parse_text(text: str, ignored: list | None = None) -> Tree:
    """The syntax tree of `text`; the ignored tokens (comments, blanks) are appended to
    `ignored` if given."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise SpecError("E104", f"the spec is larger than {MAX_SOURCE_BYTES // 2**20} MiB",
                        Span(1, 1), hint="a spec is a few hundred lines; generate blocks instead")
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise SpecError("E105", "the spec contains a NUL byte; is it a binary file?", Span(line, 1))
    if text.startswith("\ufeff"):
        # A byte-order mark that Windows editors write: a blank, so that columns stay put.
        text = " " + text[1:]
    _check_nesting(text)
    try:
        return parser().parse(text, ignored)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text) from None
    except RecursionError:
        raise SpecError("E106", "the spec is nested too deeply to parse", Span(1, 1),
                        hint="flatten the nesting of blocks and parentheses") from None


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset; lines end at '\\n' only, as lark's."""
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def _check_nesting(text: str) -> None:
    depth = 0
    for m in _BRACKETS.finditer(text):
        ch = m.group()
        if ch in "{(":
            depth += 1
            if depth > MAX_NESTING:
                line, col = _position(text, m.start())
                raise SpecError("E106", f"brackets are nested more than {MAX_NESTING} deep",
                                Span(line, col, line, col + 1),
                                hint="flatten the nesting: define a block and use repeat")
        elif ch in "})":
            depth = max(depth - 1, 0)


def _unclosed_brace(text: str) -> tuple[int, int] | None:
    """Where the last '{' that is never closed opens (comments and strings skipped)."""
    opened: list[int] = []
    for m in _BRACKETS.finditer(text):
        if m.group() == "{":
            opened.append(m.start())
        elif m.group() == "}" and opened:
            opened.pop()
    return _position(text, opened[-1]) if opened else None


def _syntax_error(exc: UnexpectedInput, text: str) -> SpecError:
    lines = text.split("\n")
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        # An unexpected end of file has no position: point just after the last character
        # that is not blank, where the missing text belongs.
        stripped = text.rstrip()
        line, col = _position(stripped, len(stripped))
        expected = _describe_expected(exc.expected)
        brace = _unclosed_brace(text)
        hint = (f"the '{{' at line {brace[0]}, column {brace[1]} is never closed: add a '}}'"
                if brace else "a statement is unfinished")
        return SpecError("E103", "the spec ends too early", Span(line, col, line, col + 1),
                         expected=expected, received="the end of the file", hint=hint)
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        hint = None
        if ch in "'":
            hint = "strings use double quotes"
        elif ch == ":":
            hint = "blocks use braces: block name(args) { ... }"
        elif ch.isdigit() or ch == "x":
            hint = "sizes are written like 3x3 or 224x224x3, with no spaces"
        return SpecError("E102", f"unexpected character {ch!r}",
                         Span(exc.line, exc.column, exc.line, exc.column + 1),
                         expected=_describe_expected(exc.allowed or []), received=repr(ch),
                         hint=hint or "remove it, or put it in a comment with '#'")
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    width = max(len(str(tok)), 1) if tok.type != "_NL" else 1
    line, col = tok.line or len(lines), tok.column or 1
    hint = None
    if str(tok) == "{":
        hint = "'{' opens the body of a block, repeat, residual, branch or section"
    elif str(tok) == "}":
        hint = "this '}' closes nothing: a '{' is missing above, or it is one too many"
    elif str(tok) == "=":
        hint = "names are given as 'name = layer ...' at the start of a statement"
    elif tok.type == "_NL" and "'}'" in _describe_expected(exc.accepts or exc.expected):
        hint = "a '{' opened above is not closed"
    message = ("the line ends too early" if tok.type == "_NL"
               else f"unexpected {_token_text(tok)}")
    return SpecError("E101", message,
                     Span(line, col, line, col + width),
                     expected=_describe_expected(exc.accepts or exc.expected),
                     received=_token_text(tok), hint=hint)
