"""The shared driver with a scripted stand-in backend: early stopping, best-checkpoint
restore, schedules and the history, without a framework (fast, and the same for both)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec.data import Dataset
from cnnspec.ir import Schedule
from cnnspec.train import make_plan
from cnnspec.train.driver import Options, Trainer, augment_ops
from cnnspec.train.schedule import LRSchedule, mode_of

SPEC = """model net
input 4x4x1
flatten
dense 3 softmax
compile {{
  metrics accuracy
  {settings}
}}
"""


class ScriptedBackend:
    """Validation loss follows `val_losses`, one value per epoch; weights are the epoch."""

    weights_suffix = ".npy"

    def __init__(self, val_losses):
        self.val_losses, self.epoch, self.lrs, self.loaded = val_losses, 0, [], []

    def set_lr(self, lr):
        self.lrs.append(lr)

    def start_epoch(self, epoch):
        self.epoch = epoch

    def train_step(self, batch):
        return {"loss": 1.0 / (self.epoch + 1)}, [self._probs(batch)]

    def eval_step(self, batch):
        return {"loss": self.val_losses[self.epoch]}, [self._probs(batch)]

    def _probs(self, batch):
        return np.eye(3, dtype=np.float32)[batch["y"]]  # always right

    def save(self, prefix):
        path = prefix + ".npy"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.array([self.epoch]))
        return [path]

    def load(self, files, optimizer=True):
        self.loaded.append(int(np.load(files[0])[0]))


def _setup(tmp_path, settings, val_losses, epochs=10):
    path = tmp_path / "net.cnn"
    path.write_text(SPEC.format(settings=settings))
    plan = make_plan(cnnspec.compile_file(path))
    rng = np.random.default_rng(0)
    data = Dataset(rng.random((30, 4, 4, 1)), rng.integers(0, 3, 30), ["a", "b", "c"])
    backend = ScriptedBackend(val_losses)
    opts = Options(
        epochs=epochs, batch_size=8, out=tmp_path / "run", progress=False, log=lambda *_: None
    )
    return Trainer(backend, plan, opts, info={"backend": "scripted"}), backend, data


def test_early_stopping_stops_after_patience_and_restores_the_best(tmp_path):
    losses = [1.0, 0.5, 0.4, 0.45, 0.41, 0.42, 0.3, 0.2, 0.1, 0.1]
    trainer, backend, data = _setup(
        tmp_path, "early_stopping monitor=val_loss patience=2 min_delta=0.001", losses
    )
    trainer.fit(data, data)
    assert [r["epoch"] for r in trainer.history] == [1, 2, 3, 4, 5]  # 3 was the best
    assert trainer.best_epoch == 2 and trainer.stopped_early
    assert trainer.restore_best() and backend.loaded == [2]
    state = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert state["best_epoch"] == 2 and state["files"]["best"] == [".ckpt/e0002.npy"]
    assert sorted(p.name for p in (tmp_path / "run" / ".ckpt").iterdir()) == [
        "e0002.npy",
        "e0004.npy",
    ]  # only the best and the last are kept


def test_monitor_on_a_score_counts_up(tmp_path):
    trainer, _, data = _setup(
        tmp_path, "early_stopping monitor=val_accuracy patience=1", [1.0] * 10
    )
    trainer.fit(data, data)
    # accuracy is 1.0 from the first epoch and never improves on it
    assert len(trainer.history) == 2 and trainer.best_epoch == 0


def test_unknown_monitor_is_a_located_error(tmp_path):
    path = tmp_path / "net.cnn"
    path.write_text(SPEC.format(settings="early_stopping monitor=val_acc"))
    with pytest.raises(cnnspec.SpecErrors) as info:
        make_plan(cnnspec.compile_file(path))
    err = info.value.errors[0]
    assert err.code == "E516" and err.span.line == 7 and "val_accuracy" in err.hint


def test_history_has_lr_losses_and_metrics_for_both_splits(tmp_path):
    trainer, backend, data = _setup(
        tmp_path, "schedule step step_size=2 gamma=0.5", [1.0] * 4, epochs=4
    )
    trainer.fit(data, data)
    row = trainer.history[0]
    assert set(row) == {
        "epoch",
        "lr",
        "seconds",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
    }
    assert backend.lrs == [1e-3, 1e-3, 5e-4, 5e-4]
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == 5


@pytest.mark.parametrize(
    "name, kw, want",
    [
        ("constant", {}, [1.0] * 6),
        ("step", {"step_size": 2, "gamma": 0.1}, [1, 1, 0.1, 0.1, 0.01, 0.01]),
        ("exponential", {"gamma": 0.5}, [1, 0.5, 0.25, 0.125, 0.0625, 0.03125]),
        ("cosine", {}, [1 + math.cos(math.pi * t / 6) for t in range(6)]),
        ("constant", {"warmup": 2}, [1 / 3, 2 / 3, 1, 1, 1, 1]),
    ],
)
def test_schedules_follow_the_torch_formulas(name, kw, want):
    sched = LRSchedule(Schedule(name=name, **kw), 1.0, 6)
    got = [sched.lr(e) for e in range(6)]
    if name == "cosine":
        want = [w / 2 for w in want]
    assert got == pytest.approx(want)


def test_cosine_matches_torch_cosine_annealing():
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8, eta_min=0.001)
    want = []
    for _ in range(8):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    sched = LRSchedule(Schedule(name="cosine", min_lr=0.001), 0.1, 8)
    assert [sched.lr(e) for e in range(8)] == pytest.approx(want)


def test_plateau_decays_after_patience():
    sched = LRSchedule(Schedule(name="plateau", patience=1, gamma=0.5), 1.0, 10)
    lrs = []
    for value in [1.0, 0.9, 0.95, 0.96, 0.97, 0.98]:
        sched.observe(value)
        lrs.append(sched.lr(1))
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]
    assert mode_of("val_accuracy") == "max" and mode_of("val_loss") == "min"


def test_augment_words_group_into_ops():
    assert augment_ops(["flip", "crop", "4", "normalize"]) == ["flip", "crop 4", "normalize"]
