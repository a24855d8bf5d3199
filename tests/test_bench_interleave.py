"""bench/resnet_epoch.py's batch-interleaved round: each side is charged its own steps and
nothing of the other's, whichever goes first. The clock here is a counter that each fake
step advances by a known amount, so the accounting is checked exactly, not timed."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchvision")  # the bench script imports it at the top
pytest.importorskip("scipy")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import resnet_epoch


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now, self.now * 2  # (wall, cpu): the CPU runs at twice the wall here


class Ours:
    """cnnspec's side: `run` calls train_step once per batch, as run_epoch does."""

    def __init__(self, clock, batches, cost, overhead):
        self.clock, self.batches, self.cost, self.overhead = clock, batches, cost, overhead
        self.order = []

    def train_step(self, batch):
        self.order.append("ours")
        self.clock.now += self.cost
        return batch

    def run(self):
        self.clock.now += self.overhead  # the loop's own time: cnnspec's
        for i in range(self.batches):
            self.train_step(i)


class Theirs:
    def __init__(self, clock, ours, batches, cost):
        self.clock, self.ours, self.left, self.cost = clock, ours, batches, cost
        self.loader = range(batches)

    def start(self):
        pass

    def step(self):
        if not self.left:
            return False
        self.left -= 1
        self.ours.order.append("theirs")
        self.clock.now += self.cost
        return True


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("extra", [0, 2])  # the reference's loader has batches left over
def test_each_side_is_charged_its_own_steps(monkeypatch, first, extra):
    clock = Clock()
    monkeypatch.setattr(resnet_epoch, "clocks", clock)
    ours = Ours(clock, batches=5, cost=3.0, overhead=0.5)
    theirs = Theirs(clock, ours, batches=5 + extra, cost=2.0)
    times = resnet_epoch.interleaved_round(ours, theirs, ours.run, first)
    assert times["cnnspec"] == pytest.approx((5 * 3.0 + 0.5, 2 * (5 * 3.0 + 0.5)))
    assert times["reference"] == pytest.approx(((5 + extra) * 2.0, 2 * (5 + extra) * 2.0))
    pairs = ["ours", "theirs"] if first else ["theirs", "ours"]
    assert ours.order == pairs * 5 + ["theirs"] * extra
    assert "train_step" not in vars(ours)  # the method is back after the round


def test_confidence_interval_of_the_geometric_mean():
    geo, low, high = resnet_epoch.confidence([1.0, 1.1, 0.9, 1.05])
    assert geo == pytest.approx(math.exp(sum(map(math.log, [1.0, 1.1, 0.9, 1.05])) / 4))
    assert low < geo < high
    assert resnet_epoch.confidence([1.2, 1.2, 1.2])[1:] == pytest.approx((1.2, 1.2))
    assert math.isnan(resnet_epoch.confidence([1.0])[1])
