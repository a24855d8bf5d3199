"""Normalisation belongs to the network (issue 15, item 3).

A spec may declare its input preprocessing on the input line; the built models, the generated
source and the ONNX export apply it. A spec that does not declare it is trained with the
normalisation fitted to the data, and that travels in the weights file: a weights file copied
alone to another folder predicts and evaluates as in its run folder.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec import SpecErrors
from cnnspec.cli import main
from cnnspec.summary import render_table

ROOT = Path(__file__).resolve().parents[1]
DECLARED = ROOT / "examples" / "digits_preprocessed.cnn"
# the same network without the declaration, standardised by a `normalize` fitted to the data
PLAIN = (
    DECLARED.read_text()
    .replace(" scale=1/255 mean=0.305 std=0.319", "")
    .replace("augment crop 1", "augment crop 1 normalize")
)
WEIGHTS = {"torch": "best.safetensors", "keras": "best.weights.h5"}


# --- the language ---------------------------------------------------------------------------

RGB = "model rgb\ninput 12x12x3 scale=1/255 mean=(0.485, 0.456, 0.406) std=(0.229, 0.224, 0.225)\n"
NET = "conv 4 3x3 same nobias\nbn\nrelu\nmaxpool 2\nflatten\ndense 5 softmax\n"


def test_the_input_line_declares_preprocessing_kept_in_the_ir():
    model = cnnspec.compile_text(RGB + NET)
    node = model.nodes[1]
    assert (node.name, node.kind, node.inputs) == ("preprocess", "preprocess", ["input"])
    assert node.layer.scale == pytest.approx(1 / 255)
    assert node.layer.mean == (0.485, 0.456, 0.406) and node.layer.std == (0.229, 0.224, 0.225)
    assert node.params == 0 and node.macs == 0
    assert cnnspec.Model.model_validate_json(model.to_json()) == model
    # no parameters: the counts are those of the same network without the declaration
    plain = cnnspec.compile_text("model rgb\ninput 12x12x3\n" + NET)
    assert model.totals() == plain.totals()
    text = render_table(model)
    assert "preprocess: (x * 0.00392157 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)" in text
    assert "preprocess" not in render_table(plain)


def test_a_spec_without_the_declaration_is_unchanged():
    model = cnnspec.compile_text("model rgb\ninput 12x12x3\n" + NET)
    assert [n.kind for n in model.nodes][:2] == ["input", "conv"]


@pytest.mark.parametrize(
    "line, code, column, words",
    [
        ("input 8x8x3 mean=(0.4, 0.5) std=0.2", "E314", 13, "2 mean values for 3 channels"),
        ("input 8x8x3 mean=0.4 std=(1, 2, 3, 4)", "E314", 22, "4 std values for 3 channels"),
        ("input 8x8x3 std=(0.4, 0, 1)", "E205", 13, "std must be greater than 0"),
        ("input 8x8x3 scale=-1", "E205", 13, "scale must be greater than 0"),
        ("input 8x8x3 means=0.4", "E204", 13, "has no argument 'means'"),
        ("input 8x8x3 0.5", "E204", 13, "named arguments only"),
        ("input 80 mean=0.5", "E314", 1, "for images, not vectors"),
    ],
)
def test_a_wrong_declaration_is_a_located_error(line, code, column, words):
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_text(f"model m\n{line}\nflatten\ndense 2\n")
    (err,) = info.value.errors
    assert (err.code, err.span.line, err.span.column) == (code, 2, column)
    assert words in err.message


def test_fmt_prints_the_declaration_back(tmp_path):
    path = tmp_path / "n.cnn"
    path.write_text("model m\ninput 8x8x3  scale = 1/255 mean=( 0.5,0.4 , 0.3) std=0.25\nflatten\n")
    assert main(["fmt", str(path)]) == 0
    text = path.read_text()
    assert "input 8x8x3 scale=1/255 mean=(0.5, 0.4, 0.3) std=0.25\n" in text
    assert cnnspec.compile_file(path).nodes[1].layer.mean == (0.5, 0.4, 0.3)


# --- the frameworks apply it ------------------------------------------------------------------


def test_torch_onnx_generated_source_and_keras_agree_on_raw_pixels(tmp_path):
    """All four read pixel values 0..255; the torch model equals the undeclared network fed
    ((x / 255 - mean) / std) by hand, so they agree on the right answer, not on any."""
    import torch

    from cnnspec.backends.keras import build as keras_build
    from cnnspec.convert import load_torch_into_keras
    from cnnspec.torch import build, export_onnx, source_code

    model = cnnspec.compile_text(RGB + NET)
    torch.manual_seed(0)
    net = build(model).eval()
    state = net.state_dict()
    assert not any("preprocess" in k for k in state)  # constants, not state
    x = torch.randint(0, 256, (4, 3, 12, 12)).float()
    with torch.no_grad():
        want = net(x)
        plain = build(cnnspec.compile_text("model rgb\ninput 12x12x3\n" + NET)).eval()
        plain.load_state_dict(state)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        torch.testing.assert_close(want, plain((x / 255 - mean) / std), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(want, plain(x / 255), atol=1e-3)  # the test can fail

    path = tmp_path / "gen.py"
    path.write_text(source_code(model))
    spec = importlib.util.spec_from_file_location("gen_preprocessed", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    generated = mod.build_model().eval()
    generated.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(generated(x), want, rtol=1e-5, atol=1e-6)

    ort = pytest.importorskip("onnxruntime")
    export_onnx(net, model, tmp_path / "net.onnx")
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)

    kmodel = keras_build(model)
    assert kmodel.count_params() == model.params  # Rescaling, Normalization: no weights
    load_torch_into_keras(kmodel, model, state)
    got = np.asarray(kmodel(x.permute(0, 2, 3, 1).numpy(), training=False))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)


# --- training: the weights file carries it ----------------------------------------------------


def _digits(folder: Path) -> tuple[list[Path], np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for i in range(8):
        paths.append(folder / f"d{i}.png")
        Image.fromarray((digits.images[i] / 16 * 255).astype(np.uint8)).save(paths[-1])
    return paths, digits.target[:8]


@pytest.fixture(
    scope="module", params=["torch-declared", "torch-plain", "keras-declared", "keras-plain"]
)
def run(request, tmp_path_factory):
    backend, kind = request.param.split("-")
    folder = tmp_path_factory.mktemp(request.param)
    spec = folder / "net.cnn"
    spec.write_text(DECLARED.read_text() if kind == "declared" else PLAIN)
    threads = ["--threads", "1"] if backend == "torch" else []
    argv = ["train", str(spec), "--data", "digits", "--out", str(folder / "run")]
    argv += ["--backend", backend, "--progress", "off", *threads]
    assert main(argv) == 0
    return backend, kind, spec, folder / "run"


def _predict(capsys, spec: Path, weights: Path, images) -> list:
    capsys.readouterr()
    argv = ["predict", str(spec), *map(str, images), "--weights", str(weights)]
    assert main([*argv, "--top", "2", "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_after_moving_the_weights_file_gives_the_same_answer(run, tmp_path, capsys):
    """The issue's case: best.safetensors copied elsewhere answered '8, p = 0.97' for a 7."""
    backend, _kind, spec, out = run
    images, labels = _digits(tmp_path)
    moved = tmp_path / "elsewhere" / WEIGHTS[backend]
    moved.parent.mkdir()
    shutil.copy(out / WEIGHTS[backend], moved)
    here = _predict(capsys, spec, out / WEIGHTS[backend], images)
    there = _predict(capsys, spec, moved, images)
    for a, b in zip(here, there):
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        for ta, tb in zip(a["top"], b["top"]):
            assert ta["probability"] == pytest.approx(tb["probability"], abs=1e-6)
    right = sum(it["top"][0]["index"] == y for it, y in zip(there, labels))
    assert right >= 6  # two epochs learn the digits: the pixels were the ones it trained on


