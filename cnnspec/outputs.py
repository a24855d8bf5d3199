"""Writing output files so that nothing the user had is lost: the one atomic writer.

    write_file("net.py", source)                       # text or bytes
    write_with("best.safetensors", lambda tmp: save_file(tensors, tmp))

A regular file is written to a temporary file in its own folder and renamed onto it
(os.replace is atomic on POSIX), so a crash or a full disk leaves the old file or the new
one, never half of either. The rules around that rename:
  - a symbolic link is followed: the file it points to is replaced, the link stays;
  - a device, pipe or socket (`-o /dev/null`, `-o >(gzip)`) is written directly: renaming
    over it would replace the device node with a regular file;
  - a read-only target is refused (root could rename over it, the user said "keep this");
  - the new file keeps the old one's permission bits, or a new file gets the umask's
    (0666 & ~umask, as `open` gives), not mkstemp's 0600;
  - a full disk is a DiskFull error naming the file; the temporary file is removed.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

# Below this much free space after a failed write, the failure is put down to a full disk:
# torch.save reports ENOSPC only as "PytorchStreamWriter failed writing file".
_LOW_SPACE = 1 << 20


class OutputError(OSError):
    """An output file that cannot or must not be written; str() is the message to show."""

    def __init__(self, path: str | Path, message: str, code: int = errno.EPERM):
        super().__init__(code, message, str(path))

    def __str__(self) -> str:
        return f"{self.strerror}: {self.filename}"


class DiskFull(OutputError):
    def __init__(self, path: str | Path):
        super().__init__(
            path,
            f"disk full ({os.strerror(errno.ENOSPC)}); the old file, if any, is left as it was",
            errno.ENOSPC,
        )


def write_file(path: str | Path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` by the rules above; returns the path written."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return write_with(path, lambda target: _dump(target, raw))


def write_with(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call write(name) to make the file, then put it in place of `path` by the rules
    above. The temporary name keeps `path`'s suffixes (Keras insists on '.weights.h5')."""
    target = Path(os.path.realpath(path))  # follow links: write what they point to
    old = _stat(target)
    if old is not None and stat.S_ISDIR(old.st_mode):
        raise OutputError(path, "is a folder, not a file", errno.EISDIR)
    if old is not None and not stat.S_ISREG(old.st_mode):
        try:  # a device, pipe or socket: written in place, never renamed over
            write(str(target))
        except BaseException as exc:
            if _disk_full(exc, target.parent):
                raise DiskFull(path) from exc
            raise
        return target
    if old is not None and not old.st_mode & 0o222:
        raise OutputError(
            path, "is read-only: not replaced (make it writable, or write elsewhere)", errno.EACCES
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _temporary(target)
    try:
        write(tmp)
        os.chmod(tmp, stat.S_IMODE(old.st_mode) if old is not None else mode)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        full = _disk_full(exc, target.parent)
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise DiskFull(path) from exc
        raise
    return target


def need_space(path: str | Path, nbytes: int) -> None:
    """Raise DiskFull before writing when `path`'s file system has less than `nbytes` (and
    a margin) free: some writers (HDF5 under Keras) crash the process on a full disk
    instead of raising."""
    folder = Path(os.path.realpath(path)).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fs = os.statvfs(folder)
    except OSError:
        return
    free = (fs.f_bfree if os.geteuid() == 0 else fs.f_bavail) * fs.f_frsize
    if free < nbytes + _LOW_SPACE:
        raise DiskFull(path)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two names reach one file (links and `..` included); False if either is
    missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_input(output: str | Path, *inputs: str | Path) -> None:
    """Raise OutputError when `output` is one of the command's input files: writing it
    would replace what was read (`cnnspec build net.cnn -o net.cnn`)."""
    for source in inputs:
        if source is not None and same_file(output, source):
            raise OutputError(
                output,
                f"is the input file {source}: not overwritten (choose another output name)",
                errno.EEXIST,
            )


def _temporary(target: Path) -> tuple[str, int]:
    """A new empty file beside `target`, and the mode the umask gave it."""
    suffix = "".join(target.suffixes) if target.name[:1] != "." else ""
    for _ in range(100):
        name = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp{suffix}"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.close(fd)
        return str(name), mode
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target.parent))


def _dump(name: str, raw: bytes) -> None:
    # os.write in a loop: a short write (a pipe, a nearly full disk) is carried on, not lost
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of space: ENOSPC/EDQUOT anywhere in the exception's
    chain, or (for writers that hide the errno) almost no free space left in `folder`."""
    seen, depth = exc, 0
    while seen is not None and depth < 20:  # a chain can loop back on itself
        depth += 1
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left" in str(seen) or "StorageFull" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    if not isinstance(exc, Exception):  # Ctrl-C is not a full disk
        return False
    try:
        fs = os.statvfs(folder)
    except OSError:
        return False
    free = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail  # root may use reserved blocks
    return free * fs.f_frsize < _LOW_SPACE
