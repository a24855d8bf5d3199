"""Model scaling: round_filters / round_repeats with the papers' rounding (checked against
torchvision's EfficientNet config helpers), named scales in one spec, `--scale NAME` on the
commands that compile, and the scale recorded in the IR."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import cnnspec
from cnnspec.ir import Model

ROOT = Path(__file__).resolve().parent.parent

# EfficientNet B0..B7: (width, depth) as torchvision and keras.applications define them
EFFICIENTNET = {
    "b0": (1.0, 1.0),
    "b1": (1.0, 1.1),
    "b2": (1.1, 1.2),
    "b3": (1.2, 1.4),
    "b4": (1.4, 1.8),
    "b5": (1.6, 2.2),
    "b6": (1.8, 2.6),
    "b7": (2.0, 3.1),
}

SPEC = """scales {
  small width=0.5 depth=0.5 input=32x32x3 rate=0.1
  big width=1.2 depth=1.4 input=40x40x3 rate=0.3
}
input 224x224x3
block stage(c, n) {
  repeat round_repeats(n) { conv round_filters(c) 3x3 same }
}
conv round_filters(32) 3x3 same
stage 16 1
stage 24 3
gap
dropout rate
dense 10
"""


def _value(expr: str, width: float, depth: float):
    model = cnnspec.compile_text(
        f"scales {{ s width={width} depth={depth} }}\ninput 4\ndense {expr}\n"
    )
    return model.nodes[-1].layer.units


@pytest.mark.parametrize("scale", sorted(EFFICIENTNET))
def test_rounding_is_torchvisions_efficientnet_rounding(scale):
    tv = pytest.importorskip("torchvision.models.efficientnet")
    width, depth = EFFICIENTNET[scale]
    for channels in (16, 24, 32, 40, 80, 112, 192, 320, 1280):
        assert _value(
            f"round_filters({channels})", width, depth
        ) == tv._MBConvConfig.adjust_channels(channels, width), (scale, channels)
    for layers in (1, 2, 3, 4):
        assert _value(f"round_repeats({layers})", width, depth) == tv.MBConvConfig.adjust_depth(
            layers, depth
        ), (scale, layers)


def test_make_divisible_is_torchvisions():
    utils = pytest.importorskip("torchvision.models._utils")
    for v in (3, 7.5, 12, 17.28, 19.2, 33, 100, 999.9):
        for d in (4, 8, 16):
            assert _value(f"make_divisible({v}, {d})", 1, 1) == utils._make_divisible(v, d)


def test_the_first_scale_is_the_default_and_another_is_selected_by_name():
    small = cnnspec.compile_text(SPEC)
    big = cnnspec.compile_text(SPEC, scale="big")
    assert (small.scale, big.scale) == ("small", "big")
    assert small.input_shape == (32, 32, 3) and big.input_shape == (40, 40, 3)
    # small: 32*0.5 -> 16; 16*0.5 = 8; 24*0.5 = 12 -> 16 (8 is under 90% of 12)
    assert [n.shape[-1] for n in small.nodes if n.kind == "conv"] == [16, 8, 16, 16]
    # big: 32*1.2 -> 40; 16*1.2 = 19.2 -> 24; 24*1.2 = 28.8 -> 32; repeats 2 and ceil(4.2) = 5
    assert [n.shape[-1] for n in big.nodes if n.kind == "conv"] == [40, 24, 24] + [32] * 5
    assert small.node("dropout1").layer.rate == 0.1 and big.node("dropout1").layer.rate == 0.3
    assert Model.model_validate_json(big.to_json()).scale == "big"


def test_a_spec_without_scales_rounds_with_multipliers_of_one():
    model = cnnspec.compile_text("input 8x8x3\nconv round_filters(30) 3x3\n")
    assert model.scale is None and model.nodes[-1].shape[-1] == 32


@pytest.mark.parametrize(
    "text,scale,code,line",
    [
        (SPEC, "huge", "E228", 1),
        ("input 8x8x3\nrelu\n", "big", "E228", 1),
        ("scales { a width=0 }\ninput 8x8x3\n", None, "E228", 1),
        ("scales { a width=1; a depth=2 }\ninput 8x8x3\n", None, "E207", 1),
        ("input 8x8x3\nconv round_filter(8) 3x3\n", None, "E227", 2),
        ("input 8x8x3\nconv max(8) 3x3\n", None, "E227", 2),
    ],
)
def test_scale_mistakes_are_located(text, scale, code, line):
    with pytest.raises(cnnspec.SpecErrors) as info:
        cnnspec.compile_text(text, scale=scale)
    err = info.value.errors[0]
    assert (err.code, err.span.line) == (code, line)


def test_fmt_keeps_scales_and_calls():
    from cnnspec.fmt import format_text

    text = format_text(SPEC)
    assert "round_filters(32)" in text and "big width=1.2 depth=1.4" in text
    assert format_text(text) == text


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "cnnspec", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_the_command_line_selects_a_scale(tmp_path):
    spec = tmp_path / "net.cnn"
    spec.write_text(SPEC)
    done = _cli("summary", str(spec), "--scale", "big", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert "40x40" in done.stdout or json.loads(done.stdout)
    ir = _cli("ir", str(spec), "--scale", "big")
    assert ir.returncode == 0, ir.stderr
    assert json.loads(ir.stdout)["scale"] == "big"
    bad = _cli("check", str(spec), "--scale", "b9")
    assert bad.returncode == 1 and "E228" in bad.stderr and "small, big" in bad.stderr


def test_the_summary_header_names_the_scale():
    from cnnspec.summary import render_json, render_table

    for scale in ("small", "big"):
        model = cnnspec.compile_text(SPEC, scale=scale)
        assert render_table(model).splitlines()[0] == f"{model.name} (scale {scale})"
        assert render_table(model, markdown=True).startswith(f"## {model.name} (scale {scale})")
        assert json.loads(render_json(model))["scale"] == scale
    assert cnnspec.compile_text(SPEC).scale == "small"  # the first, when none is named
    plain = cnnspec.compile_text("model plain\ninput 8x8x3\nconv 4 3x3\n")
    assert render_table(plain).splitlines()[0] == "plain"
    assert json.loads(render_json(plain))["scale"] is None
