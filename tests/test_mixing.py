"""mixup and cutmix: torchvision.transforms.v2's MixUp / CutMix on each training batch, soft
labels through the class losses of both backends, located errors for bad use."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import cnnspec
from cnnspec.data import DataError, augment_batch, parse_ops
from cnnspec.data.augmentation import is_mixed
from cnnspec.data.loading import prepare
from cnnspec.data.samples import from_dataset
from cnnspec.train import make_plan


def _batch(n=8, size=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 3)).astype(np.float32)
    return {"x": x, "y": np.arange(n) % classes}


def _by_hand(words, batch, rng_seed, classes):
    """torchvision's transform applied by hand to the same batch, torch seeded from the
    same draw of the generator as cnnspec's."""
    import torch
    from torchvision.transforms import v2

    kinds = {"mixup": v2.MixUp, "cutmix": v2.CutMix}
    parts = [kinds[w.split()[0]](alpha=float(w.split()[1]), num_classes=classes) for w in words]
    transform = parts[0] if len(parts) == 1 else v2.RandomChoice(parts)
    seed = int(np.random.default_rng(rng_seed).integers(2**62))
    torch.manual_seed(seed)
    images = torch.from_numpy(batch["x"]).permute(0, 3, 1, 2)
    x, y = transform(images, torch.from_numpy(batch["y"].astype(np.int64)))
    return x.permute(0, 2, 3, 1).numpy(), y.numpy()


@pytest.mark.parametrize("words", [["mixup 0.4"], ["cutmix 1.0"], ["mixup 0.2", "cutmix 1.0"]])
@pytest.mark.parametrize("rng_seed", [0, 1, 5])
def test_mixed_batch_is_torchvisions(words, rng_seed):
    batch = _batch()
    out = augment_batch(batch, parse_ops(words, classes=4), np.random.default_rng(rng_seed))
    x, y = _by_hand(words, batch, rng_seed, 4)
    np.testing.assert_allclose(out["x"], x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["y"], y, rtol=0, atol=1e-6)
    assert is_mixed(out) and out["y"].dtype == np.float32


@pytest.mark.parametrize("rng_seed", range(4))
def test_mixup_is_the_convex_combination_its_labels_claim(rng_seed):
    batch = _batch()
    out = augment_batch(batch, parse_ops(["mixup 1.0"], classes=4), np.random.default_rng(rng_seed))
    np.testing.assert_allclose(out["y"].sum(1), 1.0, atol=1e-6)
    lam = out["y"][0, batch["y"][0]]  # image 0 is mixed with image N-1, of another class
    assert 0.0 < lam < 1.0
    expected = lam * batch["x"] + (1 - lam) * np.roll(batch["x"], 1, axis=0)
    np.testing.assert_allclose(out["x"], expected, atol=1e-5)
    other = np.roll(batch["y"], 1)
    onehot = np.eye(4)[batch["y"]] * lam + np.eye(4)[other] * (1 - lam)
    np.testing.assert_allclose(out["y"], onehot, atol=1e-5)


@pytest.mark.parametrize("rng_seed", range(4))
def test_cutmix_pastes_a_box_whose_area_is_the_label_weight(rng_seed):
    batch = _batch(size=16)
    out = augment_batch(
        batch, parse_ops(["cutmix 1.0"], classes=4), np.random.default_rng(rng_seed)
    )
    rolled = np.roll(batch["x"], 1, axis=0)
    own = np.all(out["x"] == batch["x"], axis=-1)
    pasted = np.all(out["x"] == rolled, axis=-1)
    assert np.all(own | pasted)  # every pixel is one image's or the other's
    # the same box in every image; the share of own pixels is the own class's weight
    np.testing.assert_array_equal(pasted, np.broadcast_to(pasted[:1], pasted.shape))
    np.testing.assert_allclose(out["y"][:, batch["y"]].diagonal(), own.mean((1, 2)), atol=1e-6)


