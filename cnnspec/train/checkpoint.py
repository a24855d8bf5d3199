"""Checkpoints that survive a crash at any instant, and the state that lets a run resume.

A run directory holds:
    checkpoint.json          the resume state: last finished epoch, the whole history,
                             schedule / early-stopping state, and the files below
    .ckpt/eNNNN.*            the weights (and optimizer state) of epoch NNNN
    last.* / best.*          the same files under stable names, for --weights
Files are written to a temporary name and renamed (os.replace is atomic on POSIX), and
checkpoint.json is replaced only after the files it names exist. A kill at any point
leaves the previous checkpoint.json pointing at complete files, so --resume neither loses
nor repeats an epoch of history.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..outputs import write_with

STATE = "checkpoint.json"
CKPT_DIR = ".ckpt"


def atomic_path(path: Path, write) -> None:
    """Call write(tmp) for a temporary file beside `path`, then rename it onto `path`
    (cnnspec.outputs: one writer for every output; a full disk is a DiskFull error)."""
    write_with(path, write)


def write_text(path: Path, text: str) -> None:
    atomic_path(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


class CheckpointError(ValueError):
    """A checkpoint.json that cannot be resumed from: says which file and why."""


# key -> the type a resumable state holds there
_STATE_TYPES = {
    "epoch": int,
    "history": list,
    "best_epoch": int,
    "bad_epochs": int,
    "schedule": dict,
    "files": dict,
}


def read_state(run_dir: Path) -> dict | None:
    """The resume state, or None when there is none; CheckpointError when it is corrupt
    (not JSON, missing keys, files outside the run folder's .ckpt/)."""
    path = Path(run_dir) / STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({exc}); start again "
            "without --resume, or restore the file"
        ) from None
    bad = [
        k
        for k, t in _STATE_TYPES.items()
        if not isinstance(state, dict) or not isinstance(state.get(k), t)
    ]
    if not bad and not all(
        isinstance(files, list)
        and all(
            isinstance(f, str) and f.startswith(CKPT_DIR + "/") and ".." not in f for f in files
        )
        for files in (state["files"].get(k) for k in ("last", "best"))
    ):
        bad = ["files"]
    if bad:
        raise CheckpointError(
            f"{path}: a corrupt checkpoint (bad or missing: "
            f"{', '.join(bad)}); start again without --resume, or restore "
            "the file"
        )
    return state


def write_state(run_dir: Path, state: dict) -> None:
    write_text(Path(run_dir) / STATE, json.dumps(state, indent=1))


def publish(run_dir: Path, files: list[str], name: str) -> None:
    """Expose checkpoint files under a stable name (last.*, best.*), atomically each.
    A hard link costs nothing; a copy is the fallback where links are not allowed."""
    for rel in files:
        src = Path(run_dir) / rel
        dest = Path(run_dir) / (name + _suffix(src.name))

        def link(tmp, src=src):
            os.unlink(tmp)
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)

        atomic_path(dest, link)


def _suffix(filename: str) -> str:
    # e0007.safetensors -> .safetensors; e0007.optim.pt -> .optim.pt
    return filename[filename.index(".") :]


def prune(run_dir: Path, keep: set[str]) -> None:
    """Delete checkpoint files no longer named by the state (after it was written)."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return
    for f in folder.iterdir():
        if f"{CKPT_DIR}/{f.name}" not in keep:
            f.unlink(missing_ok=True)


def epoch_prefix(epoch: int) -> str:
    return f"{CKPT_DIR}/e{epoch:04d}"
