"""Output files (issue 14): the one atomic writer, cnnspec.outputs, and the commands that
write with it. Each test is a case that lost or damaged a user's file before the fix."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from cnnspec.cli import main
from cnnspec.outputs import DiskFull, OutputError, write_file, write_with

ROOT = Path(__file__).resolve().parent.parent
LENET = str(ROOT / "specs" / "lenet5.cnn")


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# --- links, devices, read-only, modes ------------------------------------------------------


def test_symlink_is_followed_not_replaced(tmp_path):
    real = tmp_path / "real.py"
    real.write_text("old")
    link = tmp_path / "link.py"
    link.symlink_to(real)
    write_file(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new"


def test_pipe_is_written_in_place(tmp_path):
    """A FIFO stands for `-o /dev/null` (a device node): renaming over it would replace the
    node with a regular file. (The FIFO lives in tmp_path so that a regression cannot break
    the machine's /dev/null.)"""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_file(fifo, b"through the pipe")
    reader.join(10)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert got == [b"through the pipe"]


def test_device_node_is_written_in_place(tmp_path):
    """A character device made here (major 1, minor 3 is /dev/null), as root."""
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod is not permitted here (not root)")
    write_file(node, "dropped")
    assert stat.S_ISCHR(os.stat(node).st_mode)


def test_read_only_target_is_refused(tmp_path):
    target = tmp_path / "keep.py"
    target.write_text("mine")
    target.chmod(0o444)
    with pytest.raises(OutputError, match="read-only"):
        write_file(target, "theirs")
    assert target.read_text() == "mine"


def test_existing_mode_is_kept(tmp_path):
    target = tmp_path / "spec.cnn"
    target.write_text("x")
    target.chmod(0o664)
    write_file(target, "y")
    assert stat.S_IMODE(target.stat().st_mode) == 0o664


def test_new_file_honours_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_file(tmp_path / "new.py", "x")
        write_with(tmp_path / "w.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.py").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "w.bin").stat().st_mode) == 0o644


def test_fmt_keeps_a_0664_spec_0664(tmp_path, capsys):
    spec = tmp_path / "net.cnn"
    spec.write_text("input 8x8x1\nconv   4 3x3\n")
    spec.chmod(0o664)
    code, _, _ = run(capsys, "fmt", str(spec))
    assert code == 0 and spec.read_text() != "input 8x8x1\nconv   4 3x3\n"
    assert stat.S_IMODE(spec.stat().st_mode) == 0o664


# --- disk full -----------------------------------------------------------------------------


def _enospc_after(monkeypatch, budget: int):
    """os.write that accepts `budget` bytes and then fails as a full disk does. (A patched
    write, not LD_PRELOAD: the writer's own loop calls os.write.)"""
    real = os.write
    left = [budget]

    def write(fd, data):
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real(fd, bytes(data[: left[0]]))
        left[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)


def test_disk_full_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "net.py"
    target.write_text("old contents")
    _enospc_after(monkeypatch, 4)
    with pytest.raises(DiskFull):
        write_file(target, "new contents, longer than the budget")
    assert target.read_text() == "old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["net.py"]  # no temporary left


def test_disk_full_is_a_clear_error_exit_1(tmp_path, monkeypatch, capsys):
    target = tmp_path / "net.py"
    target.write_text("old contents")
    _enospc_after(monkeypatch, 100)
    code, _, err = run(capsys, "build", LENET, "-o", str(target))
    assert code == 1
    assert "disk full" in err and "Traceback" not in err
    assert target.read_text() == "old contents"


