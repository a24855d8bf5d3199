"""The parser is lark's own LALR parser over grammar/cnnspec.lark, with its tables cached in a
private folder, and it parses as a plain `Lark(...)` does."""

from __future__ import annotations

from pathlib import Path

import pytest
from lark import Lark, Token

from cnnspec import parse
from cnnspec.parse import grammar_path, parse_text

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted([*ROOT.glob("specs/*.cnn"), *ROOT.glob("examples/**/*.cnn")])


def test_the_parser_cache_is_private_and_rebuilt_when_spoiled(tmp_path, monkeypatch):
    # lark reads its cache with pickle: never from the shared temporary folder, and a spoiled
    # file is rebuilt rather than trusted.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    grammar = grammar_path().read_text(encoding="utf-8")
    path = Path(parse._cache_file(grammar))
    assert path.parent == tmp_path / "cnnspec"
    assert path.parent.stat().st_mode & 0o077 == 0
    parse._load_parser()
    assert path.stat().st_size > 0
    path.write_bytes(b"not a cache\n")
    tree = parse._load_parser().parse("input 8x8x1\nrelu\n")
    assert tree.data == "start"


def test_an_unwritable_cache_folder_builds_in_memory(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # a file where the folder would be
    assert parse._cache_file("grammar") is False
    assert parse._load_parser().parse("input 8x8x1\n").data == "start"


def _shape(node) -> tuple:
    """A tree as plain data with every position, comparable across the two Tree classes."""
    if isinstance(node, Token):
        return (
            "token",
            node.type,
            str(node),
            node.line,
            node.column,
            node.end_line,
            node.end_column,
        )
    meta = node.meta
    where = None if meta.empty else (meta.line, meta.column, meta.end_line, meta.end_column)
    return (node.data, where, tuple(_shape(c) for c in node.children))


@pytest.fixture(scope="module")
def lark_itself() -> Lark:
    return Lark(
        grammar_path().read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=False,
    )


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_trees_and_positions_are_lark_s(path, lark_itself):
    text = path.read_text(encoding="utf-8")
    ours = parse_text(text)
    assert _shape(ours) == _shape(lark_itself.parse(text))


def test_comments_are_kept_in_source_order():
    comments: list = []
    parse_text("# a\ninput 8x8x1  # b\n# c\nrelu\n", comments)
    assert [str(c) for c in comments] == ["# a", "# b", "# c"]
    assert [c.line for c in comments] == [1, 2, 3]


def test_parsing_after_a_syntax_error_starts_clean():
    from cnnspec.errors import SpecError

    with pytest.raises(SpecError):
        parse_text("input 8x8x1\nconv 8 3x3 {\n", [])
    comments: list = []
    parse_text("input 8x8x1 # only\n", comments)
    assert [str(c) for c in comments] == ["# only"]


# --- hostile sizes: refused early, shown short --------------------------------------------------


def _chain(terms: int, sep: str = "+") -> str:
    return "input 8x8x1\nconv " + sep.join(["1"] * terms) + " 3x3\n"


def _head_and_source(rendered: str) -> tuple[str, str, str]:
    """The first line of a rendered error, its source line and the caret line under it."""
    lines = rendered.split("\n")
    at = next(i for i, ln in enumerate(lines) if ln.startswith("   2 | "))
    return lines[0], lines[at], lines[at + 1]


def test_a_million_term_expression_is_refused_before_parsing():
    import time

    from cnnspec.compiler import compile_text
    from cnnspec.errors import SpecErrors

    text = _chain(3_900_000)  # 7.8 MB on one line, under the 8 MiB limit
    start = time.perf_counter()
    with pytest.raises(SpecErrors) as caught:
        compile_text(text, "big.cnn")
    rendered = caught.value.render(text)
    elapsed = time.perf_counter() - start
    err = caught.value.errors[0]
    assert (err.code, err.span.line, err.span.column) == ("E106", 2, 6)
    assert err.message == "the expression is too long to evaluate"  # as the evaluator says
    assert elapsed < 10, f"{elapsed:.1f} s: parsing it takes about a hundred"
    assert len(rendered) < 2_000, "the 7.8 MB line is printed whole"
    _, source, caret = _head_and_source(rendered)
    assert source.startswith("   2 | conv 1+1+1") and source.endswith("...")
    assert caret.index("^") == source.index("1+1")


@pytest.mark.parametrize(
    "text",
    [
        _chain(700),  # evaluates today: still does
        _chain(700, " * "),
        "input 8x8x1\nconv 16 3x3 # " + "+" * 5_000 + "\n",  # operators in a comment
        'input 8x8x1\ntransfer { source "' + "+" * 5_000 + '" }\n',  # ... and in a string
    ],
)
def test_long_lines_that_are_not_chains_pass_the_check(text):
    from cnnspec.parse import _check_chains

    _check_chains(text)
    parse_text(text)


def test_a_located_error_on_a_long_line_shows_a_window_around_the_caret():
    from cnnspec.compiler import compile_text
    from cnnspec.errors import MAX_LINE_SHOWN, SpecErrors

    line = "; ".join(["relu"] * 5_000 + ["conv 0 3x3"] + ["relu"] * 5_000)  # 60,000 characters
    text = "input 8x8x1\n" + line + "\n"
    with pytest.raises(SpecErrors) as caught:
        compile_text(text, "long.cnn")
    err = caught.value.errors[0]
    rendered = err.render(text)
    head, source, caret = _head_and_source(rendered)
    assert head.startswith(f"long.cnn:2:{line.index('conv 0') + 6}: error[E205]")  # at the 0
    assert source.startswith("   2 | ...") and source.endswith("...")
    assert len(source) <= len("   2 | ") + MAX_LINE_SHOWN + 6
    assert source[caret.index("^") :].startswith("0 3x3")  # the caret still points at it


def test_a_line_that_fits_is_shown_whole():
    from cnnspec.errors import MAX_LINE_SHOWN, Span, SpecError

    text = "x" * (MAX_LINE_SHOWN - 1) + "y"
    rendered = SpecError("E101", "m", Span(1, MAX_LINE_SHOWN)).render(text)
    assert rendered.split("\n")[1] == "   1 | " + text