def test_mixing_follows_the_rows_not_the_worker_and_skips_evaluation():
    from cnnspec.data.dataset import Dataset

    batch = _batch(n=20)
    data = Dataset(x=batch["x"], y=batch["y"], classes=list("abcd"), task="classify")
    samples = from_dataset(data)
    ops = parse_ops(["flip", "cutmix 1.0"], classes=4)
    rows = np.array([3, 7, 1, 12])
    a = prepare(samples, rows, ops, seed=2, epoch=1, train=True)
    b = prepare(samples, rows, ops, seed=2, epoch=1, train=True)
    c = prepare(samples, rows, ops, seed=2, epoch=2, train=True)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert not np.array_equal(a["y"], c["y"]) or not np.array_equal(a["x"], c["x"])
    plain = prepare(samples, rows, ops, seed=2, epoch=1, train=False)
    assert not is_mixed(plain) and np.array_equal(plain["y"], batch["y"][rows])


@pytest.mark.parametrize(
    "text, message",
    [
        ("mixup", "takes 1 number"),
        ("mixup 0", "outside"),
        ("cutmix x", "not a number"),
        ("cutmix 1 2", "takes 1 number"),
    ],
)
def test_bad_arguments_are_data_errors(text, message):
    with pytest.raises(DataError, match=message):
        parse_ops([text], classes=3)


def test_mixing_without_classes_is_refused():
    with pytest.raises(DataError, match="number of classes"):
        augment_batch(_batch(), ["mixup 1"], np.random.default_rng(0))


SEGMENTER = """model seg
input 16x16x1
conv 4 3x3 same relu
conv 3 1x1 softmax
compile {
  loss ce_dice
  augment flip mixup 0.2
}
"""
DETECTOR = """model det
input 16x16x1
conv 4 3x3 same relu
flatten
f = dense 8 relu
present = dense 1 sigmoid from=f
box = dense 4 sigmoid from=f
output present, box
compile {
  loss binary_crossentropy smooth_l1
  epochs 2
  augment cutmix 1
}
"""


CLASSIFIER = """model net
input 8x8x1
flatten
dense 10 softmax
compile {
  metrics accuracy
  augment mixup 0.2
  early_stopping monitor=train_accuracy patience=2
}
"""


@pytest.mark.parametrize(
    "text, word, line",
    [(SEGMENTER, "mixup", 7), (DETECTOR, "cutmix", 12), (CLASSIFIER, "train_accuracy", 8)],
)
def test_mixing_outside_classification_is_a_located_error(tmp_path, text, word, line):
    path = tmp_path / "net.cnn"
    path.write_text(text)
    model = cnnspec.compile_file(path)
    with pytest.raises(cnnspec.SpecErrors) as info:
        make_plan(model)
    [error] = [e for e in info.value.errors if e.code == "E519"]
    assert error.span.line == line and word in error.message


def test_check_command_reports_it_without_traceback(tmp_path, capsys):
    from cnnspec.cli import main

    path = tmp_path / "seg.cnn"
    path.write_text(SEGMENTER)
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr()
    text = err.out + err.err
    assert "E519" in text and "Traceback" not in text and f"{path.name}:7:" in text


# --- training on soft labels in both backends ---------------------------------------------
TINY = """model tiny
input 8x8x1
conv 8 3x3 same relu
maxpool 2
flatten
dense 10 softmax
compile {{
  loss {loss}
  optimizer adam lr=0.01
  metrics accuracy
  augment {augment}
  epochs 4; batch_size 64; validation_split 0.2; seed 3
}}
"""


