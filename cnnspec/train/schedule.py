"""Learning-rate schedules, per epoch, shared by every backend.

    constant      lr
    step          lr * gamma ** (epoch // step_size)          (torch StepLR)
    exponential   lr * gamma ** epoch                         (torch ExponentialLR)
    cosine        min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2   (Loshchilov & Hutter,
                  SGDR, without restarts; T = the epochs after warm-up)
    plateau       lr * gamma each time the monitored value has not improved for `patience`
                  epochs (torch ReduceLROnPlateau, mode from the monitor's name)
    warmup=W      the first W epochs ramp linearly up to lr: lr * (epoch + 1) / (W + 1)
Epochs are counted from 0. The schedule state is a small dict, saved in checkpoints.
"""

from __future__ import annotations

import math

from ..ir import Schedule


class LRSchedule:
    def __init__(self, spec: Schedule, base_lr: float, epochs: int, mode: str = "min"):
        self.spec, self.base_lr, self.epochs, self.mode = spec, base_lr, epochs, mode
        self.scale = 1.0  # plateau: the product of the decays so far
        self.best: float | None = None
        self.bad = 0

    def lr(self, epoch: int) -> float:
        s = self.spec
        if epoch < s.warmup:
            return self.base_lr * (epoch + 1) / (s.warmup + 1)
        t = epoch - s.warmup
        gamma = s.gamma if s.gamma is not None else 0.1
        if s.name == "step":
            lr = self.base_lr * gamma ** (t // (s.step_size or 30))
        elif s.name == "exponential":
            lr = self.base_lr * (s.gamma if s.gamma is not None else 0.95) ** t
        elif s.name == "cosine":
            total = max(self.epochs - s.warmup, 1)
            lr = s.min_lr + (self.base_lr - s.min_lr) * (1 + math.cos(math.pi * t / total)) / 2
        elif s.name == "plateau":
            lr = self.base_lr * self.scale
        else:
            lr = self.base_lr
        return max(lr, s.min_lr)

    def observe(self, value: float | None) -> None:
        """Feed the monitored value at the end of an epoch (plateau only)."""
        if self.spec.name != "plateau" or value is None or not math.isfinite(value):
            return
        better = self.best is None or (
            value < self.best if self.mode == "min" else value > self.best
        )
        if better:
            self.best, self.bad = value, 0
            return
        self.bad += 1
        if self.bad > (self.spec.patience if self.spec.patience is not None else 10):
            self.scale *= self.spec.gamma if self.spec.gamma is not None else 0.1
            self.bad = 0

    def state(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load(self, state: dict) -> None:
        self.scale, self.best, self.bad = state["scale"], state["best"], state["bad"]


def mode_of(monitor: str) -> str:
    """'min' for losses and errors, 'max' for scores (accuracy, dice, IoU)."""
    name = monitor.removeprefix("val_").removeprefix("train_")
    return "min" if name in ("loss", "mae", "mse") or name.endswith("loss") else "max"