def test_the_weights_file_carries_the_normalisation(run):
    from cnnspec.weights import normalization

    backend, kind, _spec, out = run
    carried = normalization.read(out / WEIGHTS[backend])
    result = json.loads((out / "result.json").read_text())
    if kind == "declared":  # the network standardises: nothing fitted, nothing carried
        assert carried is None and result["normalize"] is None
    else:
        assert carried == result["normalize"] and len(carried["mean"]) == 1
        assert 0.2 < carried["mean"][0] < 0.4 and carried["std"][0] > 0.2  # digits in [0, 1]


def test_evaluate_after_moving_the_weights_file_gives_the_same_metrics(run, tmp_path, capsys):
    backend, _kind, spec, out = run
    moved = tmp_path / WEIGHTS[backend]
    shutil.copy(out / WEIGHTS[backend], moved)
    got = []
    for weights in (out / WEIGHTS[backend], moved):
        capsys.readouterr()
        argv = ["evaluate", str(spec), "--weights", str(weights), "--data", "digits"]
        assert main([*argv, "--format", "json"]) == 0
        got.append(json.loads(capsys.readouterr().out)["metrics"])
    assert got[0] == pytest.approx(got[1], rel=1e-5)
    result = json.loads((out / "result.json").read_text())
    assert got[1]["accuracy"] == pytest.approx(result["metrics"]["accuracy"])


