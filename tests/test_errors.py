"""One row per error a spec can have: its code, line and column, words of its message and of its
hint; and how errors are rendered (`path:line:col: error[CODE]`, the line, a caret, the hint)."""

from __future__ import annotations

import re
import time

import pytest

import cnnspec
from cnnspec import SpecErrors

I = "input 8x8x3\n"

# (source, code, line, column, words in the message, words in the hint or None)
ROWS = [
    # --- E1xx syntax ---------------------------------------------------------------------------
    (I + "conv 8 3x3 )", "E101", 2, 12, "unexpected ')'", None),
    (I + "conv 8 3x3 @", "E102", 2, 12, "unexpected character '@'", "comment"),
    (I + "conv 8 3x3 'same'", "E102", 2, 12, "unexpected character", "double quotes"),
    (I + "block b(x):\n  relu", "E102", 2, 11, "unexpected character ':'", "braces"),
    (I + "conv 8 3x3 +", "E103", 2, 13, "ends too early", "unfinished"),
    (I + "conv 8 3x3 +\n\n   \n", "E101", 2, 13, "the line ends too early", None),
    (
        I + "block b(x) {\n  conv x 3x3\n",
        "E103",
        3,
        13,
        "ends too early",
        "'{' at line 2, column 12 is never closed",
    ),
    (
        I + "block b(x) {\n  conv x 3x3  # }\n\nrelu",
        "E103",
        5,
        5,
        "ends too early",
        "line 2, column 12",
    ),
    (I + "relu\n}", "E101", 3, 1, "unexpected '}'", "closes nothing"),
    (I + "conv 8 3x3 = 2", "E101", 2, 12, "unexpected '='", "name = layer"),
    ("input 8x8x3\x00", "E105", 1, 1, "NUL byte", None),
    (
        I + "conv " + "(" * 150 + "1" + ")" * 150 + " 3x3",
        "E106",
        2,
        106,
        "nested more than 100 deep",
        None,
    ),
    ("", "E211", 1, 1, "declares no input", "input HxWxC"),
    ("# only a comment\n", "E211", 1, 1, "declares no input", None),
    # --- E2xx validation -------------------------------------------------------------------------
    (I + "convv 8 3x3", "E202", 2, 1, "unknown layer 'convv'", "did you mean 'conv'?"),
    (I + "maxpol 2", "E202", 2, 1, "unknown layer 'maxpol'", "did you mean 'maxpool'?"),
    (
        I + "block stage(f) { relu }\nstag 4",
        "E202",
        3,
        1,
        "unknown layer 'stag'",
        "did you mean 'stage'?",
    ),
    (I + "conv 8 3x3 strides=2", "E204", 2, 12, "no argument 'strides'", "did you mean 'stride'?"),
    (I + "conv 8 3x3 padd=1", "E204", 2, 12, "no argument 'padd'", "did you mean 'padding'?"),
    (I + "conv 8 3x3 smae", "E203", 2, 12, "does not understand 'smae'", "did you mean 'same'?"),
    (I + "conv 8 3x3 relu7", "E203", 2, 12, "does not understand 'relu7'", "did you mean 'relu"),
    (I + "conv 8 3x3 1 2", "E203", 2, 14, "at most 3 bare number", "conv K FxF"),
    (I + "conv 0 3x3", "E205", 2, 6, "filters must be at least 1", "conv K FxF"),
    (I + "conv 8 0x3", "E205", 2, 8, "kernel must be at least 1", None),
    (I + "conv 8 3x3 stride=0", "E205", 2, 12, "stride must be at least 1", None),
    (I + "conv 8 3x3 padding=foo", "E205", 2, 12, "padding must be one of", None),
    (I + "dropout 1.5", "E205", 2, 9, "rate must be less than 1", "0 <= P < 1"),
    (I + "dropout -0.5", "E205", 2, 9, "rate must be at least 0", None),
    (I + "dense 2.5", "E205", 2, 7, "units must be a whole number", None),
    (I + "conv 8 3x3 bias=3", "E205", 2, 12, "bias must be true or false", None),
    (
        I + "deconv 4 3x3 stride=2 output_padding=2",
        "E205",
        2,
        8,
        "output_padding must be smaller than the stride",
        None,
    ),
    (I + "conv 3x3", "E205", 2, 6, "filters must be a whole number", "conv K FxF"),
    (I + "conv", "E209", 2, 1, "needs its filters", "conv K FxF"),
    (I + "conv 8 3x3 stride=1 stride=2", "E219", 2, 21, "'stride' is given twice", None),
    (I + "conv 8 3x3 stride=1/0", "E213", 2, 19, "division by zero", None),
    (I + "conv 1000000000000000000000000000000 3x3", "E214", 2, 6, "too large", None),
    (I + "conv 8 3x3 stride=n", "E205", 2, 12, "stride must be", None),
    (I + "conv n*2 3x3", "E206", 2, 6, "unknown name 'n'", None),
    ("conv 8 3x3\ninput 8x8x3", "E211", 1, 1, "comes before the input", "input 224x224x3"),
    (I + "input 8x8x3", "E218", 2, 1, "a second input", None),
    ("input 8x8", "E212", 1, 1, "height x width x channels", "8x8x1"),
    ("input 0x8x3", "E212", 1, 1, "positive", None),
    (
        I + "block b(f, k=3) { conv f k }\nb 4 5 6",
        "E210",
        3,
        7,
        "takes 2 argument(s), received 3",
        "block b(f, k)",
    ),
    (
        I + "block b(f, k=3) { conv f k }\nb",
        "E209",
        3,
        1,
        "needs its parameter 'f'",
        "block b(f, k)",
    ),
    (
        I + "block b(f, k=3) { conv f k }\nb 4 kk=3",
        "E204",
        3,
        5,
        "has no parameter 'kk'",
        "did you mean 'k'?",
    ),
    (I + "block b(f, k=3) { conv f k }\nb 4 f=3", "E219", 3, 5, "'f' is given twice", None),
    (I + "block b(f, f) { relu }", "E217", 2, 12, "'f' appears twice", None),
    (I + "block b() { relu }\nblock b() { tanh }", "E217", 3, 7, "defined twice", "line 2"),
    (I + "block conv() { relu }", "E216", 2, 7, "name of a layer kind", None),
    (I + "block b(f) { b f }\nb 4", "E223", 2, 14, "'b' uses itself (b -> b)", "repeat"),
    (
        I + "block a(f) { c f }\nblock c(f) { a f }\na 4",
        "E223",
        3,
        14,
        "'a' uses itself (a -> c -> a)",
        "recursive",
    ),
    (I + "conv 4 3x3 from=skp", "E220", 2, 12, "unknown tensor 'skp'", None),
    (
        I + "skip = conv 4 3x3\nconv 4 3x3 from=skpi",
        "E220",
        3,
        12,
        "unknown tensor 'skpi'",
        "did you mean 'skip'?",
    ),
    (I + "concat nothere", "E220", 2, 8, "unknown tensor 'nothere'", None),
    (I + "output nothere", "E220", 2, 8, "unknown tensor 'nothere'", None),
    (I + "x = conv 4 3x3\nx = conv 4 3x3", "E207", 3, 5, "'x' is used twice", None),
    (I + "relu { tanh }", "E221", 2, 6, "takes no body", None),
    (I + "concat", "E222", 2, 1, "takes 2+ input(s), received 1", "concat skip1"),
    (I + "parallel concat { branch { relu } }", "E222", 2, 1, "at least two branches", None),
    (I + "repeat 10000000000 { relu }", "E224", 2, 8, "count from 0 to", None),
    (I + "repeat -1 { relu }", "E224", 2, 8, "count from 0 to", None),
    (I + "repeat 100000 { relu; relu }", "E215", 2, 1, "more than the limit", "larger than"),
    (I + "repeat 100000 { repeat 100000 { relu } }", "E215", 2, 17, "more than the limit", None),
    (
        I + "residual foo { relu }",
        "E203",
        2,
        10,
        "'residual' does not understand the word 'foo'",
        None,
    ),
    (I + "residual shortcut=bogus { relu }", "E205", 2, 10, "'identity' or 'auto'", None),
    (I + "if foo { relu }", "E205", 2, 4, "needs a condition", None),
    (I + "class = relu", "E225", 2, 1, "'class' is a Python keyword", "class_"),
    (I + "__class__ = relu", "E225", 2, 1, "starting with '__'", None),
    (I + "block __init__(x) { relu }", "E225", 2, 7, "starting with '__'", None),
    (I + "block b(import) { relu }", "E225", 2, 9, "'import' is a Python keyword", None),
    (I + "repeat 2 as None { relu }", "E225", 2, 13, "'None' is a Python keyword", None),
    (I + "parallel { branch lambda { relu }; branch { } }", "E225", 2, 19, "keyword", None),
    ("model def\n" + I, "E225", 1, 7, "'def' is a Python keyword", None),
    # --- E3xx shapes -----------------------------------------------------------------------------
    (
        "input 1x1x512\npool 2",
        "E301",
        2,
        1,
        "maxpool 2 on a 1x1x512 tensor gives a 0x0 output",
        "larger input",
    ),
    (I + "conv 8 9x9", "E301", 2, 1, "conv 9x9 on a 8x8x3 tensor gives a 0x0", "same"),
    (I + "conv 8 3x3 dilation=4", "E301", 2, 1, "gives a 0x0", None),
    (I + "flatten\nconv 8 3x3", "E302", 3, 1, "needs a feature map", "before flatten"),
    (I + "conv 8 3x3 groups=2", "E303", 2, 1, "groups=2 must divide", None),
    (I + "maxpool 2 padding=2", "E304", 2, 1, "more than half the window", None),
    (
        I + "dense 10",
        "E305",
        2,
        1,
        "needs a vector, but its input is the feature map 8x8x3",
        "flatten",
    ),
    (I + "reshape 5x5x5", "E306", 2, 1, "cannot reshape 8x8x3 (192 values)", None),
    (I + "reshape (-1, -1)", "E306", 2, 1, "at most one -1", None),
    (
        I + "a = conv 4 3x3\nb = conv 4 1x1 from=input\nconcat a",
        "E311",
        4,
        1,
        "concat needs equal heights and widths, got 8x8x4, 6x6x4",
        "same",
    ),
    (
        I + "a = conv 4 1x1\nconv 5 1x1\nadd a",
        "E312",
        4,
        1,
        "add needs tensors of one shape, got 8x8x5, 8x8x4",
        "projection",
    ),
    (I + "a = flatten\nconv 4 1x1 from=input\nadd a", "E310", 4, 1, "different ranks", None),
    (I + "residual { conv 8 3x3 }", "E312", 2, 1, "add needs tensors of one shape", None),
    (I + "residual shortcut=auto { conv 8 3x3 }", "E312", 2, 1, "no 1x1 projection", None),
    # --- E5xx settings ---------------------------------------------------------------------------
    (
        I + "compile {\n  los mse\n}",
        "E501",
        3,
        3,
        "unknown compile setting 'los'",
        "did you mean 'loss'?",
    ),
    (I + "compile {\n  loss msee\n}", "E503", 3, 8, "unknown loss 'msee'", "did you mean 'mse'"),
    (I + "compile {\n  optimizer adam lr=-1\n}", "E502", 3, 18, "lr", None),
    (
        I + "compile {\n  optimizer adam lrr=1\n}",
        "E502",
        3,
        18,
        "no setting 'lrr'",
        "did you mean 'lr'?",
    ),
    (I + "compile {\n  epochs 3\n  epochs 4\n}", "E504", 4, 3, "set twice", None),
    (I + "transfer {\n  freeze all\n}", "E505", 2, 1, "needs a source", "torchvision"),
]


