"""A run killed at any moment (kill -9, Ctrl-C) resumes without losing or repeating an
epoch, and checkpoint files are never seen half-written."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnspec.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
SPEC = """model tiny
input 8x8x1
conv 8 3x3 same relu
flatten
dense 10 softmax
compile {
  optimizer sgd lr=0.05 momentum=0.9
  schedule step step_size=2 gamma=0.5
  epochs 6; batch_size 16; validation_split 0.2; seed 1
}
"""


def _cmd(spec, out, *extra):
    return [
        sys.executable,
        "-m",
        "cnnspec",
        "train",
        str(spec),
        "--data",
        "digits",
        "--out",
        str(out),
        "--progress",
        "off",
        *extra,
    ]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _epochs(out: Path) -> list[int]:
    with open(out / "history.csv", newline="") as fh:
        return [int(r["epoch"]) for r in csv.DictReader(fh)]


def _rows(out: Path) -> list[dict]:
    with open(out / "history.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def _wait_for_epoch(proc, out: Path, epoch: int, limit: float = 240) -> None:
    """Wait until checkpoint.json says `epoch` (0-based) is saved."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        state = ckpt.read_state(out) if (out / ckpt.STATE).exists() else None
        if state and state["epoch"] >= epoch:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended early ({proc.returncode})")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("training did not reach the epoch in time")


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny.cnn"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def straight(spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    subprocess.run(_cmd(spec, out), env=_env(), check=True, capture_output=True)
    return out


def test_kill_9_mid_epoch_then_resume(spec, straight, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _cmd(spec, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _wait_for_epoch(proc, out, 1)  # two epochs saved, the third under way
    seconds = json.loads((out / "checkpoint.json").read_text())["history"][-1]["seconds"]
    time.sleep(min(seconds / 2, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # checkpoint.json is the truth; history.csv, rewritten just after it, may lag by one
    saved = ckpt.read_state(out)["epoch"] + 1
    rows = _epochs(out)
    assert 2 <= saved < 6 and rows == list(range(1, len(rows) + 1))
    assert len(rows) in (saved - 1, saved)
    done = subprocess.run(
        _cmd(spec, out, "--resume"), env=_env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert f"resuming after epoch {saved}" in done.stdout
    assert _epochs(out) == [1, 2, 3, 4, 5, 6]
    # the same numbers as the run that was never stopped: nothing lost, nothing repeated
    assert _rows(out) == _rows(straight)
    assert (
        json.loads((out / "result.json").read_text())["metrics"]
        == json.loads((straight / "result.json").read_text())["metrics"]
    )


def test_ctrl_c_saves_and_exits_cleanly(spec, straight, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _cmd(spec, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_epoch(proc, out, 0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "--resume" in stdout
    saved = _epochs(out)
    assert saved == list(range(1, len(saved) + 1))
    assert (out / "last.safetensors").exists() and (out / "curves.png").exists()
    assert (
        subprocess.run(
            _cmd(spec, out, "--resume"), env=_env(), capture_output=True, check=False
        ).returncode
        == 0
    )
    assert _rows(out) == _rows(straight)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"old")

    def broken(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ckpt.atomic_path(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_atomic_write_never_exposes_a_partial_file(tmp_path, monkeypatch):
    """The destination changes only in the rename: before it, readers see the old bytes."""
    target = tmp_path / "state.json"
    target.write_text("{}")
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(dst).read_text())  # just before the rename
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    ckpt.write_text(target, '{"epoch": 3}')
    assert seen == ["{}"] and json.loads(target.read_text()) == {"epoch": 3}


def test_keras_temporaries_keep_the_weights_suffix(tmp_path):
    names = []
    ckpt.atomic_path(
        tmp_path / "last.weights.h5", lambda tmp: names.append(tmp) or Path(tmp).write_bytes(b"x")
    )
    assert names[0].endswith(".weights.h5") and Path(names[0]).parent == tmp_path


def test_prune_keeps_only_named_checkpoints(tmp_path):
    folder = tmp_path / ckpt.CKPT_DIR
    folder.mkdir()
    for e in range(3):
        (folder / f"e{e:04d}.safetensors").write_bytes(b"w")
    ckpt.prune(tmp_path, {".ckpt/e0001.safetensors", ".ckpt/e0002.safetensors"})
    assert sorted(p.name for p in folder.iterdir()) == ["e0001.safetensors", "e0002.safetensors"]
