"""Per-model defaults: `defaults { bn eps=1e-3 momentum=0.99; conv nobias }` sets the arguments
every layer of a kind starts from; a line's own arguments win; the IR holds the effective
arguments; `cnnspec fmt` prints the section back; mistakes are located errors."""

from __future__ import annotations

import pytest

import cnnspec
from cnnspec.fmt import format_text
from cnnspec.ir import Model

SPEC = """model keras_style
input 16x16x3
conv 8 3x3 relu
batchnorm
residual {
  conv 8 3x3 bias=true valid
  zeropad 1
  bn eps=1e-5
}
maxpool 2
defaults {
  bn eps=1e-3 momentum=0.99  # Keras' BatchNormalization
  conv nobias same
  pool ceil=true
}
"""


def _args(model: Model) -> dict[str, dict]:
    return {n.name: n.layer.args() for n in model.nodes[1:]}


def test_defaults_apply_to_every_keyword_of_the_kind_and_a_line_overrides_them():
    args = _args(cnnspec.compile_text(SPEC))
    assert args["conv1"] == {
        "filters": 8,
        "kernel": (3, 3),
        "padding": "same",
        "bias": False,
        "activation": "relu",
    }
    assert args["bn1"] == {"eps": 1e-3, "momentum": 0.99}  # batchnorm is bn
    assert args["conv2"] == {"filters": 8, "kernel": (3, 3)}  # bias, valid: the line
    assert args["bn2"] == {"momentum": 0.99}  # eps=1e-5: the line
    # maxpool's own preset (op=max) is kept, the pool default added
    assert args["maxpool1"] == {"ceil": True}


def test_a_spec_with_defaults_equals_the_spec_that_writes_them_out():
    written = """input 16x16x3
conv 8 3x3 relu same nobias
bn eps=1e-3 momentum=0.99
residual {
  conv 8 3x3 bias=true valid
  zeropad 1
  bn eps=1e-5 momentum=0.99
}
maxpool 2 ceil=true
"""
    a, b = cnnspec.compile_text(SPEC), cnnspec.compile_text(written)
    assert [(n.name, n.layer, n.shape, n.params) for n in a.nodes] == [
        (n.name, n.layer, n.shape, n.params) for n in b.nodes
    ]


def test_the_ir_holds_the_effective_arguments_through_json():
    model = cnnspec.compile_text(SPEC)
    again = Model.model_validate_json(model.to_json())
    assert again.node("bn1").layer.eps == 1e-3 and again.node("bn1").layer.momentum == 0.99
    assert again.node("conv1").layer.bias is False


def test_fmt_prints_the_defaults_section_back_and_is_stable():
    text = format_text(SPEC)
    assert "defaults {" in text and "bn eps=1e-3 momentum=0.99" in text
    assert "# Keras' BatchNormalization" in text
    assert format_text(text) == text
    assert _args(cnnspec.compile_text(text)) == _args(cnnspec.compile_text(SPEC))


@pytest.mark.parametrize(
    "section,code,line,col,words",
    [
        ("defaults { conv 3 }", "E203", 2, 17, "named"),
        ("defaults {\n  bn epsilon=1e-3\n}", "E204", 3, 6, "epsilon"),
        ("defaults { convv bias=false }", "E202", 2, 12, "convv"),
        ("defaults { x = bn }", "E226", 2, 12, "layer lines"),
        ("defaults { bn eps=1e-3; batchnorm eps=1e-4 }", "E219", 2, 25, "eps"),
    ],
)
def test_defaults_mistakes_are_located(section, code, line, col, words):
    with pytest.raises(cnnspec.SpecErrors) as info:
        cnnspec.compile_text(f"input 8x8x3\n{section}\nbn\n")
    err = info.value.errors[0]
    assert (err.code, err.span.line, err.span.column) == (code, line, col)
    assert words in err.message


def test_a_bad_default_value_is_reported_at_a_line_that_uses_it():
    with pytest.raises(cnnspec.SpecErrors) as info:
        cnnspec.compile_text("input 8x8x3\ndefaults { bn momentum=2 }\nconv 4 3x3\nbn\n")
    assert info.value.errors[0].span.line == 4