def _errors(src: str) -> list:
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_text(src, "net.cnn")
    return info.value.errors


@pytest.mark.parametrize(
    "src,code,line,col,words,hint", ROWS, ids=[f"{r[1]}-{i}" for i, r in enumerate(ROWS)]
)
def test_error(src, code, line, col, words, hint):
    err = _errors(src)[0]
    assert (
        err.code,
        err.span.line if err.span else None,
        err.span.column if err.span else None,
    ) == (code, line, col), err.render(src)
    assert words in err.message, err.render(src)
    if hint is not None:
        assert err.hint and hint in err.hint, err.render(src)
    assert err.path == "net.cnn"


@pytest.mark.parametrize(
    "src,code,line,col,words,hint", ROWS, ids=[f"{r[1]}-{i}" for i, r in enumerate(ROWS)]
)
def test_rendering(src, code, line, col, words, hint):
    """`net.cnn:L:C: error[CODE]: message`, then the source line and a caret under the column."""
    err = _errors(src)[0]
    text = err.render(src)
    lines = text.split("\n")
    assert lines[0] == f"net.cnn:{line}:{col}: error[{code}]: {err.message}"
    gutter = next(i for i, ln in enumerate(lines) if ln.startswith(f"{line:>4} | "))
    shown = src.split("\n")[line - 1].expandtabs(1)
    assert lines[gutter] == f"{line:>4} | {shown}"
    caret = lines[gutter + 1]
    assert caret.startswith("     | ") and caret[7:].startswith(" " * (col - 1) + "^"), text
    if hint:
        assert lines[-1].startswith("hint: ")


