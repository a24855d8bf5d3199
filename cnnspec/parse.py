"""Text -> syntax tree, with syntax errors turned into located SpecErrors.

The grammar is grammar/cnnspec.lark; lark (MIT) builds its LALR(1) parser with the contextual
lexer. Building the tables takes longer than a `cnnspec summary`, so lark's own cache keeps
them: `cache=PATH`, a file in the user's cache folder ($XDG_CACHE_HOME/cnnspec, else
~/.cache/cnnspec), named after the grammar's hash and lark's version, never in the shared
temporary folder that `cache=True` would use (lark reads its cache with pickle: a file another
user could plant there must not be read). Where that folder cannot be written the parser is
built in memory each time. lark checks the grammar's hash in the file and rebuilds a stale or
unreadable one. (lark's standalone generator was measured faster to load, 37 against 60 ms,
but its output is MPL-2.0 code, and dependencies here are MIT, BSD or Apache.)"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import resources
from .errors import Span, SpecError

__all__ = ["Token", "Tree", "grammar_path", "parse_text"]

MAX_SOURCE_BYTES = 8 * 1024 * 1024
MAX_NESTING = 100  # braces and parentheses; deeper nesting would exhaust Python's stack
# Operators in one expression. Evaluating `1 + 1 + ... + 1` recurses once per term and runs out
# of stack before 1,000 terms, so no longer chain can be valid; lark spends ~12 us a token,
# so a 7.8 MB one-line chain is refused before parsing rather than after a hundred seconds.
MAX_OPERATORS = 1_000
_RUN = re.compile(r"[\w.()+*/%\- \t\f]{" + str(MAX_OPERATORS) + ",}")  # operands, operators, blanks
_OPERATOR = re.compile(r"//|[-+*/%]")
_OPERAND_BEFORE = re.compile(r"[\w.()]*[ \t\f]*(?://|[-+*/%])")
_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*')
_BRACKETS = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[{}()]')

# What each terminal is called in an error message.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "FUNC": "a function like round_filters",
    "INT": "a whole number",
    "FLOAT": "a number",
    "DIMS": "a size like 3x3",
    "STRING": "a quoted string",
    "REF": "a source like torchvision:resnet18",
    "_NL": "a new line",
    "_SEMI": "';'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "EQUAL": "'='",
    "COMP_OP": "a comparison",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*' or '/'",
    "_NEG": "'-'",
    "$END": "the end of the file",
}


def grammar_path() -> Path:
    """The grammar ships inside the package (cnnspec/grammar) or beside it in a checkout."""
    return resources.path("grammar") / "cnnspec.lark"


def _cache_file(grammar: str) -> str | bool:
    """Where lark keeps the built tables: a private folder of the user's, or nowhere."""
    import lark

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "cnnspec"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK) or folder.stat().st_uid != os.getuid():
            return False
    except OSError:
        return False
    digest = hashlib.sha256(grammar.encode("utf-8")).hexdigest()[:16]
    return str(folder / f"parser-{digest}-lark{lark.__version__}.cache")


