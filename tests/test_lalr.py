"""cnnspec.lalr runs the tables lark builds: it must parse exactly as lark does.

Every spec, example and fuzz input, and a few thousand mutations of the zoo (cut short,
a stray character inserted, a stretch deleted, a non-ASCII letter), are parsed by lark
itself and by the runtime; trees (names, tokens, every position) and syntax errors (kind,
position, token, expected and accepted terminals) must be equal.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from lark import Lark
from lark import Token as LarkToken
from lark import Tree as LarkTree
from lark.exceptions import UnexpectedInput as LarkUnexpectedInput

from cnnspec import lalr
from cnnspec.parse import _OPTIONS, _fingerprint, grammar_path, parser, tables_path

ROOT = Path(__file__).resolve().parents[1]
STRAYS = ["{", "}", "(", ")", "=", ",", "x", "-", "'", ":", "\n", "else", "3x", "1.5e", "#",
          "\\\n", ";", "\r\n", "\t", '"', "residual", "->", "é", "\x0c"]


@pytest.fixture(scope="module")
def lark_parser() -> Lark:
    return Lark(grammar_path().read_text(encoding="utf-8"), cache=False, **_OPTIONS)


def _shape(root) -> list:
    """Every node in pre-order with its name, position and number of children (a loop, not
    a recursion: the fuzz corpus nests thousands deep)."""
    out, todo = [], [root]
    while todo:
        node = todo.pop()
        if isinstance(node, (LarkTree, lalr.Tree)):
            m = node.meta
            at = None if m.empty else (m.line, m.column, m.end_line, m.end_column,
                                       m.start_pos, m.end_pos)
            out.append(("tree", node.data, at, len(node.children)))
            todo.extend(reversed(node.children))
        else:
            assert isinstance(node, (LarkToken, lalr.Token)), node
            out.append(("token", node.type, str(node), node.line, node.column, node.end_line,
                        node.end_column, node.start_pos, node.end_pos))
    return out


def _error(exc) -> dict:
    out = {"kind": type(exc).__name__, "line": exc.line, "column": exc.column}
    if hasattr(exc, "token"):
        tok = exc.token
        out.update(token=(tok.type, str(tok), tok.line, tok.column, tok.end_line,
                          tok.end_column), expected=sorted(exc.expected),
                   accepts=sorted(exc.accepts or ()))
    else:
        out.update(pos=exc.pos_in_stream, allowed=sorted(exc.allowed))
    return out


def _outcome(parse, text: str):
    try:
        return "tree", _shape(parse(text))
    except (LarkUnexpectedInput, lalr.UnexpectedInput) as exc:
        return "error", _error(exc)


def _corpus() -> list[tuple[str, str]]:
    files = [*ROOT.glob("specs/*.cnn"), *ROOT.glob("examples/**/*.cnn"),
             *ROOT.glob("tests/fuzz_corpus/*.cnn"), *ROOT.glob("tests/data/**/*.cnn")]
    texts = [(str(f.relative_to(ROOT)), f.read_bytes().decode("utf-8", "replace"))
             for f in sorted(files)]
    zoo = [t for name, t in texts if name.startswith("specs")]
    rng = random.Random(20261130)
    for i in range(2500):
        text = rng.choice(zoo)
        at = rng.randrange(len(text))
        how = i % 4
        if how == 0:
            text = text[:at]
        elif how == 1:
            text = text[:at] + rng.choice(STRAYS) + text[at:]
        elif how == 2:
            text = text[:at] + text[rng.randrange(at, len(text)):]
        else:
            text = text[:at] + rng.choice(STRAYS) + text[at + rng.randrange(1, 8):]
        texts.append((f"mutation {i}", text))
    return texts


def test_the_runtime_parses_as_lark_does(lark_parser):
    ours = parser()
    differ = []
    for name, text in _corpus():
        expected, got = _outcome(lark_parser.parse, text), _outcome(ours.parse, text)
        if expected != got:
            differ.append((name, expected, got))
    assert not differ, differ[:3]
    assert sum(1 for name, _ in _corpus() if not name.startswith("mutation")) > 25


def test_errors_are_the_lark_kinds_with_the_same_sets(lark_parser):
    # the three ways a parse fails: a character no terminal matches, a token no state takes
    # here, the end of the file too early
    for text in ["input 8x8x3\nconv 4 3x3 $\n", "input 8x8x3\n} conv 4\n", "block b( {"]:
        a, b = _outcome(lark_parser.parse, text), _outcome(parser().parse, text)
        assert a[0] == "error" and a == b


def test_the_stored_tables_are_the_grammars():
    # A stale file would fall back to building the tables with lark (~0.1 s per run). lark
    # numbers its states differently from run to run, so the check is the grammar's
    # fingerprint, and the test above checks what the tables do.
    stored = json.loads(tables_path().read_text(encoding="utf-8"))
    grammar = grammar_path().read_text(encoding="utf-8")
    assert stored["fingerprint"] == _fingerprint(grammar), \
        "grammar changed: python -c 'from cnnspec.parse import write_tables; write_tables()'"
    assert stored["tables"]["format"] == lalr.FORMAT


def test_ignored_tokens_are_handed_back():
    ignored: list = []
    parser().parse("input 8x8x3  # the input\nconv 4 3x3\n", ignored)
    assert [(t.type, str(t), t.line, t.column) for t in ignored] == [
        ("WS", " ", 1, 6), ("WS", "  ", 1, 12), ("COMMENT", "# the input", 1, 14), ("WS", " ", 2, 5),
        ("WS", " ", 2, 7)]


def test_first_characters_of_terminals():
    first = lalr._first_chars
    assert first(r"[0-9]+(x[0-9]+)+") == "0123456789"
    assert first(r"(?:==|!=|<=)") == "!<="
    assert first(r"((\r?\n[\t ]*)|[\t ]|#[^\n]*)*else") == "\t\n\r #e"
    assert first(r"\d+") is None          # a category: anything may start it
    assert first(r"(a)?") is None         # may match nothing


def test_compiling_a_spec_does_not_import_lark():
    code = ("import sys, cnnspec; cnnspec.compile_file(sys.argv[1]); "
            "from cnnspec.fmt import format_text; format_text(open(sys.argv[1]).read()); "
            "print(sorted(m for m in sys.modules if m == 'lark' or m.startswith('lark.')))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs" / "resnet50.cnn")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