def test_several_errors_at_once():
    """The compiler goes on where it can: each independent mistake is reported."""
    src = I + "convv 8 3x3\nconv 8 3x3 strides=2\nblock b(x) { relu }\nb 1 2\ndropout 2"
    errs = _errors(src)
    assert [(e.code, e.span.line) for e in errs] == [
        ("E202", 2),
        ("E204", 3),
        ("E210", 5),
        ("E205", 6),
    ]
    text = SpecErrors(errs).render(src)
    assert text.count("error[") == 4


def test_more_than_twenty_errors_are_summarised():
    src = I + "\n".join(f"relu_{i}" for i in range(30))
    errs = _errors(src)
    assert len(errs) == 30
    text = SpecErrors(errs).render(src)
    assert text.count("error[E202]") == 20 and text.endswith("... and 10 more")


def test_error_inside_block_notes_where_it_was_used():
    src = I + "block down(f) {\n  conv f 3x3\n  pool 8\n}\nconv 8 1x1\ndown 4"
    err = _errors(src)[0]
    assert (err.code, err.span.line, err.span.column) == ("E301", 4, 3)
    assert err.notes == ["note: in block 'down' used at line 7"]
    assert "note: in block 'down' used at line 7" in err.render(src)


def test_nested_blocks_note_every_use():
    src = I + "block inner() { pool 16 }\nblock outer() { inner }\nouter"
    err = _errors(src)[0]
    assert err.span.line == 2
    assert err.notes == [
        "note: in block 'outer' used at line 4",
        "note: in block 'inner' used at line 3",
    ]