def _load_parser(**options) -> Lark:
    grammar = grammar_path().read_text(encoding="utf-8")
    return Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=False,
        cache=_cache_file(grammar),
        **options,
    )


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR parser, loaded once per process."""
    return _load_parser()


class _Comments:
    """The COMMENT tokens one parse saw (lark drops ignored terminals from the tree)."""

    def __init__(self):
        self.tokens: dict[int, Token] = {}
        self.lock = threading.Lock()  # one collector: one parse with comments at a time

    def __call__(self, tok: Token) -> Token:
        self.tokens[tok.start_pos] = tok  # keyed: the contextual lexer may lex a token twice
        return tok


_COMMENTS = _Comments()


@functools.lru_cache(maxsize=1)
def _commenting_parser() -> Lark:
    """A second parser that keeps the comments, for the formatter; compiling does not pay
    for the callback."""
    return _load_parser(lexer_callbacks={"COMMENT": _COMMENTS})


def _describe_expected(expected) -> str:
    words = sorted(
        {
            _TERMINAL_WORDS.get(t, f"'{t.lower()}'" if t.isupper() else t)
            for t in expected
            if not t.startswith("__")
        }
    )
    if len(words) > 8:
        words = words[:8] + ["..."]
    return ", ".join(words)


def _token_text(token: Token) -> str:
    if token.type == "$END":
        return "the end of the file"
    if token.type == "_NL":
        return "the end of the line"
    return repr(str(token))


def parse_text(text: str, comments: list | None = None) -> Tree:
    """The syntax tree of `text`; its comment tokens, in source order, are appended to
    `comments` if given."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise SpecError(
            "E104",
            f"the spec is larger than {MAX_SOURCE_BYTES // 2**20} MiB",
            Span(1, 1),
            hint="a spec is a few hundred lines; generate blocks instead",
        )
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise SpecError("E105", "the spec contains a NUL byte; is it a binary file?", Span(line, 1))
    if text.startswith("\ufeff"):
        # A byte-order mark that Windows editors write: a blank, so that columns stay put.
        text = " " + text[1:]
    _check_chains(text)
    _check_nesting(text)
    try:
        if comments is None:
            return parser().parse(text)
        with _COMMENTS.lock:
            _COMMENTS.tokens = {}
            try:
                tree = _commenting_parser().parse(text)
                comments.extend(sorted(_COMMENTS.tokens.values(), key=lambda t: t.start_pos))
            finally:
                _COMMENTS.tokens = {}
            return tree
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text) from None
    except RecursionError:
        raise SpecError(
            "E106",
            "the spec is nested too deeply to parse",
            Span(1, 1),
            hint="flatten the nesting of blocks and parentheses",
        ) from None


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
                raise SpecError(
                    "E106",
                    f"brackets are nested more than {MAX_NESTING} deep",
                    Span(line, col, line, col + 1),
                    hint="flatten the nesting: define a block and use repeat",
                )
        elif ch in "})":
            depth = max(depth - 1, 0)


def _check_chains(text: str) -> None:
    """Refuse an operator chain of more than MAX_OPERATORS operators on one line. Linear: a
    run of the characters an expression is made of, then a count of its operators, both in C
    (a chain continued over lines with '\\' is left to the evaluator's own limit)."""
    if sum(map(text.count, "+-*/%")) < MAX_OPERATORS:
        return
    if "#" in text or '"' in text:  # blank out comments and strings, keeping positions
        text = _QUOTED.sub(lambda m: " " * len(m.group()), text)
    for run in _RUN.finditer(text):
        chars = run.group()
        if sum(map(chars.count, "+-*/%")) - chars.count("//") >= MAX_OPERATORS:
            # from the operand before the first operator (the run may start with a keyword)
            first = _OPERAND_BEFORE.search(chars, 0, _OPERATOR.search(chars).start() + 1)
            start = run.start() + first.start()
            line, col = _position(text, start)
            end = col + len(chars.rstrip()) - first.start()
            # the evaluator's own words: the same error, found before parsing
            raise SpecError(
                "E106",
                "the expression is too long to evaluate",
                Span(line, col, line, end),
                hint="compute the value in fewer steps",
            )


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
    if isinstance(exc, UnexpectedEOF) or (
        isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    ):
        # An unexpected end of file has no position: point just after the last character
        # that is not blank, where the missing text belongs.
        stripped = text.rstrip()
        line, col = _position(stripped, len(stripped))
        expected = _describe_expected(exc.expected)
        brace = _unclosed_brace(text)
        hint = (
            f"the '{{' at line {brace[0]}, column {brace[1]} is never closed: add a '}}'"
            if brace
            else "a statement is unfinished"
        )
        return SpecError(
            "E103",
            "the spec ends too early",
            Span(line, col, line, col + 1),
            expected=expected,
            received="the end of the file",
            hint=hint,
        )
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        hint = None
        if ch in "'":
            hint = "strings use double quotes"
        elif ch == ":":
            hint = "blocks use braces: block name(args) { ... }"
        elif ch.isdigit() or ch == "x":
            hint = "sizes are written like 3x3 or 224x224x3, with no spaces"
        return SpecError(
            "E102",
            f"unexpected character {ch!r}",
            Span(exc.line, exc.column, exc.line, exc.column + 1),
            expected=_describe_expected(exc.allowed or []),
            received=repr(ch),
            hint=hint or "remove it, or put it in a comment with '#'",
        )
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
    message = "the line ends too early" if tok.type == "_NL" else f"unexpected {_token_text(tok)}"
    return SpecError(
        "E101",
        message,
        Span(line, col, line, col + width),
        expected=_describe_expected(exc.accepts or exc.expected),
        received=_token_text(tok),
        hint=hint,
    )