def test_disk_full_from_a_writer_that_hides_errno(tmp_path):
    """torch.save reports ENOSPC as a RuntimeError; a real full filesystem (a 64 KiB tmpfs,
    mounted here as root) must still read as 'disk full'."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.system(f"mount -t tmpfs -o size=64k tmpfs {mnt} 2>/dev/null") != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        target = mnt / "w.bin"
        target.write_bytes(b"old")

        def writer(tmp):
            try:
                Path(tmp).write_bytes(b"x" * (1 << 20))
            except OSError:
                raise RuntimeError("PytorchStreamWriter failed writing file") from None

        with pytest.raises(DiskFull):
            write_with(target, writer)
        assert target.read_bytes() == b"old"
        assert [p.name for p in mnt.iterdir()] == ["w.bin"]
    finally:
        os.system(f"umount {mnt}")


# --- outputs that are inputs -------------------------------------------------------------


def test_build_refuses_to_overwrite_its_spec(tmp_path, capsys):
    spec = tmp_path / "net.cnn"
    spec.write_text(Path(LENET).read_text())
    code, _, err = run(capsys, "build", str(spec), "-o", str(spec))
    assert code == 2 and "input file" in err
    assert spec.read_text() == Path(LENET).read_text()


def test_build_refuses_an_output_linked_to_its_spec(tmp_path, capsys):
    spec = tmp_path / "net.cnn"
    spec.write_text(Path(LENET).read_text())
    (tmp_path / "out.py").symlink_to(spec)
    code, _, _ = run(capsys, "build", str(spec), "-o", str(tmp_path / "out.py"))
    assert code == 2 and spec.read_text() == Path(LENET).read_text()


def test_graph_refuses_to_overwrite_its_input(tmp_path, capsys):
    spec = tmp_path / "net.dot"
    spec.write_text(Path(LENET).read_text())
    code, _, err = run(capsys, "graph", str(spec), "-o", str(spec))
    assert code == 2 and "input file" in err
    assert spec.read_text() == Path(LENET).read_text()


# --- file names in error lines and on ASCII consoles ---------------------------------------


def test_file_name_with_newline_and_escape_is_escaped(tmp_path, capsys):
    name = tmp_path / "x\n\x1b[2Jforged.cnn:1:1: error[E000]: fake.cnn"
    name.write_text("input 8x8x3\nconv 8 3x3 strides=2\n")
    code, _, err = run(capsys, "check", str(name))
    assert code == 1
    assert "\x1b" not in err and "\\x1b[2J" in err
    assert err.splitlines()[0].endswith("'conv' has no argument 'strides'")
    assert not any(line.startswith("forged.cnn") for line in err.splitlines())


@pytest.mark.parametrize("command", ["check", "summary", "ir", "build"])
@pytest.mark.parametrize(
    "env", [{"PYTHONIOENCODING": "ascii"}, {"PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}]
)
def test_non_ascii_file_name_under_an_ascii_console(tmp_path, command, env):
    import subprocess
    import sys

    spec = tmp_path / "réseau.cnn"
    spec.write_text("input 8x8x1\nconv 4 3x3\n")
    full = {
        **os.environ,
        "LANG": "C",
        "LC_ALL": "C",
        **env,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    done = subprocess.run(
        [sys.executable, "-m", "cnnspec", command, spec.name],
        capture_output=True,
        env=full,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert b"Traceback" not in done.stderr, done.stderr.decode("ascii", "replace")[-800:]
    assert done.returncode == 0


# --- convert -----------------------------------------------------------------------------


def test_convert_to_keras_on_a_full_disk_keeps_the_old_file(tmp_path):
    """A real full filesystem (a tmpfs as small as the old output, mounted here as root):
    HDF5 segfaulted on it and left a truncated file in place of the old one."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    from cnnspec.backends.torch import build
    from cnnspec.compiler import compile_file

    spec = tmp_path / "net.cnn"
    spec.write_text("input 16x16x1\nconv 64 3x3 same relu\nflatten\ndense 64\n")
    net = build(compile_file(spec))
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, weights)
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.system(f"mount -t tmpfs -o size=1m tmpfs {mnt} 2>/dev/null") != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    old = mnt / "net.weights.h5"
    old.write_bytes(b"an earlier conversion" * 1000)
    try:
        with open(mnt / "filler", "wb") as fh:  # fill what is left
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    except OSError:
        pass
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "cnnspec",
                "convert",
                str(spec),
                "--from",
                "torch",
                "--weights",
                str(weights),
                "-o",
                str(old),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert done.returncode == 1, done.stderr[-2000:]
        assert "disk full" in done.stderr and "Traceback" not in done.stderr
        assert old.read_bytes() == b"an earlier conversion" * 1000
    finally:
        os.system(f"umount {mnt}")


def test_convert_refuses_to_overwrite_its_weights(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"mine")
    code, _, err = run(
        capsys, "convert", LENET, "--from", "keras", "--weights", str(weights), "-o", str(weights)
    )
    assert code == 2 and "input file" in err and weights.read_bytes() == b"mine"


def test_data_paths_are_escaped_in_train_errors(tmp_path, capsys):
    data = tmp_path / "d\n\x1b[2Jspec.cnn:1:1: error"
    data.mkdir()
    code, _, err = run(capsys, "train", LENET, "--data", str(data), "--out", str(tmp_path / "r"))
    assert code == 1 and "\x1b" not in err and "\\x1b[2J" in err
    assert len(err.strip().splitlines()) <= 2  # the message and its hint, nothing forged
