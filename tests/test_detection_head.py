"""The `detect` head in the language: located errors for a head that does not fit its feature
maps, the HeadInfo that training and decoding read (cnnspec.detection.heads), the formatter's
round trip, `summary` and `check`, and the same decoded boxes from torch and Keras with the
same weights. Counts and MACs are in tests/test_layers.py (rows), the zoo's parity with
torchvision in tests/test_zoo_detection.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec.detection.heads import head_infos
from cnnspec.detection.priors import anchor_boxes, points
from cnnspec.fmt import format_text

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

NECK = """model neck
input 64x64x3
c3 = conv 8 3x3 stride=8 padding=1
c4 = conv 8 3x3 stride=2 padding=1
c5 = conv 16 3x3 stride=2 padding=1
"""

# (the head's line, code, column, words of the message)
ERRORS = [
    ("detect c3 c4 classes=3 strides=(8, 8)", "E315", 1, "level 1 (4x4x8) has stride 16"),
    ("h = detect c3 c4 classes=3 strides=(4, 8)", "E315", 5, "level 0 (8x8x8) has stride 8"),
    ("detect c3 c4 classes=3 strides=8", "E316", 1, "2 feature map(s) but strides= gives 1"),
    ("detect c3 c4 classes=3 strides=(8, 16) sizes=32", "E316", 1, "anchor sizes for 1"),
    ("detect c4 c5 classes=3 strides=(16, 32)", "E317", 1, "needs equal channels"),
    ("detect c3 c4 classes=0 strides=(8, 16)", "E205", 14, "classes"),
    ("detect c3 c9 classes=3 strides=(8, 16)", "E220", 11, "unknown tensor 'c9'"),
    ("detect c3 c4 classes=3 strides=(8, 16) predictor=2", "E205", 40, "must be odd"),
    ("g = gap from=c3\ndetect g classes=3 strides=8", "E302", 1, "level 0 is a vector"),
    ("detect c3 c4 classes=3 strides=(8, 16) norm=gn groups=3", "E313", 1, "group norm"),
]


@pytest.mark.parametrize("line,code,column,words", ERRORS, ids=[e[1] + e[3] for e in ERRORS])
def test_a_head_that_does_not_fit_is_a_located_error(line, code, column, words):
    with pytest.raises(cnnspec.SpecErrors) as caught:
        cnnspec.compile_text(NECK + line)
    (err,) = [e for e in caught.value.errors]
    assert err.code == code
    assert err.span.line == NECK.count("\n") + line.count("\n") + 1
    assert err.span.column == column
    assert words in err.message
    if code in ("E315", "E316", "E317"):
        assert err.hint


def test_the_stride_error_hints_the_strides_that_would_fit():
    with pytest.raises(cnnspec.SpecErrors) as caught:
        cnnspec.compile_text(NECK + "detect c3 c4 classes=3 strides=(4, 8)")
    assert "strides=(8, 16)" in caught.value.errors[0].hint


def test_check_reports_it_at_the_line_without_a_traceback(tmp_path):
    spec = tmp_path / "bad.cnn"
    spec.write_text(NECK + "detect c3 c4 classes=3 strides=(8, 8)\n")
    run = subprocess.run(
        [sys.executable, "-m", "cnnspec", "check", str(spec)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert f"{spec}:6:1: error[E315]" in run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr


def test_head_info_follows_the_ir():
    model = cnnspec.compile_text(
        NECK + "out = detect c3 c4 classes=5 strides=(8, 16) sizes=(16, 32) octaves=2 "
        "ratios=(0.5, 1.0) objectness scores=softmax box_weights=(10.0, 10.0, 5.0, 5.0)"
    )
    (info,) = head_infos(model)
    assert info.output == "out"
    assert info.classes == 5 and info.extra == "objectness" and info.activation == "softmax"
    assert info.coder == "offsets" and info.coder_weights == (10.0, 10.0, 5.0, 5.0)
    g = info.geometry
    assert g.strides == (8, 16) and g.shapes == ((8, 8), (4, 4))
    # level 0: ratio 0.5 then 1.0 (height / width), each with the sizes 16 and int(16 * 2^0.5)
    # = 22 (torchvision's truncation): width size / sqrt(ratio), height size * sqrt(ratio)
    np.testing.assert_allclose(
        g.anchors[0], ((22.627, 11.314), (31.113, 15.556), (16, 16), (22, 22)), atol=1e-3
    )
    assert [len(level) for level in g.anchors] == [4, 4]
    assert g.count == model.node("out").shape[0] == (64 + 16) * 4
    assert info.columns == model.node("out").shape[1] == 10


def test_anchor_free_head_info_and_several_heads_in_output_order():
    model = cnnspec.compile_text(
        NECK + "a = detect c3 c4 classes=2 strides=(8, 16) centerness offset=0.5\n"
        "b = detect c5 classes=1 strides=32 sizes=64 separate\noutput b, a"
    )
    b, a = head_infos(model)
    assert (b.output, a.output) == ("b", "a")
    assert a.coder == "distances" and a.geometry.anchors is None and a.extra == "centerness"
    assert points(a.geometry)[:2].tolist() == [[4, 4], [12, 4]]
    # offset 0: torchvision's anchors are centred on the cells' corners (0, 0), (32, 0)...
    assert anchor_boxes(b.geometry).tolist() == [[-32, -32, 32, 32], [0, -32, 64, 32],
                                                 [-32, 0, 32, 64], [0, 0, 64, 64]]  # fmt: skip


@pytest.mark.parametrize(
    "name", ["retinanet_resnet50_fpn", "fcos_resnet50_fpn", "ssdlite320_mobilenet_v3_large"]
)
def test_zoo_specs_format_to_themselves(name):
    path = SPECS / f"{name}.cnn"
    if not path.exists():
        pytest.skip(f"{path.name} is not written yet")
    once = format_text(path.read_text())
    assert format_text(once) == once
    assert cnnspec.compile_text(once).params == cnnspec.compile_file(path).params


def test_summary_shows_the_predictions_per_image(tmp_path):
    spec = tmp_path / "head.cnn"
    spec.write_text(NECK + "detect c3 c4 classes=3 strides=(8, 16) tower=1\n")
    run = subprocess.run(
        [sys.executable, "-m", "cnnspec", "summary", "--explain", str(spec)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "80x7" in run.stdout  # 8*8 + 4*4 priors, 4 box + 3 classes
    assert "priors: (8*8 + 4*4) * 1 anchor(s) = 80" in run.stdout


def test_torch_and_keras_decode_the_same_boxes_from_the_same_weights():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")  # before TensorFlow, in one process
    pytest.importorskip("keras")
    from cnnspec.backends.keras import build as keras_build
    from cnnspec.backends.torch import build as torch_build
    from cnnspec.convert import set_keras_weights, torch_to_keras
    from cnnspec.detection.postprocess import decode_offsets

    model = cnnspec.compile_text(
        NECK + "out = detect c3 c4 classes=3 strides=(8, 16) sizes=(16, 32) octaves=2 "
        "ratios=(0.5, 1.0, 2.0) tower=2"
    )
    net = torch_build(model).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    kmodel = keras_build(model)
    set_keras_weights(kmodel, torch_to_keras(model, net.state_dict()))
    x = np.random.default_rng(1).uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        got_torch = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    got_keras = np.asarray(kmodel(x, training=False))
    (info,) = head_infos(model)
    anchors = anchor_boxes(info.geometry)
    for image in range(2):
        boxes_t = decode_offsets(anchors, got_torch[image, :, :4], info.coder_weights)
        boxes_k = decode_offsets(anchors, got_keras[image, :, :4], info.coder_weights)
        np.testing.assert_allclose(boxes_k, boxes_t, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got_keras[..., 4:], got_torch[..., 4:], rtol=1e-4, atol=1e-4)