def _history(out) -> list[dict]:
    with open(out / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("backend", ["torch", "keras"])
@pytest.mark.parametrize(
    "loss, augment",
    [("sparse_categorical_crossentropy", "cutmix 1.0"), ("categorical_crossentropy", "mixup 0.4")],
)
def test_short_training_on_mixed_batches_lowers_the_loss(tmp_path, backend, loss, augment):
    from cnnspec.cli import main

    spec = tmp_path / "tiny.cnn"
    spec.write_text(TINY.format(loss=loss, augment=augment))
    out = tmp_path / "run"
    threads = ["--threads", "1"] if backend == "torch" else []
    argv = ["train", str(spec), "--data", "digits", "--out", str(out), "--backend", backend]
    assert main([*argv, "--progress", "off", *threads]) == 0
    rows = _history(out)
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0] * 0.8, losses
    # mixed batches are scored by their loss only; validation keeps its accuracy
    assert "train_accuracy" not in rows[0] and float(rows[-1]["val_accuracy"]) > 0.5


@pytest.mark.parametrize(
    "loss, units, act",
    [
        ("sparse_categorical_crossentropy", 4, "softmax"),
        ("categorical_crossentropy", 4, None),
        ("binary_crossentropy", 4, "sigmoid"),
        ("binary_crossentropy", 1, "sigmoid"),
    ],
)
def test_soft_label_losses_agree_with_torch_and_keras_formulas(loss, units, act):
    """The torch loss on soft rows is torch's own soft cross-entropy / BCE; the Keras
    backend's formula gives the same number on the same logits and rows."""
    import torch
    import torch.nn.functional as F

    from cnnspec.train import keras_backend, torch_backend
    from cnnspec.train.plan import Head

    rng = np.random.default_rng(0)
    head = Head("out", "class", (units,), act, [loss], logits=act is not None)
    logits = rng.normal(size=(6, units)).astype(np.float32)
    soft = rng.dirichlet(np.ones(max(units, 2)), size=6).astype(np.float32)
    got_torch = float(
        torch_backend._class_loss(
            loss,
            head,
            torch.from_numpy(logits),
            {"y": torch.from_numpy(soft), "present": torch.ones(6)},
        )
    )
    target = torch.from_numpy(soft[:, 1:] if units == 1 else soft)
    if loss == "binary_crossentropy":
        want = F.binary_cross_entropy_with_logits(torch.from_numpy(logits), target)
    else:
        want = F.cross_entropy(torch.from_numpy(logits), target)
    assert got_torch == pytest.approx(float(want), rel=1e-5)
    got_keras = keras_backend._class_loss(
        loss, head, logits, {"y": soft, "present": np.ones(6, np.float32)}
    )
    assert float(np.asarray(got_keras)) == pytest.approx(float(want), rel=1e-5)


@pytest.mark.parametrize("loader", ["torch", "keras"])
def test_mixed_batches_are_the_same_whatever_the_worker_count(loader):
    """Keyed by (seed, epoch, rows): decoding processes (torch) or threads (tf.data) change
    nothing, mixing included."""
    from cnnspec.data.dataset import Dataset

    batch = _batch(n=10)
    samples = from_dataset(Dataset(x=batch["x"], y=batch["y"], classes=list("abcd")))
    ops = parse_ops(["flip", "mixup 0.4", "cutmix 1.0"], classes=4)
    if loader == "torch":
        from cnnspec.data.torch_loader import set_epoch, torch_loader

        def epoch_batches(workers):
            stream = torch_loader(samples, 4, train=True, seed=2, ops=ops, workers=workers)
            set_epoch(stream, 1)
            return [{k: np.asarray(v) for k, v in b.items()} for b in stream]
    else:
        pytest.importorskip("tensorflow")
        from cnnspec.data.loading import keras_batches

        def epoch_batches(workers):
            return list(
                keras_batches(samples, 4, train=True, seed=2, epoch=1, ops=ops, workers=workers)
            )

    runs = [epoch_batches(w) for w in (0, 2)]
    assert len(runs[0]) == len(runs[1]) == 3 and all(is_mixed(b) for b in runs[0])
    for a, b in zip(*runs):
        for key in ("x", "y"):
            np.testing.assert_array_equal(a[key], b[key])
