"""Faults: a full disk while saving, a truncated weights file. Each ends in a clear error and
leaves every earlier result as it was."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cnnspec.cli import main
from cnnspec.commands._common import write_atomic
from cnnspec.train import checkpoint

SPEC = "input 8x8x3\nconv 4 3x3 same relu\ngap\ndense 2\n"


@pytest.fixture
def full_disk(monkeypatch):
    """Every fsync fails as a full disk does, after the bytes went to the page cache."""

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_write_atomic_keeps_the_old_file_when_the_disk_is_full(tmp_path, full_disk):
    target = tmp_path / "model.py"
    target.write_text("old contents\n")
    with pytest.raises(OSError) as caught:
        write_atomic(target, "new contents\n" * 1000)
    assert caught.value.errno == errno.ENOSPC
    assert target.read_text() == "old contents\n"
    assert _leftovers(tmp_path, {"model.py"}) == []


def _state(epoch: int) -> dict:
    """A resumable state as the trainer writes it (read_state checks every key)."""
    return {
        "epoch": epoch,
        "history": list(range(1, epoch + 1)),
        "best_epoch": epoch - 1,
        "bad_epochs": 0,
        "schedule": {},
        "files": {"last": [], "best": []},
    }


def test_checkpoint_write_keeps_the_previous_state_when_the_disk_is_full(tmp_path, monkeypatch):
    checkpoint.write_state(tmp_path, _state(3))
    before = (tmp_path / checkpoint.STATE).read_bytes()
    monkeypatch.setattr(
        os,
        "fsync",
        lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))),
    )
    with pytest.raises(OSError):
        checkpoint.write_state(tmp_path, _state(4))
    assert (tmp_path / checkpoint.STATE).read_bytes() == before
    assert checkpoint.read_state(tmp_path)["epoch"] == 3
    assert _leftovers(tmp_path, {checkpoint.STATE}) == []


def test_cli_reports_a_full_disk_without_a_traceback(tmp_path, full_disk, capsys):
    spec = tmp_path / "net.cnn"
    spec.write_text(SPEC)
    out = tmp_path / "net.py"
    out.write_text("# an earlier build\n")
    code = main(["build", str(spec), "--backend", "torch", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "No space left on device" in err and "Traceback" not in err
    assert out.read_text() == "# an earlier build\n"


def test_truncated_weights_file_is_a_clear_error(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from cnnspec import compile_text
    from cnnspec.backends.torch import build

    spec = tmp_path / "net.cnn"
    spec.write_text(SPEC)
    weights = tmp_path / "w.safetensors"
    save_file(
        {k: v.contiguous() for k, v in build(compile_text(SPEC)).state_dict().items()}, str(weights)
    )
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a copy that stopped half way
    code = main(
        ["export", str(spec), "--onnx", str(tmp_path / "m.onnx"), "--weights", str(weights)]
    )
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "w.safetensors" in err
    assert not (tmp_path / "m.onnx").exists()
    assert torch.__version__
