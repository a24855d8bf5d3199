"""Issue 14, the language side: spec traps that passed `check`, comments `fmt` lost, and inputs
that ended in a traceback. Each case failed before its fix; the language server's cases are in
test_lsp.py (they speak the real protocol)."""

from __future__ import annotations

import pytest

import cnnspec
from cnnspec import SpecErrors

I = "input 8x8x3\n"
B = "block b(n, act=relu) {\n"

# (source, code, line, column, words in the message, words in the hint or None)
TRAPS = [
    # A misspelt parameter in a condition compared as a word: always false, silently.
    (
        I + B + "  if nn == 1 { relu }\n}\nb 1",
        "E206",
        3,
        6,
        "unknown name 'nn'",
        "did you mean 'n'?",
    ),
    (I + B + "  if 1 != nn { relu }\n}\nb 1", "E206", 3, 11, "unknown name 'nn'", "'n'"),
    (
        I + B + "  if actt == relu { relu }\n}\nb 1",
        "E206",
        3,
        6,
        "unknown name 'actt'",
        "did you mean 'act'?",
    ),
    (
        I + B + "  if n == 2 { relu } else if nn == 1 { tanh }\n}\nb 1",
        "E206",
        3,
        30,
        "unknown name 'nn'",
        "'n'",
    ),
    (I + "if width == 8 { relu }", "E206", 2, 4, "unknown name 'width'", None),
    # Two model lines, two sources: the last one silently won.
    ("model a\nmodel b\n" + I, "E218", 2, 1, "a second 'model' line", "line 1"),
    (
        I + "transfer {\n  source torchvision:resnet18\n  source keras:VGG16\n}",
        "E218",
        4,
        3,
        "a second 'source'",
        "line 3",
    ),
    (
        I + "transfer {\n  source keras:VGG16\n  strict\n  partial\n}",
        "E218",
        5,
        3,
        "a second 'partial'",
        "line 4",
    ),
    # More than 4,300 digits: Python's int() refuses them with a ValueError.
    ("input " + "9" * 5000 + "x3x3", "E214", 1, 7, "5000 digits", None),
]


@pytest.mark.parametrize(
    "source,code,line,col,words,hint", TRAPS, ids=[f"{r[1]}-{i}" for i, r in enumerate(TRAPS)]
)
def test_trap_is_a_located_error(source, code, line, col, words, hint):
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_text(source)
    err = info.value.errors[0]
    assert (err.code, err.span.line, err.span.column) == (code, line, col)
    assert words in err.message
    if hint:
        assert hint in (err.hint or "")


@pytest.mark.parametrize(
    "source",
    [
        I + B + "  if act == relu and n == 1 { relu }\n  if relu != act { tanh }\n}\nb 1",
        I + B + '  if act == "relu" { relu }\n}\nb 1 act=tanh',
        I + B + "  if n == 1 { relu } else { tanh }\n}\nb 2",
        I + "if true == true { relu }",
    ],
)
def test_conditions_that_mean_something_still_compile(source):
    cnnspec.compile_text(source)


# --- fmt: comments at an if/else boundary, comparisons in arguments ------------------------------

IF_ELSE = """input 8x8x3
block b(n) {
  if n == 1 {
    conv 8 3x3
  } # why the first
  # a line before else
  else {
    conv 4 3x3
  }
}
b 1
"""


def _comment_words(text: str) -> list[str]:
    return [w for line in text.splitlines() if "#" in line for w in line[line.index("#") :].split()]


def test_fmt_keeps_comments_at_an_if_else_boundary_in_place(tmp_path):
    from cnnspec.cli import main

    spec = tmp_path / "s.cnn"
    spec.write_text(IF_ELSE)
    assert main(["fmt", str(spec)]) == 0
    result = spec.read_text()
    assert _comment_words(result) == _comment_words(IF_ELSE)
    assert "} else {  # why the first" in result
    assert main(["fmt", "--check", str(spec)]) == 0  # and it is stable


@pytest.mark.parametrize(
    "source",
    [
        I + "conv 8 3x3 bias=(1 == 1)\n",
        I + "block b(n) { conv 8 3x3 bias=(n == 1 or not n > 2) }\nb 1\n",
        I + "block b(n, k=(1 < 2)) { relu }\nb 1\n",
    ],
)
def test_fmt_keeps_parentheses_of_a_comparison_argument(source):
    from cnnspec import fmt

    once = fmt.format_text(source)
    assert "(" in once and fmt.format_text(once) == once
    cnnspec.compile_text(once)


