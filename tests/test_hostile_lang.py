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
    (I + B + "  if nn == 1 { relu }\n}\nb 1", "E206", 3, 6, "unknown name 'nn'",
     "did you mean 'n'?"),
    (I + B + "  if 1 != nn { relu }\n}\nb 1", "E206", 3, 11, "unknown name 'nn'", "'n'"),
    (I + B + "  if actt == relu { relu }\n}\nb 1", "E206", 3, 6, "unknown name 'actt'",
     "did you mean 'act'?"),
    (I + B + "  if n == 2 { relu } else if nn == 1 { tanh }\n}\nb 1", "E206", 3, 30,
     "unknown name 'nn'", "'n'"),
    (I + "if width == 8 { relu }", "E206", 2, 4, "unknown name 'width'", None),
    # Two model lines, two sources: the last one silently won.
    ("model a\nmodel b\n" + I, "E218", 2, 1, "a second 'model' line", "line 1"),
    (I + "transfer {\n  source torchvision:resnet18\n  source keras:VGG16\n}", "E218", 4, 3,
     "a second 'source'", "line 3"),
    (I + "transfer {\n  source keras:VGG16\n  strict\n  partial\n}", "E218", 5, 3,
     "a second 'partial'", "line 4"),
    # More than 4,300 digits: Python's int() refuses them with a ValueError.
    ("input " + "9" * 5000 + "x3x3", "E214", 1, 7, "5000 digits", None),
]


@pytest.mark.parametrize("source,code,line,col,words,hint", TRAPS,
                         ids=[f"{r[1]}-{i}" for i, r in enumerate(TRAPS)])
def test_trap_is_a_located_error(source, code, line, col, words, hint):
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_text(source)
    err = info.value.errors[0]
    assert (err.code, err.span.line, err.span.column) == (code, line, col)
    assert words in err.message
    if hint:
        assert hint in (err.hint or "")


@pytest.mark.parametrize("source", [
    I + B + "  if act == relu and n == 1 { relu }\n  if relu != act { tanh }\n}\nb 1",
    I + B + '  if act == "relu" { relu }\n}\nb 1 act=tanh',
    I + B + "  if n == 1 { relu } else { tanh }\n}\nb 2",
    I + "if true == true { relu }",
])
def test_conditions_that_mean_something_still_compile(source):
    cnnspec.compile_text(source)
