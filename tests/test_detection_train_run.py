"""`cnnspec train / evaluate / predict` of a dense detection head, end to end, through the
CLI (a one-level anchor-free `detect` head with objectness, YOLO-style): COCO AP in
result.json, history.csv and `evaluate`; JSON and drawn boxes from `predict`; a run killed
with kill -9 resumes with the same history as one that was never stopped."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnspec.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
SPEC = """model tiny_det
input 32x32x3
block conv_bn(f) { conv f 3x3 same nobias; bn; relu }
conv_bn 8; maxpool 2
conv_bn 16; maxpool 2
f = conv_bn 16
detect f classes=3 strides=4 objectness offset=0.5 tower=0
compile {
  optimizer adam lr=0.01
  augment flip
  epochs 3; batch_size 8; validation_split 0.25; seed 2
}
"""
DATA = ["--data", "shapes_multi", "--data-option", "n=40", "--data-option", "objects=1-3"]


def _run(*args, check=True, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cnnspec", *map(str, args)]
    if not check:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = subprocess.run(
        cmd, check=False, env=env, capture_output=True, text=True, timeout=600, **kw
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _rows(out: Path) -> list[dict]:
    with open(out / "history.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny_det.cnn"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def straight(spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    _run("train", spec, *DATA, "--out", out, "--progress", "off")
    return out


def test_result_history_and_evaluate_report_coco_ap(spec, straight):
    result = json.loads((straight / "result.json").read_text())
    assert result["task"] == "detect" and result["classes"] == ["circle", "square", "triangle"]
    for key in ("map", "map_50", "loss_box", "loss_cls", "loss_extra", "objects_dropped"):
        assert key in result["metrics"]
    assert set(result["per_class"]) == {"circle", "square", "triangle"}
    rows = _rows(straight)
    assert len(rows) == 3 and {"val_map", "val_map_50", "train_loss_box"} <= set(rows[0])
    shown = _run(
        "evaluate", spec, "--weights", straight / "best.safetensors", *DATA, "--format", "json"
    )
    evaluated = json.loads(shown.stdout)
    assert evaluated["metrics"]["map"] == pytest.approx(result["metrics"]["map"], abs=1e-6)
    assert evaluated["counts"]["images"] == result["n_val"]
    # --top-k 1: one candidate per level (one level here) goes on to NMS
    kept = [
        json.loads(_run(
            "evaluate", spec, "--weights", straight / "best.safetensors", *DATA,
            "--format", "json", "--score-threshold", "0.001", *flags,
        ).stdout)["counts"]["detections"]
        for flags in ([], ["--top-k", "1"])
    ]  # fmt: skip
    assert kept[1] <= result["n_val"] < kept[0]


def test_predict_writes_json_and_the_drawn_image(spec, straight, tmp_path):
    from cnnspec.data.imaging import save_image
    from cnnspec.data.shapes_multi import generate_multi_shapes

    images, _ = generate_multi_shapes(1, (64, 48), seed=9)  # another size than the input
    picture = tmp_path / "scene.png"
    save_image(picture, images[0])
    shown = _run(
        "predict", spec, picture, "--weights", straight / "best.safetensors",
        "--score-threshold", "0.01", "--out", tmp_path / "drawn", "--format", "json",
    )  # fmt: skip
    (item,) = json.loads(shown.stdout)
    assert Path(item["drawn"]).is_file()
    for obj in item["detections"]:
        assert obj["class"] in ("circle", "square", "triangle") and 0 < obj["score"] <= 1
        x0, y0, x1, y1 = obj["box"]
        assert 0 <= x0 <= x1 <= 48 and 0 <= y0 <= y1 <= 64  # the image's own pixels


def test_bad_settings_are_a_usage_error(spec, straight, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "cnnspec", "predict", str(spec), "x.png", "--weights",
         str(straight / "best.safetensors"), "--iou-threshold", "1.5"],
        check=False, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "iou_threshold=1.5" in done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "cnnspec", "evaluate", str(spec), "--weights",
         str(straight / "best.safetensors"), *DATA, "--top-k", "-1"],
        check=False, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "top_k=-1" in done.stderr
    assert "Traceback" not in done.stderr


def test_kill_9_then_resume_gives_the_same_history(spec, straight, tmp_path):
    out = tmp_path / "run"
    proc = _run("train", spec, *DATA, "--out", out, "--progress", "off", check=False)
    try:
        import time

        end = time.monotonic() + 400
        while time.monotonic() < end:
            state = ckpt.read_state(out) if (out / ckpt.STATE).exists() else None
            if state and state["epoch"] >= 0:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert ckpt.read_state(out)["epoch"] < 2  # it stopped before the end
    _run("train", spec, *DATA, "--out", out, "--progress", "off", "--resume")
    assert _rows(out) == _rows(straight)


def test_keras_trains_the_same_head(spec, tmp_path):
    pytest.importorskip("tensorflow")
    out = tmp_path / "keras"
    _run("train", spec, *DATA, "--out", out, "--progress", "off", "--backend", "keras",
         "--epochs", "2")  # fmt: skip
    result = json.loads((out / "result.json").read_text())
    assert result["backend"] == "keras" and np.isfinite(result["metrics"]["loss"])
    assert {"map", "map_50"} <= set(result["metrics"])
    shown = _run("evaluate", spec, "--weights", out / "best.weights.h5", *DATA, "--format", "json")
    assert json.loads(shown.stdout)["metrics"]["map"] == pytest.approx(
        result["metrics"]["map"], abs=1e-6
    )


# --- the plan of a dense head: located errors, in process ------------------------------------
def _plan_errors(text, folder):
    from cnnspec.compiler import compile_file
    from cnnspec.errors import SpecErrors
    from cnnspec.train.plan import make_plan

    path = folder / "det.cnn"  # on disk, so errors point at the setting's own line
    path.write_text(text)
    try:
        make_plan(compile_file(path))
    except SpecErrors as errs:
        return [(e.code, e.span.line, e.message) for e in errs.errors]
    return []


@pytest.mark.parametrize(
    "setting, code, says",
    [
        ("loss smooth_l1", "E512", "does not train a dense detection head"),
        ("metrics accuracy", "E513", "metric accuracy does not fit"),
    ],
)
def test_a_dense_head_refuses_what_it_cannot_train(setting, code, says, tmp_path):
    text = SPEC.replace("  epochs 3;", f"  {setting}\n  epochs 3;")
    (found,) = _plan_errors(text, tmp_path)
    assert found[0] == code and found[1] == 11 and says in found[2]


def test_a_dense_plan_trains_on_every_object():
    from cnnspec.compiler import compile_text
    from cnnspec.train.plan import make_plan

    plan = make_plan(compile_text(SPEC, "det.cnn"))
    assert plan.task == "detect" and plan.data_task == "objects" and plan.dense
    assert plan.metrics == ["map", "map_50"] and plan.heads[0].losses == ["bce"]
    assert plan.heads[0].info.geometry.strides == (4,)


def test_the_head_must_predict_the_datas_classes():
    from cnnspec.compiler import compile_text
    from cnnspec.errors import SpecErrors
    from cnnspec.train.session import index_data

    model = compile_text(SPEC.replace("classes=3", "classes=4"), "det.cnn")
    with pytest.raises(SpecErrors) as caught:
        index_data(model, "shapes_multi", options={"n": 4})
    assert caught.value.errors[0].code == "E515"
    assert "predicts 4 classes but the data has 3" in caught.value.errors[0].message


def test_map_needs_a_dense_head(tmp_path):
    text = """model box
input 16x16x3
conv 4 3x3 same relu
flatten
features = dense 8 relu
present = dense 1 sigmoid from=features
box = dense 4 sigmoid from=features
output present, box
compile { loss binary_crossentropy smooth_l1; metrics map }
"""
    (found,) = _plan_errors(text, tmp_path)
    assert found[0] == "E513" and found[1] == 9 and "metric map does not fit" in found[2]
