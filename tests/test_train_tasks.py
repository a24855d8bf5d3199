"""Segmentation, detection and data-parallel training with the torch trainer, small and
short: the losses fall and the task metrics are computed; --nproc 2 matches one process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import main
from cnnspec.train.metrics import box_iou

ROOT = Path(__file__).resolve().parents[1]
SEGMENTER = """model seg
input 16x16x3
a = conv 8 3x3 same relu
maxpool 2
conv 16 3x3 same relu
upsample 2
concat a
conv 2 1x1 softmax
compile {
  loss ce_dice
  optimizer adam lr=0.01
  metrics dice mean_iou accuracy
  epochs 2; batch_size 16; validation_split 0.25
}
"""
DETECTOR = """model det
input 16x16x3
conv 8 3x3 same relu; maxpool 2
conv 16 3x3 same relu; maxpool 2
flatten
f = dense 32 relu
present = dense 1 sigmoid from=f
box = dense 4 sigmoid from=f
output present, box
compile {
  loss bce smooth_l1 iou
  optimizer adam lr=0.01
  metrics mean_iou accuracy
  epochs 2; batch_size 16; validation_split 0.25
}
"""
TINY = """model tiny
input 8x8x1
conv 8 3x3 same relu
flatten
dense 10 softmax
compile { optimizer sgd lr=0.05 momentum=0.9; epochs 2; batch_size 32; seed 5 }
"""


def _rows(out: Path) -> list[dict]:
    with open(out / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _run(tmp_path, text, *extra) -> Path:
    spec = tmp_path / "net.cnn"
    spec.write_text(text)
    out = tmp_path / "out"
    assert (
        main(["train", str(spec), "--out", str(out), "--progress", "off", "--threads", "1", *extra])
        == 0
    )
    return out


def test_segmentation_trains_with_ce_and_dice(tmp_path):
    out = _run(tmp_path, SEGMENTER, "--data", "shapes", "--data-option", "n=160")
    rows = _rows(out)
    assert {"train_loss_categorical_crossentropy", "train_loss_dice"} <= set(
        rows[0]
    ) or "train_loss" in rows[0]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    result = json.loads((out / "result.json").read_text())
    assert result["task"] == "segment"
    assert set(result["metrics"]) == {"loss", "dice", "mean_iou", "accuracy"}
    assert 0.0 <= result["metrics"]["dice"] <= 1.0
    img = tmp_path / "img.png"
    from PIL import Image

    from cnnspec.data import generate_shapes

    sample = generate_shapes(1, (16, 16), seed=9)
    Image.fromarray((sample.x[0] * 255).astype(np.uint8)).save(img)
    assert (
        main(
            [
                "predict",
                str(tmp_path / "net.cnn"),
                str(img),
                "--weights",
                str(out / "best.safetensors"),
                "--out",
                str(tmp_path / "masks"),
            ]
        )
        == 0
    )
    mask = np.asarray(Image.open(tmp_path / "masks" / "img.mask.png"))
    assert mask.shape == (16, 16) and set(np.unique(mask)) <= {0, 255}


def test_detection_trains_present_and_box(tmp_path, capsys):
    out = _run(
        tmp_path,
        DETECTOR,
        "--data",
        "shapes",
        "--data-option",
        "n=160",
        "--data-option",
        "empty_fraction=0.25",
    )
    rows = _rows(out)
    for key in (
        "train_loss_binary_crossentropy",
        "train_loss_smooth_l1",
        "train_loss_iou",
        "val_mean_iou",
        "val_accuracy",
    ):
        assert key in rows[0], key
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    result = json.loads((out / "result.json").read_text())
    assert result["task"] == "detect" and 0.0 <= result["metrics"]["mean_iou"] <= 1.0
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "net.cnn"),
                "--weights",
                str(out / "last.safetensors"),
                "--data",
                "shapes",
                "--data-option",
                "n=160",
                "--data-option",
                "empty_fraction=0.25",
                "--format",
                "json",
            ]
        )
        == 0
    )
    got = json.loads(capsys.readouterr().out)["metrics"]
    assert got["mean_iou"] == pytest.approx(result["metrics"]["mean_iou"])
    from PIL import Image

    from cnnspec.data import generate_shapes

    sample = generate_shapes(1, (16, 16), seed=4)
    Image.fromarray((sample.x[0] * 255).astype(np.uint8)).save(tmp_path / "s.png")
    assert (
        main(
            [
                "predict",
                str(tmp_path / "net.cnn"),
                str(tmp_path / "s.png"),
                "--weights",
                str(out / "best.safetensors"),
                "--format",
                "json",
            ]
        )
        == 0
    )
    item = json.loads(capsys.readouterr().out)[0]
    assert 0 <= item["present"] <= 1 and len(item["box"]) == 4
    assert all(0 <= v <= 1 for v in item["box"])
    assert item["box_pixels"][2] == pytest.approx(item["box"][2] * 16)


def test_box_iou_agrees_with_torchvision():
    import torch
    from torchvision.ops import box_iou as tv_iou

    rng = np.random.default_rng(0)
    a = np.sort(rng.random((20, 2, 2)), axis=1).transpose(0, 2, 1).reshape(20, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.random((20, 2, 2)), axis=1).transpose(0, 2, 1).reshape(20, 4)[:, [0, 2, 1, 3]]
    want = tv_iou(torch.from_numpy(a), torch.from_numpy(b)).diagonal().numpy()
    np.testing.assert_allclose(box_iou(a, b), want, rtol=1e-6)
    from cnnspec.train.torch_backend import box_iou as torch_iou

    np.testing.assert_allclose(
        torch_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy(), want, rtol=1e-6
    )


def test_two_processes_match_one(tmp_path):
    """torchrun --nproc 2 (DDP, gloo): each process takes half of every global batch, so
    the history follows the one-process run up to floating-point summation order."""
    spec = tmp_path / "tiny.cnn"
    spec.write_text(TINY)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    outs = {}
    for n in (1, 2):
        outs[n] = tmp_path / f"p{n}"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "cnnspec",
                "train",
                str(spec),
                "--data",
                "digits",
                "--out",
                str(outs[n]),
                "--nproc",
                str(n),
                "--progress",
                "off",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = _rows(outs[1]), _rows(outs[2])
    assert [r["epoch"] for r in two] == ["1", "2"]
    for a, b in zip(one, two):
        for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=2e-3, abs=2e-3), key
    r1 = json.loads((outs[1] / "result.json").read_text())
    r2 = json.loads((outs[2] / "result.json").read_text())
    assert r2["processes"] == 2 and r1["processes"] == 1
    assert r2["metrics"]["accuracy"] == pytest.approx(r1["metrics"]["accuracy"], abs=0.01)


def test_generation_specs_are_refused_with_a_located_error(tmp_path, capsys):
    """The VAE encoder alone (two vector outputs, no loss) is not a task train can guess."""
    model = cnnspec.compile_file(ROOT / "specs" / "vae.cnn")
    with pytest.raises(cnnspec.SpecErrors) as info:
        cnnspec.train.make_plan(model)
    assert info.value.errors[0].code == "E517"


def test_vae_loss_falls_and_samples_are_saved(tmp_path):
    from PIL import Image

    out = tmp_path / "vae"
    assert (
        main(
            [
                "train",
                str(ROOT / "specs" / "vae.cnn"),
                "--decoder",
                str(ROOT / "specs" / "vae_decoder.cnn"),
                "--data",
                "digits",
                "--epochs",
                "2",
                "--batch-size",
                "128",
                "--threads",
                "1",
                "--no-judge",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = _rows(out)
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert {"train_reconstruction", "train_kl", "val_loss"} <= set(rows[0])
    grid = Image.open(out / "samples.png")
    assert grid.size == (8 * 30, 8 * 30)  # 64 samples of 28x28, 2-pixel gutters
    result = json.loads((out / "result.json").read_text())
    assert result["task"] == "generate" and result["model"] == "vae"


def test_dcgan_runs_generator_against_discriminator(tmp_path):
    out = tmp_path / "gan"
    assert (
        main(
            [
                "train",
                str(ROOT / "specs" / "dcgan_generator.cnn"),
                "--discriminator",
                str(ROOT / "specs" / "dcgan_discriminator.cnn"),
                "--data",
                "digits",
                "--epochs",
                "1",
                "--max-batches",
                "2",
                "--batch-size",
                "8",
                "--threads",
                "1",
                "--no-judge",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    row = _rows(out)[0]
    assert 0 < float(row["train_d_real"]) < 1 and float(row["train_loss_g"]) > 0
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "generator.safetensors").stat().st_size > 3_000_000 * 4
