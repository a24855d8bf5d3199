"""Augmentation through torchvision.transforms.v2: masks and boxes move with the pixels,
draws are keyed by the random generator given, bad arguments are DataErrors."""

from __future__ import annotations

import numpy as np
import pytest

import cnnspec
from cnnspec.data import DataError, augment_batch, generate_shapes, parse_ops
from cnnspec.data.shapes import boxes_from_masks

OPS = ["resized_crop 0.3", "rotate 40", "affine 20 0.2"]


def _batch():
    data = generate_shapes(n=6, size=(32, 32), seed=3)
    # the image is its own mask, so "did the mask move with the pixels" can be read off it
    x = (data.masks > 0).astype(np.float32)[..., None].repeat(3, axis=-1)
    return {
        "x": x,
        "masks": data.masks.copy(),
        "boxes": data.boxes.copy(),
        "present": data.present.copy(),
        "y": data.y.copy(),
    }


@pytest.mark.parametrize("op", OPS)
def test_masks_and_boxes_move_with_the_pixels(op):
    batch = _batch()
    out = augment_batch(batch, [op], np.random.default_rng(1))
    assert not np.array_equal(out["x"], batch["x"])  # something moved
    for i in range(len(out["x"])):
        pixels, mask = out["x"][i, ..., 0] > 0.5, out["masks"][i] > 0
        assert (pixels == mask).mean() > 0.95  # bilinear vs nearest at edges
        if out["present"][i] and mask.any():
            tight = boxes_from_masks(out["masks"][i][None])[0]
            assert np.abs(out["boxes"][i] - tight).max() < 0.25, (op, i)
            # the moved box holds the moved object
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = out["boxes"][i] * 32
            assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1
            assert y0 - 1 <= ys.min() and ys.max() <= y1 + 1


def test_colour_jitter_changes_pixels_not_masks():
    batch = _batch()
    batch["x"] = np.random.default_rng(0).random(batch["x"].shape).astype(np.float32)
    out = augment_batch(batch, ["jitter 0.5"], np.random.default_rng(2))
    assert not np.allclose(out["x"], batch["x"]) and np.array_equal(out["masks"], batch["masks"])
    assert out["x"].min() >= 0 and out["x"].max() <= 1


def test_draws_follow_the_generator_and_leave_torch_alone():
    import torch

    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    a = augment_batch(_batch(), OPS, np.random.default_rng(5))
    assert torch.rand(1) == before  # the training stream is untouched
    b = augment_batch(_batch(), OPS, np.random.default_rng(5))
    c = augment_batch(_batch(), OPS, np.random.default_rng(6))
    assert np.array_equal(a["x"], b["x"]) and not np.array_equal(a["x"], c["x"])
    assert augment_batch(_batch(), OPS, 5, train=False)["x"].tolist() == _batch()["x"].tolist()


@pytest.mark.parametrize(
    "text", ["rotate", "rotate 400", "resized_crop 0", "affine 10", "jitter x"]
)
def test_bad_arguments_are_data_errors(text):
    with pytest.raises(DataError, match="augmentation"):
        parse_ops([text])


def test_a_spec_declares_them_and_trains(tmp_path):
    from cnnspec.train.session import train

    model = cnnspec.compile_text(
        "model tiny\ninput 8x8x1\nconv 4 3x3 same relu\nflatten\ndense 3 softmax\n"
        "compile { optimizer sgd lr=0.05; epochs 1; batch_size 64; seed 1; "
        "augment flip rotate 10 resized_crop 0.5 jitter 0.2 normalize }\n"
    )
    result = train(
        model,
        "shapes",
        out=tmp_path / "run",
        log=lambda *a: None,
        progress=False,
        data_options_={"n": 96},
    )
    assert result["epochs_run"] == 1 and result["normalize"] is not None


@pytest.mark.parametrize("threads", [[], ["--threads", "1"]])
def test_keras_training_with_torchvision_ops_does_not_crash(tmp_path, threads):
    """torchvision imported after TensorFlow segfaults: the Keras path imports it first
    (--threads imports TensorFlow early, so it is checked too)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = tmp_path / "t.cnn"
    spec.write_text(
        "model t\ninput 8x8x3\nconv 4 3x3 same relu\nflatten\ndense 3 softmax\n"
        "compile { optimizer sgd lr=0.05; epochs 1; batch_size 16; seed 1; "
        "augment rotate 10 }\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnspec",
            "train",
            str(spec),
            "--data",
            "shapes",
            "--data-option",
            "n=48",
            "--backend",
            "keras",
            "--out",
            str(tmp_path / "run"),
            "--progress",
            "off",
            *threads,
        ],
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