def test_a_declaring_spec_trains_on_pixels_without_a_second_normalize():
    from cnnspec.train.pixels import TO_PIXELS, augment_words

    declared = cnnspec.compile_text(DECLARED.read_text().replace("crop 1", "crop 1 normalize"))
    said = []
    assert augment_words(declared, ["crop", "1", "normalize"], said.append) == [
        "crop 1",
        TO_PIXELS,
    ]
    assert said and "left out" in said[0]
    plain = cnnspec.compile_text(PLAIN)
    assert augment_words(plain, ["crop", "1", "normalize"]) == ["crop", "1", "normalize"]


def test_a_converted_weights_file_carries_it_too(run, tmp_path, capsys):
    """`cnnspec convert` to the other framework keeps the normalisation, so the converted file,
    alone in another folder, predicts what the trained one does."""
    from cnnspec.weights import normalization

    backend, _kind, spec, out = run
    other = "keras" if backend == "torch" else "torch"
    converted = tmp_path / WEIGHTS[other]
    argv = ["convert", str(spec), "--from", backend, "--weights", str(out / WEIGHTS[backend])]
    assert main([*argv, "-o", str(converted)]) == 0
    assert normalization.read(converted) == normalization.read(out / WEIGHTS[backend])
    images, _ = _digits(tmp_path)
    want = _predict(capsys, spec, out / WEIGHTS[backend], images)
    got = _predict(capsys, spec, converted, images)
    for a, b in zip(want, got):
        assert a["top"][0]["index"] == b["top"][0]["index"]
        assert a["top"][0]["probability"] == pytest.approx(b["top"][0]["probability"], abs=1e-4)


def test_the_onnx_export_of_trained_weights_reads_what_predict_reads(run, tmp_path, capsys):
    """With or without declared preprocessing, the ONNX file of a moved weights file gives
    predict's probabilities for the image predict reads: [0, 1] pixels for a spec without the
    declaration (the trained mean and std go in front), 0..255 for one with it."""
    from PIL import Image

    ort = pytest.importorskip("onnxruntime")
    backend, kind, spec, out = run
    moved = tmp_path / "w.safetensors"
    if backend == "torch":
        shutil.copy(out / WEIGHTS[backend], moved)
    else:  # the export reads torch weights: Keras ones are converted first
        argv = ["convert", str(spec), "--from", "keras", "--weights", str(out / WEIGHTS[backend])]
        assert main([*argv, "-o", str(moved)]) == 0
    images, _ = _digits(tmp_path)
    want = _predict(capsys, spec, moved, images)
    argv = ["export", str(spec), "--onnx", str(tmp_path / "n.onnx"), "--weights", str(moved)]
    assert main(argv) == 0
    x = np.stack([np.asarray(Image.open(p), np.float32)[None] / 255 for p in images])
    x = x * 255 if kind == "declared" else x
    session = ort.InferenceSession(str(tmp_path / "n.onnx"), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"input": x})
    for p, item in zip(probs, want):
        top = item["top"][0]
        assert int(p.argmax()) == top["index"]
        assert float(p.max()) == pytest.approx(top["probability"], abs=1e-5)


def test_random_networks_with_preprocessing_agree_across_frameworks():
    """tests/test_property_parity.py's properties (shapes, counts, torch = Keras) on random
    networks whose input line declares preprocessing."""
    from hypothesis import HealthCheck, given, settings
    from netgen import preprocessed_networks
    from test_property_parity import check_network

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(preprocessed_networks())
    def check(text):
        check_network(text)

    check()
