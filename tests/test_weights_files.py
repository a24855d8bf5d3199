"""Weights files given to evaluate, predict, train --resume and convert: read safely, refused
clearly (exit 1, one line, no traceback) when missing, corrupt, a pickle, or of another spec;
the spec's fingerprint travels in the files cnnspec writes (issues 14 and 15)."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest

import cnnspec
from cnnspec.cli import main
from cnnspec.weights import fingerprint as fp

torch = pytest.importorskip("torch")

TINY = """model tiny
input 8x8x1
conv 4 3x3 same relu
maxpool 2
flatten
dense 10 softmax
compile {
  loss sparse_categorical_crossentropy
  optimizer adam lr=0.01
  metrics accuracy
  epochs 1; batch_size 64; validation_split 0.2; seed 3
}
"""
# the same shapes, another network: every tensor fits, only the fingerprint tells them apart
OTHER = TINY.replace("conv 4 3x3 same relu", "conv 4 3x3 same tanh")


class Payload:
    """Unpickling this runs code: it must never be unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    root = tmp_path_factory.mktemp("specs")
    (root / "tiny.cnn").write_text(TINY)
    (root / "other.cnn").write_text(OTHER)
    return root


@pytest.fixture(scope="module")
def run(specs, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    assert (
        main(
            [
                "train",
                str(specs / "tiny.cnn"),
                "--data",
                "digits",
                "--out",
                str(out),
                "--backend",
                "torch",
                "--progress",
                "off",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    return out


def _refused(capsys, argv, *needles) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def _pickle_file(path, marker):
    with open(path, "wb") as fh:
        pickle.dump({"x": Payload(str(marker))}, fh)


# --- the fingerprint ---------------------------------------------------------------------------


def test_the_fingerprint_is_the_networks_not_the_texts():
    a = cnnspec.compile_text(TINY)
    b = cnnspec.compile_text(
        "# a comment\n"
        + TINY.replace("model tiny", "model renamed").replace("epochs 1", "epochs 9"),
        "elsewhere/x.cnn",
    )
    assert fp.fingerprint(a) == fp.fingerprint(b)
    assert fp.fingerprint(a) != fp.fingerprint(cnnspec.compile_text(OTHER))


def test_training_writes_the_fingerprint_and_a_copied_spec_accepts_it(run, specs, tmp_path, capsys):
    model = cnnspec.compile_file(specs / "tiny.cnn")
    assert fp.read(run / "best.safetensors") == fp.fingerprint(model)
    copy = tmp_path / "copy.cnn"
    copy.write_text("# the same network\n" + TINY)
    assert (
        main(
            ["evaluate", str(copy), "--weights", str(run / "best.safetensors"), "--data", "digits"]
        )
        == 0
    )


# --- evaluate / predict ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["does_not_exist.pt", "does_not_exist.bin", "does_not_exist.safetensors"]
)
def test_evaluate_refuses_a_missing_weights_file(specs, tmp_path, capsys, name):
    _refused(
        capsys,
        [
            "evaluate",
            str(specs / "tiny.cnn"),
            "--weights",
            str(tmp_path / name),
            "--data",
            "digits",
        ],
        "no such file",
    )


def test_a_state_dict_of_any_name_is_read_not_ignored(run, specs, tmp_path, capsys):
    from safetensors.torch import load_file

    state = load_file(str(run / "best.safetensors"))
    torch.save(state, tmp_path / "w.bin")
    assert (
        main(
            [
                "evaluate",
                str(specs / "tiny.cnn"),
                "--weights",
                str(run / "best.safetensors"),
                "--data",
                "digits",
                "--format",
                "json",
            ]
        )
        == 0
    )
    want = json.loads(capsys.readouterr().out)
    assert (
        main(
            [
                "evaluate",
                str(specs / "tiny.cnn"),
                "--weights",
                str(tmp_path / "w.bin"),
                "--data",
                "digits",
                "--format",
                "json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["metrics"] == want["metrics"]
    state["dense1.weight"] = torch.zeros(10, 3)  # another network's shapes
    torch.save(state, tmp_path / "bad.pth")
    _refused(
        capsys,
        [
            "evaluate",
            str(specs / "tiny.cnn"),
            "--weights",
            str(tmp_path / "bad.pth"),
            "--data",
            "digits",
        ],
        "dense1.weight",
    )


def test_weights_of_another_spec_are_refused_naming_both(run, specs, capsys):
    err = _refused(
        capsys,
        [
            "predict",
            str(specs / "other.cnn"),
            str(_image(specs)),
            "--weights",
            str(run / "best.safetensors"),
        ],
        "another network",
    )
    assert "other.cnn" in err and str(run / "best.safetensors") in err


def _image(folder):
    from PIL import Image

    path = folder / "digit.png"
    if not path.exists():
        Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(path)
    return path


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_corrupt_and_pickle_weights_are_refused_and_nothing_runs(specs, tmp_path, capsys, command):
    marker = tmp_path / "PWNED"
    _pickle_file(tmp_path / "evil.pt", marker)
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    for weights in ("evil.pt", "junk.safetensors"):
        extra = [str(_image(specs))] if command == "predict" else ["--data", "digits"]
        _refused(
            capsys,
            [command, str(specs / "tiny.cnn"), *extra, "--weights", str(tmp_path / weights)],
            weights,
        )
    assert not marker.exists()


def test_keras_weights_must_be_weights_h5(specs, tmp_path, capsys):
    (tmp_path / "w.h5").write_bytes(b"")
    _refused(
        capsys,
        [
            "evaluate",
            str(specs / "tiny.cnn"),
            "--weights",
            str(tmp_path / "w.h5"),
            "--data",
            "digits",
            "--backend",
            "keras",
        ],
        ".weights.h5",
    )
    _refused(
        capsys,
        [
            "evaluate",
            str(specs / "tiny.cnn"),
            "--weights",
            str(tmp_path / "gone.weights.h5"),
            "--data",
            "digits",
        ],
        "no such file",
    )


# --- train --resume ----------------------------------------------------------------------------


def _copy(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _resume(specs, out, spec="tiny.cnn"):
    return [
        "train",
        str(specs / spec),
        "--data",
        "digits",
        "--out",
        str(out),
        "--backend",
        "torch",
        "--progress",
        "off",
        "--threads",
        "1",
        "--epochs",
        "2",
        "--resume",
    ]


def test_resume_refuses_a_pickle_in_the_optimizer_state(run, specs, tmp_path, capsys):
    out = _copy(run, tmp_path)
    marker = tmp_path / "PWNED"
    state = json.loads((out / "checkpoint.json").read_text())
    optim = next(f for f in state["files"]["last"] if f.endswith(".optim.pt"))
    _pickle_file(out / optim, marker)
    _refused(capsys, _resume(specs, out), "optimizer state")
    assert not marker.exists()


ESCAPING = (
    '{"epoch": 0, "history": [], "best_epoch": 0, "bad_epochs": 0, "schedule": {},'
    ' "files": {"last": ["../../etc/x"]}}'
)


@pytest.mark.parametrize("text", ['{"epoch": 0, "hist', "[1, 2]", ESCAPING])
def test_resume_refuses_a_corrupt_checkpoint_json(run, specs, tmp_path, capsys, text):
    out = _copy(run, tmp_path)
    (out / "checkpoint.json").write_text(text)
    _refused(capsys, _resume(specs, out), "checkpoint.json")


def test_resume_refuses_a_run_of_another_spec(run, specs, tmp_path, capsys):
    out = _copy(run, tmp_path)
    _refused(capsys, _resume(specs, out, "other.cnn"), "another network")


# --- convert -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pickle", "corrupt"])
def test_convert_refuses_unreadable_weights(specs, tmp_path, capsys, kind):
    marker = tmp_path / "PWNED"
    src = tmp_path / "w.pt"
    if kind == "pickle":
        _pickle_file(src, marker)
    else:
        src.write_bytes(os.urandom(256))
    _refused(
        capsys,
        [
            "convert",
            str(specs / "tiny.cnn"),
            "--from",
            "torch",
            "--weights",
            str(src),
            "-o",
            str(tmp_path / "out.weights.h5"),
        ],
        "w.pt",
    )
    assert not marker.exists() and not (tmp_path / "out.weights.h5").exists()


def test_convert_writes_atomically_and_marks_the_spec(run, specs, tmp_path, capsys, monkeypatch):
    from cnnspec import convert

    spec, out = str(specs / "tiny.cnn"), tmp_path / "k.weights.h5"
    assert (
        main(
            [
                "convert",
                spec,
                "--from",
                "torch",
                "--weights",
                str(run / "best.safetensors"),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert fp.read(out) == fp.fingerprint(cnnspec.compile_file(spec))
    back = tmp_path / "t.safetensors"
    assert main(["convert", spec, "--from", "keras", "--weights", str(out), "-o", str(back)]) == 0
    assert fp.read(back) == fp.read(out)
    before = out.read_bytes()

    def full_disk(net, model, path):  # half a file, then the disk is full
        with open(path, "wb") as fh:
            fh.write(before[: len(before) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert, "save_keras_weights", full_disk)
    _refused(
        capsys,
        [
            "convert",
            spec,
            "--from",
            "torch",
            "--weights",
            str(run / "best.safetensors"),
            "-o",
            str(out),
        ],
        "No space left",
    )
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.weights.h5", "t.safetensors"]
    capsys.readouterr()
    _refused(
        capsys,
        [
            "convert",
            str(specs / "other.cnn"),
            "--from",
            "keras",
            "--weights",
            str(out),
            "-o",
            str(tmp_path / "x.safetensors"),
        ],
        "another network",
    )


def test_keras_reads_weights_marked_with_the_fingerprint(specs, tmp_path):
    from cnnspec.backends.keras import build
    from cnnspec.convert import load_keras_weights, save_keras_weights

    model = cnnspec.compile_file(specs / "tiny.cnn")
    net, other = build(model), build(model)
    save_keras_weights(net, model, str(tmp_path / "w.weights.h5"))
    load_keras_weights(other, model, str(tmp_path / "w.weights.h5"))
    for a, b in zip(net.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(fp.ForeignWeights, match="another network"):
        load_keras_weights(other, cnnspec.compile_text(OTHER), str(tmp_path / "w.weights.h5"))
