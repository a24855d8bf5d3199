"""Text -> Lark syntax tree, with syntax errors turned into located SpecErrors."""

from __future__ import annotations

import functools
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import Span, SpecError

MAX_SOURCE_BYTES = 8 * 1024 * 1024

# What each terminal is called in an error message.
_TERMINAL_WORDS = {
    "NAME": "a name", "INT": "a whole number", "FLOAT": "a number", "DIMS": "a size like 3x3",
    "STRING": "a quoted string", "REF": "a source like torchvision:resnet18",
    "_NL": "a new line", "_SEMI": "';'", "LBRACE": "'{'", "RBRACE": "'}'", "LPAR": "'('",
    "RPAR": "')'", "COMMA": "','", "EQUAL": "'='", "COMP_OP": "a comparison",
    "ADD_OP": "'+' or '-'", "MUL_OP": "'*' or '/'", "MINUS": "'-'", "_NEG": "'-'", "$END": "the end of the file",
}


def grammar_path() -> Path:
    """The grammar ships inside the package (cnnspec/grammar) or beside it in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "grammar" / "cnnspec.lark", here.parent / "grammar" / "cnnspec.lark"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("cnnspec.lark not found beside the package")


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    return Lark(grammar_path().read_text(), parser="lalr", lexer="contextual",
                propagate_positions=True, maybe_placeholders=False, cache=False)


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


def parse_text(text: str) -> Tree:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise SpecError("E104", f"the spec is larger than {MAX_SOURCE_BYTES // 2**20} MiB",
                        Span(1, 1), hint="a spec is a few hundred lines; generate blocks instead")
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise SpecError("E105", "the spec contains a NUL byte; is it a binary file?", Span(line, 1))
    try:
        return parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text) from None
    except RecursionError:
        raise SpecError("E106", "the spec is nested too deeply to parse", Span(1, 1),
                        hint="flatten the nesting of blocks and parentheses") from None


def _syntax_error(exc: UnexpectedInput, text: str) -> SpecError:
    lines = text.splitlines() or [""]
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken)
                                           and exc.token.type == "$END"):
        # An unexpected end of file has no position: point after the last character.
        line = len(lines)
        col = len(lines[-1]) + 1
        expected = _describe_expected(getattr(exc, "expected", None) or exc.accepts
                                      if hasattr(exc, "accepts") else exc.expected)
        return SpecError("E103", "the spec ends too early", Span(line, col, line, col + 1),
                         expected=expected, received="the end of the file",
                         hint="a '{' may be missing its '}', or a statement is unfinished")
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
    elif str(tok) == "=":
        hint = "names are given as 'name = layer ...' at the start of a statement"
    elif tok.type == "_NL" and "'}'" in _describe_expected(exc.accepts or exc.expected):
        hint = "a '{' opened above is not closed"
    return SpecError("E101", f"unexpected {_token_text(tok)}",
                     Span(line, col, line, col + width),
                     expected=_describe_expected(exc.accepts or exc.expected),
                     received=_token_text(tok), hint=hint)
