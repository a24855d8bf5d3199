"""Generative training learns, measured: the judge (cnnspec/train/judge.py), a classifier of the
real digits, scores generated samples; a trained generator must beat its untrained self.
The full-length runs and their numbers are bench/generate_digits.py's."""

from pathlib import Path

import numpy as np
import pytest
import torch

import cnnspec
from cnnspec.data import load
from cnnspec.train.generate import train_gan, train_vae
from cnnspec.train.judge import score_probabilities, train_judge
from cnnspec.train.report import read_history

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
quiet = lambda *a, **k: None


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits32():
    return load("digits", (32, 32, 1), "classify", 0)


# --- the score itself -------------------------------------------------------------------


def test_confident_balanced_predictions_score_the_number_of_classes():
    p = np.eye(10)[np.arange(1000) % 10]
    s = score_probabilities(p, 10)
    assert s["confidence"] == 1.0 and s["classes"] == 10
    assert s["score"] == pytest.approx(10.0, rel=1e-6)


@pytest.mark.parametrize(
    "p, confidence, classes",
    [
        (np.eye(10)[np.zeros(200, dtype=int)], 1.0, 1),  # mode collapse: one class, sure of it
        (np.full((200, 10), 0.1), 0.1, 0),  # nothing the judge can place
    ],
)
def test_one_class_or_no_confidence_scores_one(p, confidence, classes):
    s = score_probabilities(p, 10)
    assert s["confidence"] == pytest.approx(confidence)
    assert s["classes"] == classes
    assert s["score"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("rare, classes", [(10, 2), (9, 1)])
def test_a_class_appears_with_one_percent_of_the_samples(rare, classes):
    labels = np.r_[np.zeros(1000 - rare, dtype=int), np.ones(rare, dtype=int)]
    assert score_probabilities(np.eye(10)[labels] * 0.95 + 0.005, 10)["classes"] == classes


# --- the judge --------------------------------------------------------------------------


def test_judge_knows_real_digits_and_refuses_noise(digits32):
    judge = train_judge(digits32, seed=0)
    assert judge.accuracy > 0.93 and judge.size == (16, 16)
    assert judge.real["classes"] == 10 and judge.real["confidence"] > 0.9
    assert judge.real["score"] > 8
    gen = torch.Generator().manual_seed(1)
    for noise in (torch.rand(500, 1, 32, 32, generator=gen), torch.zeros(500, 1, 32, 32)):
        s = judge.score(noise)
        assert s["classes"] == 0 and s["score"] < 2 and s["confidence"] < 0.6


def test_judge_shrinks_colour_samples_of_any_size():
    rgb = load("digits", (24, 24, 3), "classify", 0)
    judge = train_judge(rgb, seed=0, epochs=2)
    assert judge.size == (16, 16) and judge.accuracy > 0.7
    s = judge.score(torch.rand(50, 3, 64, 64, generator=torch.Generator().manual_seed(2)))
    assert 0 < s["confidence"] <= 1 and s["score"] >= 1


def test_no_judge_for_unlabelled_data(digits32):
    one_class = digits32.subset(np.flatnonzero(digits32.y == 0))
    one_class.classes = ["0"]
    one_class.y[:] = 0
    assert train_judge(one_class) is None


# --- the networks learn -----------------------------------------------------------------


def test_dcgan_learns_digits_the_judge_can_read(digits32, tmp_path):
    g = cnnspec.compile_file(EXAMPLES / "dcgan_digits_generator.cnn")
    d = cnnspec.compile_file(EXAMPLES / "dcgan_digits_discriminator.cnn")
    result = train_gan(g, d, digits32, tmp_path, epochs=3, batch_size=32, seed=0, log=quiet)
    rows = read_history(tmp_path)
    # The discriminator learns first (real scored above fake), and the generator keeps up:
    # the discriminator never wins outright (it would, with a generator that stopped learning).
    assert all(r["train_d_real"] > r["train_d_fake"] for r in rows)
    assert rows[-1]["train_d_fake"] > 0.05
    # The judge: from blobs it cannot place to digits of several classes.
    before, after = result["judge"]["untrained"], result["metrics"]
    assert before["classes"] == 0 and before["score"] < 1.5
    assert after["sample_confidence"] > before["confidence"] + 0.15
    assert after["sample_score"] > before["score"] + 1.5
    assert after["sample_classes"] >= 3
    assert rows[-1]["sample_score"] > rows[0]["sample_score"]
    from PIL import Image

    assert Image.open(tmp_path / "samples.png").size == (8 * 34, 8 * 34)
    # curves.png draws both players' losses (a GAN has no single total loss) and the scores
    from cnnspec.train.report import curve_panels

    panels = curve_panels(rows)
    assert panels[:2] == ["loss_d", "loss_g"] and "sample_score" in panels
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_vae_samples_become_digits(tmp_path):
    data = load("digits", (28, 28, 1), "classify", 0)
    enc = cnnspec.compile_file(ROOT / "specs" / "vae.cnn")
    dec = cnnspec.compile_file(ROOT / "specs" / "vae_decoder.cnn")
    result = train_vae(enc, dec, data, tmp_path, epochs=3, batch_size=16, seed=0, log=quiet)
    rows = read_history(tmp_path)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    before, after = result["judge"]["untrained"], result["metrics"]
    assert before["classes"] == 0 and before["score"] < 1.5
    assert after["sample_confidence"] > before["confidence"] + 0.15
    assert after["sample_score"] > before["score"] + 1.0
    assert after["sample_classes"] >= 2


def test_judging_can_be_turned_off(digits32, tmp_path):
    g = cnnspec.compile_file(EXAMPLES / "dcgan_digits_generator.cnn")
    d = cnnspec.compile_file(EXAMPLES / "dcgan_digits_discriminator.cnn")
    result = train_gan(g, d, digits32, tmp_path, epochs=1, max_batches=1, judge=False, log=quiet)
    assert "judge" not in result and not any(k.startswith("sample_") for k in result["metrics"])


# --- resume -----------------------------------------------------------------------------
class _Killed(Exception):
    pass


def _kill_after(epoch: int):
    """A log that stops the run right after `epoch` is saved, as a kill would."""

    def log(line: str) -> None:
        if line.startswith(f"epoch {epoch}/"):
            raise _Killed

    return log


def _gan_run(digits32, out, epochs, resume=False, log=quiet):
    g = cnnspec.compile_file(EXAMPLES / "dcgan_digits_generator.cnn")
    d = cnnspec.compile_file(EXAMPLES / "dcgan_digits_discriminator.cnn")
    return train_gan(
        g,
        d,
        digits32,
        out,
        epochs=epochs,
        batch_size=32,
        seed=3,
        max_batches=3,
        judge=False,
        resume=resume,
        log=log,
    )


def test_a_killed_gan_resumes_where_it_stopped(digits32, tmp_path):
    from safetensors.torch import load_file

    _gan_run(digits32, tmp_path / "straight", 3)
    with pytest.raises(_Killed):
        _gan_run(digits32, tmp_path / "killed", 3, log=_kill_after(2))
    assert len(read_history(tmp_path / "killed")) == 2
    lines: list[str] = []
    _gan_run(digits32, tmp_path / "killed", 3, resume=True, log=lines.append)
    assert lines[0] == "resuming after epoch 2 of 3"
    # every epoch once, and the same numbers as a run that was never stopped: the networks,
    # both optimizers and the random streams came back
    assert read_history(tmp_path / "killed") == read_history(tmp_path / "straight")
    for name in ("generator", "discriminator"):
        a = load_file(tmp_path / "straight" / f"{name}.safetensors")
        b = load_file(tmp_path / "killed" / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_killed_vae_resumes_where_it_stopped(tmp_path):
    data = load("digits", (28, 28, 1), "classify", 0).subset(np.arange(256))
    enc = cnnspec.compile_file(ROOT / "specs" / "vae.cnn")
    dec = cnnspec.compile_file(ROOT / "specs" / "vae_decoder.cnn")

    def run(out, log=quiet, resume=False):
        return train_vae(
            enc,
            dec,
            data,
            out,
            epochs=3,
            batch_size=32,
            seed=1,
            judge=False,
            resume=resume,
            log=log,
        )

    run(tmp_path / "straight")
    with pytest.raises(_Killed):
        run(tmp_path / "killed", _kill_after(1))
    run(tmp_path / "killed", resume=True)
    assert read_history(tmp_path / "killed") == read_history(tmp_path / "straight")


def test_resume_without_a_checkpoint_starts_from_the_first_epoch(digits32, tmp_path):
    lines: list[str] = []
    _gan_run(digits32, tmp_path, 1, resume=True, log=lines.append)
    assert lines[0].startswith("no checkpoint in") and len(read_history(tmp_path)) == 1
