"""ONNX export of a dense head with its decoding (and NMS behind a flag), run in
onnxruntime: the same boxes and scores as cnnspec's own decoding of the torch output, and
with NMS the same detections as detect(), its top-k candidates included."""

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from cnnspec.compiler import compile_text
from cnnspec.detection.reading import Settings, decode, detect

SPEC = """model tiny_det
input 32x32x3
conv 8 3x3 same relu; maxpool 2
conv 8 3x3 same relu; f = maxpool 2
detect f classes=3 strides=4 objectness offset=0.5 tower=0
"""
# two levels, and SSD's softmax scores (top-k per class, not per level)
SOFTMAX = """model tiny_ssd
input 32x32x3
conv 8 3x3 same relu; p = maxpool 2
conv 8 3x3 same relu; f = maxpool 2
detect p f classes=4 strides=(2, 4) scores=softmax offset=0.5 tower=0
"""


@pytest.fixture(params=[SPEC, SOFTMAX], ids=["sigmoid", "softmax"])
def built(request):
    from cnnspec.backends.torch import build
    from cnnspec.detection.heads import head_infos

    model = compile_text(request.param)
    torch.manual_seed(3)
    net = build(model).eval()
    for p in net.parameters():  # scores spread over [0, 1], some boxes overlapping
        p.data.mul_(3)
    return model, net, head_infos(model)[0]


def _raw(net, images):
    with torch.no_grad():
        return net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()


def test_decoded_export_equals_cnnspecs_decoding(built, tmp_path):
    from cnnspec.train.dense_onnx import export_decoded

    model, net, head = built
    export_decoded(net, model, head, tmp_path / "d.onnx")
    images = np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "d.onnx"))
    boxes, scores = session.run(None, {"input": images.transpose(0, 3, 1, 2)})
    want_boxes, want_scores = decode(head, _raw(net, images))
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    np.testing.assert_allclose(boxes, np.clip(want_boxes, 0, 32), atol=1e-4)


def test_export_with_nms_keeps_what_predict_keeps(built, tmp_path):
    from cnnspec.train.dense_onnx import export_decoded

    model, net, head = built
    settings = Settings(score_threshold=0.3, iou_threshold=0.4, max_detections=10)
    export_decoded(net, model, head, tmp_path / "n.onnx", nms=settings)
    session = ort.InferenceSession(str(tmp_path / "n.onnx"))
    for seed in range(3):
        image = np.random.default_rng(seed).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
        boxes, scores, classes = session.run(None, {"input": image.transpose(0, 3, 1, 2)})
        (want,) = detect(head, _raw(net, image), framework="torch", settings=settings,
                         image_size=(32, 32))  # fmt: skip
        candidates = (decode(head, _raw(net, image))[1] > 0.3).sum()
        assert 0 < len(want.scores) < candidates  # suppression removed some
        np.testing.assert_array_equal(classes, want.classes)
        np.testing.assert_allclose(scores, want.scores, atol=1e-5)
        np.testing.assert_allclose(boxes, want.boxes, atol=1e-4)


def test_export_with_nms_keeps_the_top_k_candidates(built, tmp_path):
    """top_k per level (sigmoid) or per class (softmax) in the graph, as detect() cuts."""
    from cnnspec.train.dense_onnx import export_decoded

    model, net, head = built
    settings = Settings(score_threshold=0.2, iou_threshold=0.4, max_detections=100, top_k=5)
    export_decoded(net, model, head, tmp_path / "k.onnx", nms=settings)
    session = ort.InferenceSession(str(tmp_path / "k.onnx"))
    for seed in range(3):
        image = np.random.default_rng(seed).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
        boxes, scores, classes = session.run(None, {"input": image.transpose(0, 3, 1, 2)})
        raw = _raw(net, image)
        (want,) = detect(head, raw, framework="torch", settings=settings, image_size=(32, 32))
        (every,) = detect(head, raw, framework="torch", settings=replace(settings, top_k=None),
                          image_size=(32, 32))  # fmt: skip
        assert 0 < len(want.scores) < len(every.scores)  # the top-k cut some detections
        groups = head.classes - 1 if head.activation == "softmax" else len(head.geometry.shapes)
        assert len(want.scores) <= 5 * groups
        np.testing.assert_array_equal(classes, want.classes)
        np.testing.assert_allclose(scores, want.scores, atol=1e-5)
        np.testing.assert_allclose(boxes, want.boxes, atol=1e-4)


def test_cli_export_decode_flags(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = tmp_path / "tiny_det.cnn"
    spec.write_text(SPEC)
    env = {**os.environ, "PYTHONPATH": str(root)}

    def export(*flags):
        return subprocess.run(
            [sys.executable, "-m", "cnnspec", "export", str(spec), "--onnx", str(tmp_path / "o.onnx"), *flags],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    assert export("--nms").returncode == 2  # NMS without decoding
    done = export("--decode", "--nms", "--max-detections", "5")
    assert done.returncode == 0, done.stderr
    session = ort.InferenceSession(str(tmp_path / "o.onnx"))
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "classes"]
    image = np.zeros((1, 3, 32, 32), np.float32)
    assert len(session.run(None, {"input": image})[1]) <= 5
    # --top-k 2: two candidates of the one level reach NMS; --top-k 0: all of them
    done = export("--decode", "--nms", "--top-k", "2", "--score-threshold", "0")
    assert done.returncode == 0, done.stderr
    image = np.random.default_rng(0).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)
    run = ort.InferenceSession(str(tmp_path / "o.onnx")).run
    assert len(run(None, {"input": image})[1]) <= 2
    assert export("--decode", "--nms", "--top-k", "0", "--score-threshold", "0").returncode == 0
    assert len(ort.InferenceSession(str(tmp_path / "o.onnx")).run(None, {"input": image})[1]) > 2
    assert export("--decode", "--nms", "--top-k", "-3").returncode == 2
