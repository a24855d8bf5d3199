"""cnnspec train / evaluate / predict end to end, in both backends, on a small network."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cnnspec.cli import main

TINY = """model tiny
input 8x8x1
conv 8 3x3 same relu
maxpool 2
flatten
dense 10 softmax
compile {
  loss sparse_categorical_crossentropy
  optimizer adam lr=0.01
  metrics accuracy top5
  augment crop 1 normalize
  epochs 2; batch_size 64; validation_split 0.2; seed 3
}
"""


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.cnn"
    path.write_text(TINY)
    return path


def _history(out: Path) -> list[dict]:
    with open(out / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _train(spec, out, *extra, backend="torch") -> int:
    # one thread: a tiny network gains nothing from two, and loses much on a busy machine
    threads = ["--threads", "1"] if backend == "torch" else []
    return main(
        [
            "train",
            str(spec),
            "--data",
            "digits",
            "--out",
            str(out),
            "--backend",
            backend,
            "--progress",
            "off",
            *threads,
            *extra,
        ]
    )


@pytest.fixture(scope="module", params=["torch", "keras"])
def run(request, spec, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"run-{request.param}")
    assert _train(spec, out, backend=request.param) == 0
    return request.param, out


WEIGHTS = {
    "torch": ("last.safetensors", "best.safetensors", "last.optim.pt"),
    "keras": ("last.weights.h5", "best.weights.h5", "last.optim.npz"),
}


def test_run_writes_history_result_checkpoints_and_curves(run):
    backend, out = run
    rows = _history(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for key in (
        "lr",
        "train_loss",
        "val_loss",
        "train_accuracy",
        "val_accuracy",
        "train_top5",
        "val_top5",
    ):
        assert all(r[key] != "" for r in rows), key
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    result = json.loads((out / "result.json").read_text())
    assert result["task"] == "classify" and result["backend"] == backend
    assert result["best_epoch"] in (1, 2) and result["n_val"] + result["n_train"] == 1797
    assert 340 < result["n_val"] < 380
    assert 0.6 < result["metrics"]["accuracy"] <= 1.0
    assert result["metrics"]["top5"] >= result["metrics"]["accuracy"]
    # the final report is the last epoch's validation, measured again
    assert result["metrics"]["accuracy"] == pytest.approx(float(rows[-1]["val_accuracy"]))
    for name in (*WEIGHTS[backend], "curves.png", "checkpoint.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_reproduces_the_held_out_metrics(run, spec, capsys):
    backend, out = run
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(spec),
                "--weights",
                str(out / WEIGHTS[backend][0]),
                "--data",
                "digits",
                "--format",
                "json",
            ]
        )
        == 0
    )
    got = json.loads(capsys.readouterr().out)
    result = json.loads((out / "result.json").read_text())
    assert got["n"] == result["n_val"]
    assert got["metrics"]["accuracy"] == pytest.approx(result["metrics"]["accuracy"])
    assert got["metrics"]["loss"] == pytest.approx(result["metrics"]["loss"], rel=1e-4)


def test_predict_gives_top_k_probabilities(run, spec, tmp_path, capsys):
    from PIL import Image
    from sklearn.datasets import load_digits

    backend, out = run
    digits = load_digits()
    paths = []
    for i in range(12):
        img = (digits.images[i] / 16 * 255).astype(np.uint8)
        paths.append(tmp_path / f"d{i}_{digits.target[i]}.png")
        Image.fromarray(img).save(paths[-1])
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                str(spec),
                *map(str, paths),
                "--weights",
                str(out / WEIGHTS[backend][1]),
                "--top",
                "3",
                "--format",
                "json",
            ]
        )
        == 0
    )
    items = json.loads(capsys.readouterr().out)
    assert len(items) == 12 and all(len(it["top"]) == 3 for it in items)
    for it in items:
        probs = [t["probability"] for t in it["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
    right = sum(it["top"][0]["index"] == digits.target[i] for i, it in enumerate(items))
    assert right >= 8


def test_predict_text_output(run, spec, tmp_path, capsys):
    from PIL import Image

    backend, out = run
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "blank.png")
    assert (
        main(
            [
                "predict",
                str(spec),
                str(tmp_path / "blank.png"),
                "--weights",
                str(out / WEIGHTS[backend][0]),
                "--top",
                "2",
                "--classes",
                "zero,one,two,three,four,five,six,seven,eight,nine",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("blank.png") and len(lines) == 3


def test_one_epoch_then_resume_equals_two_epochs(run, spec, tmp_path):
    """1 epoch, then --resume to 2, gives the history of 2 epochs straight: the seed fixes
    the weights, the batch order and the shifts, and the optimizer state is saved."""
    backend, straight = run
    split = tmp_path / "split"
    assert _train(spec, split, "--epochs", "1", backend=backend) == 0
    assert len(_history(split)) == 1
    assert _train(spec, split, "--resume", backend=backend) == 0
    got, want = _history(split), _history(straight)
    assert [r["epoch"] for r in got] == ["1", "2"]
    for a, b in zip(got, want):
        for key in a:
            if key != "seconds":
                assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5), key
    if backend == "torch":  # torch on CPU repeats itself to the bit
        strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
        assert strip(got) == strip(want)


def test_other_seed_other_history(spec, tmp_path):
    assert _train(spec, tmp_path / "a", "--epochs", "1", "--seed", "1") == 0
    assert _train(spec, tmp_path / "b", "--epochs", "1", "--seed", "2") == 0
    assert _history(tmp_path / "a")[0]["train_loss"] != _history(tmp_path / "b")[0]["train_loss"]


def test_spec_and_data_errors_exit_1_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.cnn"
    bad.write_text(TINY.replace("loss sparse_categorical_crossentropy", "loss dice"))
    assert _train(bad, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "error[E512]" in err and "bad.cnn:8:" in err and "Traceback" not in err
    assert main(["train", str(bad).replace("bad", "none"), "--data", "digits"]) == 1
    good = tmp_path / "good.cnn"
    good.write_text(TINY)
    assert main(["train", str(good), "--data", "no-such-source", "--out", str(tmp_path / "o")]) == 1
    assert "unknown data source" in capsys.readouterr().err


def test_saved_weights_load_into_the_spec_network_with_its_softmax(run, spec):
    """Training strips the final softmax; the weights still fit the network as written."""
    import torch
    from safetensors.torch import load_file

    import cnnspec
    from cnnspec.backends.torch import build

    backend, out = run
    if backend != "torch":
        from cnnspec.backends.keras import build as kbuild

        net = kbuild(cnnspec.compile_file(spec))
        net.load_weights(str(out / "last.weights.h5"))
        probs = np.asarray(net(np.zeros((2, 8, 8, 1), np.float32)))
    else:
        net = build(cnnspec.compile_file(spec))
        net.load_state_dict(load_file(str(out / "last.safetensors")))
        net.eval()
        with torch.no_grad():
            probs = net(torch.zeros(2, 1, 8, 8)).numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)  # the softmax is there
