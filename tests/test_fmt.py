"""cnnspec fmt: one canonical layout, comments kept, idempotent, and the same IR."""

from __future__ import annotations

import io
import os
import random
import re
from pathlib import Path

import pytest

import cnnspec
from cnnspec import fmt
from cnnspec.cli import main
from cnnspec.errors import SpecError

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SPECS = sorted((ROOT / "specs").glob("*.cnn")) + [DATA / "every_construct.cnn"]
GOLDEN = DATA / "every_construct.fmt.cnn"


def _ir(text: str) -> dict:
    """The IR without source positions (layout moves them, nothing else may change)."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.endswith("span")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(cnnspec.compile_text(text).model_dump(mode="json"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_same_ir_and_idempotent(path):
    source = path.read_text()
    once = fmt.format_text(source)
    assert _ir(once) == _ir(source)
    assert fmt.format_text(once) == once


SHIPPED = sorted([*ROOT.glob("specs/*.cnn"), *ROOT.glob("examples/**/*.cnn")])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_shipped_spec_is_in_the_canonical_layout(path):
    # What we ship is what `cnnspec fmt` writes, so a user's first `fmt` changes nothing.
    source = path.read_text(encoding="utf-8")
    assert fmt.format_text(source) == source, f"run: cnnspec fmt {path.relative_to(ROOT)}"


def _scramble(source: str, seed: int) -> str:
    """The same spec with other spacing: indents dropped, spaces doubled or added next to
    punctuation, trailing blanks. Lines with strings or comments keep their text after '#'."""
    rng = random.Random(seed)
    out = []
    for line in source.splitlines():
        code, hash_, comment = line.partition("#")
        if '"' not in code:
            code = code.strip()
            code = re.sub(r" ", lambda m: " " * rng.randint(1, 3), code)
            code = re.sub(
                r"([;,{}()]|(?<![=!<>])=(?!=))",
                lambda m: rng.choice(["", " "]) + m.group(1) + rng.choice(["", " "]),
                code,
            )
        out.append(code + hash_ + comment + " " * rng.randint(0, 2))
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_spacing_does_not_matter(path):
    source = path.read_text()
    canonical = fmt.format_text(source)
    for seed in range(3):
        scrambled = _scramble(source, seed)
        assert fmt.format_text(scrambled) == canonical


def test_every_construct_golden():
    """The whole layout at once; refresh with CNNSPEC_UPDATE_GOLDEN=1 and review the diff."""
    result = fmt.format_text((DATA / "every_construct.cnn").read_text())
    if os.environ.get("CNNSPEC_UPDATE_GOLDEN"):
        GOLDEN.write_text(result)
    assert result == GOLDEN.read_text()


def test_every_construct_keeps_every_comment():
    source = (DATA / "every_construct.cnn").read_text()
    comments = [line[line.index("#") :].strip() for line in source.splitlines() if "#" in line]
    result = fmt.format_text(source)
    for comment in comments:
        assert comment in result


# One-line round trips: (source, canonical).
CASES = [
    ("conv   64  3x3 same", "conv 64 3x3 same"),
    ("x=conv 1", "x = conv 1"),
    ("conv 8 stride = 2", "conv 8 stride=2"),
    ("conv 8 (3, 3) stride=(2,2)", "conv 8 3x3 stride=2x2"),
    ("concat from=(a,b)", "concat from=(a, b)"),
    # one number per level or channel is a tuple, not a size; shapes stay sizes
    (
        "detect p classes=3 strides=4x8 sizes=16x32",
        "detect p classes=3 strides=(4, 8) sizes=(16, 32)",
    ),
    ("detect p classes=3 strides=(4,8)", "detect p classes=3 strides=(4, 8)"),
    ("normalize mean=(0, 0, 0)", "normalize mean=(0, 0, 0)"),
    ("reshape (4, 4)", "reshape 4x4"),
    ("my_block strides=(4, 8)", "my_block strides=4x8"),  # a block of the spec: unknown
    ("conv 64 (-1)", "conv 64 (-1)"),  # not 'conv 64 -1'
    ("conv -1", "conv (-1)"),
    ("conv (a + 1) * 2", "conv (a+1)*2"),
    ("conv a * (2 * 3)", "conv a*(2*3)"),
    ("conv (a * 2) * 3", "conv a*2*3"),
    ("conv a // 2 % 3", "conv a//2%3"),
    ("conv - - 4", "conv (--4)"),
    ("if not (a or b) and c>1 { x }", "if not (a or b) and c > 1 { x }"),
    ("if (a and b) or c { x }", "if a and b or c { x }"),
    ("if a and (b or c) { x }", "if a and (b or c) { x }"),
    ("a;b;;c", "a; b; c"),
    ("a;\n\n\n\nb", "a\n\nb"),
    ("conv 8 \\\n   3x3", "conv 8 3x3"),
    ("block b( x , y=2 ) {relu}", "block b(x, y=2) { relu }"),
    ("block b() {\nrelu\n}", "block b() {\n  relu\n}"),
    ("repeat 2 as i {relu;bn}", "repeat 2 as i { relu; bn }"),
    ("r = residual relu shortcut=auto { conv 8 }", "r = residual relu shortcut=auto { conv 8 }"),
    (
        "residual {\nconv 8\n} shortcut {conv 8 1x1}",
        "residual {\n  conv 8\n} shortcut { conv 8 1x1 }",
    ),
    ("if a { x } else if b { y } else { z }", "if a { x } else if b { y } else { z }"),
    ("if a {\nx\n}else{ z }", "if a {\n  x\n} else { z }"),
    (
        "parallel concat { branch a { conv 8 }; branch { } }",
        "parallel concat {\n  branch a { conv 8 }\n  branch {}\n}",
    ),
    ("block b() { repeat 2 { relu } }", "block b() { repeat 2 { relu } }"),
    ("if a { residual { relu } } else {\nbn\n}", "if a { residual { relu } } else {\n  bn\n}"),
    (
        "block b() { parallel add { branch {}; branch {relu} } }",
        "block b() {\n  parallel add {\n    branch {}\n    branch { relu }\n  }\n}",
    ),
    ("repeat n + 1 { conv n + 1 }", "repeat n + 1 { conv n+1 }"),
    ("if a+1 > b*2 { x }", "if a + 1 > b * 2 { x }"),
    ("block b(p=2 * 3) { relu }", "block b(p=2*3) { relu }"),
    ("model m; input 8x8x1", "model m; input 8x8x1"),
    (
        'transfer { source "w.pt"; freeze pattern "a.*" }',
        'transfer { source "w.pt"; freeze pattern "a.*" }',
    ),
    ("output  a ,b", "output a, b"),
    ("conv 1.50 lr=1e-3", "conv 1.50 lr=1e-3"),
    ("", ""),
    # comments
    ("# only a comment", "# only a comment"),
    ("relu # after\n   # alone\nbn", "relu  # after\n# alone\nbn"),
    (
        "block b() {\n  relu\n      # before the brace\n}",
        "block b() {\n  relu\n  # before the brace\n}",
    ),
    ("a; b  # on the joined line", "a; b  # on the joined line"),
    ("branch_free = relu\n\n\n# end", "branch_free = relu\n\n# end"),
    ("block b() {  # head\n\n  relu\n\n}  # tail", "block b() {  # head\n  relu\n}  # tail"),
    (
        "parallel add {\n  branch {\n    # identity\n  }\n  branch { relu }\n}",
        "parallel add {\n  branch {\n    # identity\n  }\n  branch { relu }\n}",
    ),
    ("branch_b = relu  # a\n# b", "branch_b = relu  # a\n# b"),
    # consecutive trailing comments align, two spaces after the longest code
    (
        "conv 8    # a\nconv 16 3x3 # b\n\nrelu    # c",
        "conv 8       # a\nconv 16 3x3  # b\n\nrelu  # c",
    ),
    ("block b() {  # x\n  relu  # y\n}", "block b() {  # x\n  relu       # y\n}"),
]


@pytest.mark.parametrize("source, canonical", CASES)
def test_canonical(source, canonical):
    result = fmt.format_text(source)
    assert result == (canonical + "\n" if canonical else "")
    assert fmt.format_text(result) == result


def test_long_lines_split_and_stay_split():
    stmts = [f"conv {100 + i} 3x3 same relu" for i in range(6)]
    source = "; ".join(stmts)
    assert len(source) > fmt.MAX_WIDTH
    assert fmt.format_text(source) == "\n".join(stmts) + "\n"
    body = "repeat 2 { " + source + " }"
    out = fmt.format_text(body)
    assert out == "repeat 2 {\n" + "".join(f"  {s}\n" for s in stmts) + "}\n"
    assert fmt.format_text(out) == out


def test_the_result_is_checked_against_the_source(monkeypatch):
    monkeypatch.setattr(fmt.Printer, "render", lambda self: "conv 2\n")
    with pytest.raises(SpecError, match="meaning") as info:
        fmt.format_text("conv 1\n")
    assert info.value.code == "E108"


def test_syntax_error_is_a_located_spec_error():
    with pytest.raises(SpecError) as info:
        fmt.format_text("input 8x8x1\nconv 8 {\n")
    assert info.value.code == "E103"


# --- the command -------------------------------------------------------------------------------


def test_check_exit_codes_and_writing(tmp_path, capsys):
    good = tmp_path / "good.cnn"
    good.write_text("input 8x8x1\nconv 8 3x3\n")
    bad = tmp_path / "bad.cnn"
    bad.write_text("input   8x8x1\nconv 8 3x3;relu\n")
    assert main(["fmt", "--check", str(good)]) == 0
    assert main(["fmt", "--check", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"would reformat {bad}" in out and str(good) not in out
    assert bad.read_text() == "input   8x8x1\nconv 8 3x3;relu\n"  # --check writes nothing
    assert main(["fmt", str(good), str(bad)]) == 0
    assert bad.read_text() == "input 8x8x1\nconv 8 3x3; relu\n"
    assert main(["fmt", "--check", str(bad)]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_spec_errors_and_missing_files_exit_1(tmp_path, capsys):
    broken = tmp_path / "broken.cnn"
    broken.write_text("conv 8 {\n")
    assert main(["fmt", str(broken)]) == 1
    assert "E103" in capsys.readouterr().err
    assert broken.read_text() == "conv 8 {\n"
    assert main(["fmt", str(tmp_path / "missing.cnn")]) == 1


def test_stdin_to_stdout(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("x=conv 8;relu\n"))
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == "x = conv 8; relu\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("x=conv 8;relu\n"))
    assert main(["fmt", "--check", "-"]) == 1
    assert capsys.readouterr().out == "would reformat -\n"


def test_diff_shows_changes_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "s.cnn"
    spec.write_text("input 8x8x1\nconv 8 3x3;relu\n")
    assert main(["fmt", "--diff", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "-conv 8 3x3;relu\n+conv 8 3x3; relu\n" in out
    assert spec.read_text() == "input 8x8x1\nconv 8 3x3;relu\n"
