"""Run folders of `cnnspec train` (issue 14): an earlier run or the user's own files are
never replaced without --resume or --overwrite, one training at a time holds a folder, the
folder is never inside the data or above where it belongs, and misuse of the command line
is a clear error, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnspec.cli import main
from cnnspec.train import run_folder

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
EXAMPLES = ROOT / "examples"
TINY = """model tiny
input 8x8x1
conv 4 3x3 same relu
flatten
dense 10 softmax
compile {
  optimizer sgd lr=0.05
  epochs 1; batch_size 64; validation_split 0.2; seed 1
}
"""


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def cli(*argv, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "cnnspec", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.cnn"
    path.write_text(TINY)
    return path


def _train(spec, out, *extra):
    return (
        "train",
        str(spec),
        "--data",
        "digits",
        "--out",
        str(out),
        "--progress",
        "off",
        "--threads",
        "1",
        *extra,
    )


# --- existing runs -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["result.json", "history.csv", "checkpoint.json"])
def test_a_folder_holding_a_run_is_refused(tmp_path, tiny, capsys, name):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_text("the user's own\n")
    code, _, err = run(capsys, *_train(tiny, out))
    assert code == 1 and "already holds a run" in err and "--overwrite" in err
    assert (out / name).read_text() == "the user's own\n"
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == [name]


def test_overwrite_replaces_the_old_run(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    (out / ".ckpt").mkdir(parents=True)
    (out / ".ckpt" / "e0041.safetensors").write_text("stale")
    (out / "result.json").write_text('{"old": true}')
    (out / "notes.txt").write_text("mine")
    code, _, err = run(capsys, *_train(tiny, out, "--overwrite"))
    assert code == 0, err
    assert "old" not in json.loads((out / "result.json").read_text())
    assert not (out / ".ckpt" / "e0041.safetensors").exists()
    assert (out / "notes.txt").read_text() == "mine"  # not a run file: kept


def test_resume_and_overwrite_together_is_a_usage_error(tmp_path, tiny, capsys):
    code, _, err = run(capsys, *_train(tiny, tmp_path / "run", "--resume", "--overwrite"))
    assert code == 2 and "give one" in err


def test_a_second_training_into_a_locked_folder_names_the_first(tmp_path, tiny):
    out = tmp_path / "run"
    with run_folder.Lock(out):  # this process stands for the first training
        done = cli(*_train(tiny, out))
    assert done.returncode == 1, done.stderr
    assert f"in use by another training (pid {os.getpid()})" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (out / "history.csv").exists()


def test_the_lock_is_free_again_after_a_run(tmp_path):
    with run_folder.Lock(tmp_path):
        pass
    with run_folder.Lock(tmp_path):  # would raise if the first were still held
        pass


def test_out_inside_the_data_folder_is_refused(tmp_path, tiny, capsys):
    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
    code, _, err = run(
        capsys, "train", str(tiny), "--data", str(data), "--out", str(data / "runs" / "x")
    )
    assert code == 1 and "inside the data folder" in err
    assert not (data / "runs").exists()


def test_a_spec_named_dots_does_not_train_into_the_parent(tmp_path):
    """`...cnn` gets the model name `..`: the default runs/<name> must stay under runs/."""
    work = tmp_path / "work"
    (work / "runs" / "model").mkdir(parents=True)
    (work / "runs" / "model" / "result.json").write_text("{}")  # refusal proves the path
    (work / "...cnn").write_text(TINY.replace("model tiny\n", ""))
    done = cli("train", "...cnn", "--data", "digits", "--progress", "off", cwd=work)
    assert done.returncode == 1 and "runs/model already holds a run" in done.stderr
    assert sorted(p.name for p in work.iterdir()) == ["...cnn", "runs"]


def test_folder_names_are_safe():
    assert run_folder.folder_name("..") == "model"
    assert run_folder.folder_name("../../etc") == "_.._etc"
    assert "/" not in run_folder.folder_name("a/b") and run_folder.folder_name("") == "model"


# --- resume of something else ----------------------------------------------------------------


def test_resume_of_another_specs_run_is_a_clear_error(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    assert run(capsys, *_train(tiny, out))[0] == 0
    other = tmp_path / "other.cnn"
    other.write_text(TINY.replace("conv 4", "conv 8"))
    code, _, err = run(capsys, *_train(other, out, "--resume", "--epochs", "2"))
    assert code == 1 and "holds a run of" in err and "Traceback" not in err


def test_resume_of_a_corrupt_checkpoint_json_is_a_clear_error(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.json").write_text('{"epoch": 0, "hist')
    code, _, err = run(capsys, *_train(tiny, out, "--resume"))
    assert code == 1 and "corrupt" in err


def test_gan_resume_of_a_pickle_payload_is_refused_cleanly(tmp_path, capsys):
    import pickle

    out = tmp_path / "gan"
    out.mkdir()

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    (out / "generate_state.pt").write_bytes(pickle.dumps(Payload()))
    code, _, err = run(
        capsys,
        "train",
        str(EXAMPLES / "dcgan_digits_generator.cnn"),
        "--discriminator",
        str(EXAMPLES / "dcgan_digits_discriminator.cnn"),
        "--data",
        "digits",
        "--out",
        str(out),
        "--resume",
        "--no-judge",
        "--epochs",
        "1",
        "--max-batches",
        "1",
        "--progress",
        "off",
    )
    assert code == 1 and "cannot be read as a resume state" in err
    assert not (tmp_path / "PWNED").exists()


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("threads", ["-1", "0", "100000"])
def test_threads_out_of_range(tmp_path, tiny, threads):
    done = cli(
        "train", str(tiny), "--data", "digits", "--out", str(tmp_path / "r"), "--threads", threads
    )
    assert done.returncode == 2 and "--threads must be between 1 and" in done.stderr


def test_decoder_equal_to_the_encoder(capsys, tmp_path):
    vae = str(SPECS / "vae.cnn")
    code, _, err = run(
        capsys, "train", vae, "--decoder", vae, "--data", "digits", "--out", str(tmp_path / "r")
    )
    assert code == 2 and "is the spec being trained" in err


def test_decoder_with_discriminator(capsys, tmp_path):
    code, _, err = run(
        capsys,
        "train",
        str(SPECS / "vae.cnn"),
        "--decoder",
        str(SPECS / "vae_decoder.cnn"),
        "--discriminator",
        str(SPECS / "dcgan_discriminator.cnn"),
        "--data",
        "digits",
    )
    assert code == 2 and "not allowed with" in err


def test_a_classifier_is_not_a_dcgan_discriminator(capsys, tmp_path):
    lenet = str(SPECS / "lenet5.cnn")
    code, _, err = run(
        capsys,
        "train",
        str(EXAMPLES / "dcgan_digits_generator.cnn"),
        "--discriminator",
        lenet,
        "--data",
        "digits",
        "--out",
        str(tmp_path / "r"),
        "--no-judge",
    )
    assert code == 1 and f"{lenet}:16:1: error[E523]" in err
    assert "Traceback" not in err


def test_a_decoder_that_does_not_fit_the_latent(capsys, tmp_path):
    decoder = tmp_path / "dec.cnn"
    decoder.write_text((SPECS / "vae_decoder.cnn").read_text().replace("input 16", "input 8"))
    code, _, err = run(
        capsys,
        "train",
        str(SPECS / "vae.cnn"),
        "--decoder",
        str(decoder),
        "--data",
        "digits",
        "--out",
        str(tmp_path / "r"),
        "--no-judge",
    )
    assert code == 1 and "error[E521]: the decoder reads 8 but the encoder's latent" in err
    assert f"{decoder}:" in err


# --- a full disk ------------------------------------------------------------------------------


def test_train_on_a_full_disk_says_disk_full(tmp_path, tiny):
    """A real full filesystem: a 48 KiB tmpfs (mounted here as root; skipped where mounting
    is not allowed). The first checkpoint does not fit."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.system(f"mount -t tmpfs -o size=48k tmpfs {mnt} 2>/dev/null") != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        done = cli(*_train(tiny, mnt / "run"))
        assert done.returncode == 1, done.stderr
        assert "disk full" in done.stderr and "Traceback" not in done.stderr
    finally:
        os.system(f"umount {mnt}")