def test_fmt_refuses_to_write_a_result_that_lost_a_comment(tmp_path, monkeypatch, capsys):
    """The safety net itself: a printer that drops a comment is a located error, file untouched."""
    from cnnspec import fmt
    from cnnspec.cli import main

    source = "input 8x8x3\nrelu   # keep me\n"
    spec = tmp_path / "s.cnn"
    spec.write_text(source)
    monkeypatch.setattr(fmt.Printer, "render", lambda self: "input 8x8x3\nrelu\n")
    assert main(["fmt", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "s.cnn:2:8: error[E108]" in err and "Traceback" not in err
    assert spec.read_text() == source


# --- validate, export, import: bad input is a located error with exit 1 or 2 ---------------------


def _run(args, capsys) -> tuple[int, str]:
    from cnnspec.cli import main

    code = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize(
    "data,words",
    [
        (b'\xff\xfe{"version": 1}', "not UTF-8 text (byte 0 is 0xff)"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"nodes": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "nested too deeply"),
    ],
)
def test_validate_refuses_unreadable_documents(tmp_path, capsys, data, words):
    doc = tmp_path / "ir.json"
    doc.write_bytes(data)
    code, err = _run(["validate", str(doc)], capsys)
    assert code == 1 and "E601" in err and words in err


SMALL = "input 8x8x3\nflatten\ndense 10\n"


@pytest.mark.parametrize("opset", ["0", "999", "-1"])
def test_export_refuses_an_opset_torch_cannot_write(tmp_path, capsys, opset):
    pytest.importorskip("torch")
    spec = tmp_path / "s.cnn"
    spec.write_text(SMALL)
    code, err = _run(
        ["export", str(spec), "--onnx", str(tmp_path / "o.onnx"), "--opset", opset], capsys
    )
    assert code == 2 and "--opset must be from" in err and f"received {opset}" in err
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize(
    "source,words",
    [
        ("input 8\ndense 1000000000\n", "GiB of parameters"),
        ("input 100000x100000x3\nconv 8 3x3\n", "GiB of activations"),
    ],
)
def test_export_estimates_the_size_before_allocating(tmp_path, capsys, source, words):
    pytest.importorskip("torch")
    spec = tmp_path / "s.cnn"
    spec.write_text(source)
    code, err = _run(
        ["export", str(spec), "--onnx", str(tmp_path / "o.onnx"), "--max-memory", "8GiB"], capsys
    )
    assert code == 1 and "E320" in err and "more than --max-memory 8.0 GiB" in err
    assert words in err


def test_export_within_the_budget_still_writes(tmp_path, capsys):
    pytest.importorskip("onnx")
    spec = tmp_path / "s.cnn"
    spec.write_text(SMALL)
    code, _ = _run(
        ["export", str(spec), "--onnx", str(tmp_path / "o.onnx"), "--opset", "17"], capsys
    )
    assert code == 0 and (tmp_path / "o.onnx").stat().st_size > 0


def _keras_file(path, files: dict) -> str:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return str(path)


@pytest.mark.parametrize(
    "source",
    [
        "keras:__class__",
        "keras:__init__",
        "keras:resnet50",
        "keras:_private",
        "BAD_FILE",
        "BAD_CONFIG",
        "UNKNOWN_CLASS",
    ],
)
def test_import_refuses_what_is_no_keras_model(tmp_path, capsys, source):
    pytest.importorskip("keras")
    if source == "BAD_FILE":
        (tmp_path / "m.keras").write_bytes(b"not a zip")
        source = str(tmp_path / "m.keras")
    elif source == "BAD_CONFIG":
        source = _keras_file(tmp_path / "m.keras", {"config.json": '{"class_name": 5'})
    elif source == "UNKNOWN_CLASS":
        source = _keras_file(
            tmp_path / "m.keras",
            {"config.json": '{"class_name": "Functional", "config": {}}', "metadata.json": "{}"},
        )
    code, err = _run(["import", source, "-o", str(tmp_path / "out.cnn")], capsys)
    assert code == 1 and "E410" in err
    assert not (tmp_path / "out.cnn").exists()


def test_a_100_character_name_runs_in_generated_keras_code(tmp_path):
    """A long name made the Keras generator wrap one input as a list: Flatten()([x]) failed."""
    keras = pytest.importorskip("keras")
    import importlib.util

    import numpy as np

    from cnnspec.backends.keras_source import render

    name = "a" * 100
    model = cnnspec.compile_text(f"input 8x8x3\n{name} = conv 4 3x3\nflatten\ndense 2\n")
    out = tmp_path / "gen.py"
    out.write_text(render(model))
    spec = importlib.util.spec_from_file_location("gen_long_name", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.build_model()
    assert net.count_params() == model.params
    assert tuple(net(np.zeros((1, 8, 8, 3), "float32")).shape) == (1, 2)
    assert isinstance(net.get_layer(name), keras.layers.Conv2D)
