"""The run folder of `cnnspec train`: which folder, whether it may be written, and a lock.

The rule (README, "Training"): a folder that holds a run (checkpoint.json, the GAN/VAE
resume state) or a result.json / history.csv is continued with --resume or replaced with
--overwrite, and otherwise refused, so that an earlier run or the user's own files are never
overwritten by accident. The folder must not lie inside the --data folder (the next training
would read the run's PNGs as data). One training at a time holds the folder: a second exits
naming the first's process id.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
from pathlib import Path

from .checkpoint import CKPT_DIR, STATE

LOCK = ".lock"
GENERATE_STATE = "generate_state.pt"
MARKERS = (STATE, GENERATE_STATE, "result.json", "history.csv")
# what a run writes; --overwrite removes these (and nothing else) before starting
RUN_FILES = (
    *MARKERS,
    "curves.png",
    "samples.png",
    "last.*",
    "best.*",
    "encoder.safetensors",
    "decoder.safetensors",
    "generator.safetensors",
    "discriminator.safetensors",
)


class RunFolderError(Exception):
    """The run folder cannot be used as asked; the message says why and what to do."""


def folder_name(model_name: str) -> str:
    """A model name made safe as the folder under runs/: a spec named `...cnn` has the
    model name `..`, which would put the run's files in the parent folder.

    >>> folder_name("lenet5"), folder_name(".."), folder_name("a/b"), folder_name("")
    ('lenet5', 'model', 'a_b', 'model')
    """
    name = re.sub(r"[^\w.-]", "_", model_name).lstrip(".")
    return name[:100] or "model"


def check_place(out: Path, data: str) -> None:
    """Raise RunFolderError when `out` may not be a run folder at all (before it is made)."""
    out = Path(out)
    data_dir = Path(data)
    if data_dir.is_dir() and _inside(out, data_dir):
        raise RunFolderError(
            f"the run folder {out} is inside the data folder {data}: the "
            "next training would read the run's files as data; choose "
            "--out elsewhere"
        )
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} is a file, not a folder")


def check_contents(out: Path, resume: bool, overwrite: bool) -> None:
    """Raise RunFolderError when `out` holds a run that neither --resume nor --overwrite
    claims (under the lock, so that a running training is named as such first)."""
    out = Path(out)
    found = [name for name in MARKERS if (out / name).exists()]
    if found and not resume and not overwrite:
        raise RunFolderError(
            f"{out} already holds a run ({', '.join(found)}); continue it "
            "with --resume, replace it with --overwrite, or choose "
            "another --out"
        )


def clear(out: Path) -> None:
    """--overwrite: remove the files an earlier run wrote (and only those)."""
    out = Path(out)
    for pattern in RUN_FILES:
        for path in out.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()
    shutil.rmtree(out / CKPT_DIR, ignore_errors=True)


class Lock:
    """An exclusive lock on the run folder (flock on OUT/.lock, which holds the pid), held
    while training; released by the kernel when the process dies, even by kill -9."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK
        self.fd: int | None = None

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RunFolderError(
                f"{self.path.parent} is in use by another training "
                f"(pid {holder}); wait for it or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def _inside(path: Path, folder: Path) -> bool:
    child, parent = os.path.realpath(path), os.path.realpath(folder)
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)