def test_errors_in_repeated_body_are_reported_once():
    errs = _errors(I + "repeat 50 { conv 0 3x3 }")
    assert len(errs) == 1


def test_to_dict_is_structured():
    err = _errors(I + "conv 8 3x3 strides=2")[0]
    data = err.to_dict()
    assert data["code"] == "E204" and data["path"] == "net.cnn"
    assert data["span"] == {"line": 2, "column": 12, "end_line": 2, "end_column": 21}
    assert data["hint"] == "did you mean 'stride'?"


def test_crlf_and_tabs_keep_positions():
    src = "input 8x8x3\r\n\tconv 8 3x3 strides=2\r\n"
    err = _errors(src)[0]
    assert (err.span.line, err.span.column) == (2, 13)
    assert "strides=2" in err.render(src).split("\n")[2]


def test_unknown_name_of_unicode_is_a_syntax_error():
    err = _errors(I + "größe = relu")[0]
    assert err.code == "E102" and err.span.line == 2


def test_file_errors(tmp_path):
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_file(tmp_path / "missing.cnn")
    assert info.value.errors[0].code == "E001"
    bad = tmp_path / "latin1.cnn"
    bad.write_bytes(b"input 8x8x3\n# caf\xe9\n")
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_file(bad)
    err = info.value.errors[0]
    assert (err.code, err.span.line) == ("E107", 2)


@pytest.mark.parametrize(
    "src",
    [
        I + "block b(f) { b f }\nb 4",
        I + "block a() { c }\nblock c() { a }\na",
        I + "repeat 100000 { repeat 100000 { relu } }",
        I + "repeat 100000 { repeat 100000 { } }",
        I + "repeat 99999 { relu; relu; relu }",
    ],
)
def test_refused_quickly(src):
    start = time.perf_counter()
    _errors(src)
    assert time.perf_counter() - start < 1.0


def test_codes_are_documented():
    """Every code the core raises belongs to a family listed in errors.py."""
    from pathlib import Path

    root = Path(cnnspec.__file__).parent
    codes = set()
    for path in root.rglob("*.py"):
        codes |= set(re.findall(r'"(E\d{3})"', path.read_text()))
    doc = (root / "errors.py").read_text()
    families = set(re.findall(r"E(\d)xx", doc))
    assert {c[1] for c in codes} - {"0", "6"} <= families
