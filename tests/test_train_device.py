"""--device and mixed precision in the torch trainer. The device choice (which GPU, NCCL or
gloo, float16 + GradScaler or bfloat16) is a pure function, tested here without a GPU; the
CUDA paths themselves run in bench/gpu_check.py on a machine that has one."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnspec
from cnnspec.cli import main
from cnnspec.train import devices
from cnnspec.train.devices import DeviceError, amp_policy, choose, process_group_backend

ROOT = Path(__file__).resolve().parents[1]
TINY = """model tiny
input 8x8x1
conv 8 3x3 same relu
flatten
dense 10 softmax
compile {
  optimizer adam lr=0.01
  metrics accuracy top5
  epochs 2; batch_size 64; validation_split 0.2; seed 3
}
"""


def _rows(out: Path) -> list[dict]:
    with open(out / "history.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.cnn"
    path.write_text(TINY)
    return path


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without CUDA, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def _train(spec, out, *extra) -> int:
    return main(
        [
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
        ]
    )


# --- the choice, as a table ------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, gpus, kw, want",
    [
        ("auto", 0, {}, "cpu"),
        ("auto", 2, {}, "cuda:0"),
        ("auto", 2, {"local_rank": 1, "world": 2}, "cuda:1"),  # torchrun: one GPU per rank
        ("cuda", 4, {"local_rank": 3, "world": 4}, "cuda:3"),
        ("cuda", 1, {}, "cuda:0"),
        ("cuda:1", 2, {}, "cuda:1"),
        ("CPU", 2, {}, "cpu"),
        ("cpu", 2, {"local_rank": 1, "world": 2}, "cpu"),
        ("mps", 0, {"mps": True}, "mps"),
    ],
)
def test_device_choice(text, gpus, kw, want):
    assert choose(text, gpus, **kw) == want


@pytest.mark.parametrize(
    "text, gpus, kw, words",
    [
        ("cuda", 0, {}, "torch sees no CUDA device"),
        ("cuda:0", 0, {"cuda_built": False}, "no CUDA support"),
        ("cuda:2", 2, {}, "cuda:0..cuda:1"),
        ("cuda", 2, {"local_rank": 2, "world": 3}, "has 2 CUDA device(s)"),  # --nproc 3
        ("cuda:1", 2, {"local_rank": 0, "world": 2}, "use --device cuda"),
        ("mps", 0, {}, "no Apple GPU"),
    ],
)
def test_unavailable_devices_are_refused_with_a_reason(text, gpus, kw, words):
    with pytest.raises(DeviceError, match=None) as info:
        choose(text, gpus, **kw)
    assert words in str(info.value)


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "cuda0", "tpu", "", "cpu:0"])
def test_misspelt_devices_are_usage_errors(text):
    with pytest.raises(argparse.ArgumentTypeError, match="auto, cpu, cuda, cuda:N or mps"):
        devices.parse(text)


def test_process_group_and_precision_follow_the_device():
    assert [process_group_backend(d) for d in ("cuda:0", "cuda:3", "cpu", "mps")] == [
        "nccl",
        "nccl",
        "gloo",
        "gloo",
    ]
    assert amp_policy("cuda:1") == ("float16", True)  # float16 needs loss scaling
    assert amp_policy("cpu") == ("bfloat16", False)  # bfloat16 does not
    assert amp_policy("mps") == ("float16", True)


# --- the command line --------------------------------------------------------------------------
def test_invalid_device_is_a_usage_error(tiny, tmp_path, capsys):
    for argv in (
        ["train", str(tiny), "--data", "digits", "--device", "gpu0"],
        [
            "evaluate",
            str(tiny),
            "--weights",
            "w.safetensors",
            "--data",
            "digits",
            "--device",
            "cuda:one",
        ],
        ["predict", str(tiny), "x.png", "--weights", "w.safetensors", "--device", "tpu"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "argument --device" in err and "Traceback" not in err


def test_cuda_without_cuda_is_a_clear_error(tiny, tmp_path, capsys, no_cuda):
    for argv in (
        ["train", str(tiny), "--data", "digits", "--out", str(tmp_path / "o")],
        ["train", str(tiny), "--data", "digits", "--nproc", "2"],
        ["evaluate", str(tiny), "--weights", "w.safetensors", "--data", "digits"],
        ["predict", str(tiny), "x.png", "--weights", "w.safetensors"],
    ):
        assert main([*argv, "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert "--device cuda: torch sees no CUDA device" in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_keras_refuses_a_torch_device(tiny, tmp_path, capsys):
    assert _train(tiny, tmp_path / "k", "--backend", "keras", "--device", "cuda:0") == 2
    assert "--device is for the torch backend" in capsys.readouterr().err


def test_explicit_cpu_is_the_auto_run_here(tiny, tmp_path, no_cuda):
    assert _train(tiny, tmp_path / "cpu", "--epochs", "1", "--device", "cpu") == 0
    assert _train(tiny, tmp_path / "auto", "--epochs", "1") == 0
    assert _rows(tmp_path / "cpu") == _rows(tmp_path / "auto")
    for run in ("cpu", "auto"):  # result.json says where it ran
        assert json.loads((tmp_path / run / "result.json").read_text())["device"] == "cpu"
    from cnnspec.train.plan import make_plan
    from cnnspec.train.session import make_backend

    model = cnnspec.compile_file(tiny)
    be = make_backend("torch", model, make_plan(model), 0, device="cpu")
    assert {p.device.type for p in be.net.parameters()} == {"cpu"}


# --- mixed precision (bfloat16 on CPU) -------------------------------------------------------
@pytest.fixture(scope="module")
def amp_spec(tmp_path_factory) -> Path:
    # a step schedule: the same rates whether a run is told 2 or 3 epochs (resume below)
    text = (
        (ROOT / "specs" / "lenet5.cnn")
        .read_text()
        .replace("epochs 15;", "mixed_precision true; epochs 3;")
        .replace("schedule cosine", "schedule step step_size=2 gamma=0.5")
    )
    path = tmp_path_factory.mktemp("amp") / "lenet5_amp.cnn"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def amp_run(amp_spec, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("amp-run")
    assert _train(amp_spec, out, "--device", "cpu") == 0
    return out


def test_mixed_precision_trains_lenet5_on_digits(amp_run):
    """bfloat16 autocast, float32 losses: LeNet-5 reaches over 90% held-out accuracy in 3
    epochs (measured 0.966; float32 0.961 with the same settings)."""
    result = json.loads((amp_run / "result.json").read_text())
    assert result["metrics"]["accuracy"] >= 0.9, result["metrics"]
    rows = _rows(amp_run)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_mixed_precision_runs_in_bfloat16(amp_spec):
    from cnnspec.train.plan import make_plan
    from cnnspec.train.torch_backend import TorchBackend

    model = cnnspec.compile_file(amp_spec)
    be = TorchBackend(model, make_plan(model, 10), seed=0)
    assert be.amp and be.amp_dtype == torch.bfloat16 and be.scaler is None
    seen = []
    conv = next(m for m in be.net.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.random((4, 32, 32, 1), np.float32),
        "y": np.arange(4),
        "present": np.ones(4, np.float32),
    }
    losses, outs = be.train_step(batch)
    assert seen == [torch.bfloat16]  # the conv ran in bfloat16
    assert outs[0].dtype == torch.float32 and isinstance(losses["loss"], float)
    assert {p.dtype for p in be.net.parameters()} == {torch.float32}  # master weights


def test_mixed_precision_checkpoint_round_trips(amp_run, amp_spec, capsys):
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(amp_spec),
                "--weights",
                str(amp_run / "last.safetensors"),
                "--data",
                "digits",
                "--device",
                "cpu",
                "--format",
                "json",
            ]
        )
        == 0
    )
    got = json.loads(capsys.readouterr().out)
    want = json.loads((amp_run / "result.json").read_text())["metrics"]
    assert got["metrics"]["accuracy"] == pytest.approx(want["accuracy"])
    assert got["metrics"]["loss"] == pytest.approx(want["loss"], rel=1e-4)


def test_mixed_precision_resume_equals_a_straight_run(amp_run, amp_spec, tmp_path):
    out = tmp_path / "split"
    assert _train(amp_spec, out, "--device", "cpu", "--epochs", "2") == 0
    state = json.loads((out / "checkpoint.json").read_text())
    assert state["epoch"] == 1
    # resume to the spec's 3: the rates, batches, shifts and SGD momentum are the same
    assert _train(amp_spec, out, "--device", "cpu", "--resume") == 0
    assert _rows(out) == _rows(amp_run)


# --- the loss scaler's state travels with the optimizer's --------------------------------------
def _scaled_backend(model, plan):
    from cnnspec.train.torch_backend import TorchBackend

    be = TorchBackend(model, plan, seed=0)
    # CUDA's path on CPU: torch.amp.GradScaler works on any device type
    be.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    return be


def test_scaler_state_is_saved_and_restored(tiny, tmp_path):
    from cnnspec.train.plan import make_plan

    model = cnnspec.compile_file(tiny)
    plan = make_plan(model, 10)
    be = _scaled_backend(model, plan)
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.random((8, 8, 8, 1), np.float32),
        "y": rng.integers(0, 10, 8),
        "present": np.ones(8, np.float32),
    }
    for _ in range(3):
        be.train_step(batch)
    assert be.scaler.get_scale() == 2.0**13  # grew once per finite step
    files = be.save(str(tmp_path / "e0"))
    other = _scaled_backend(model, plan)
    other.load(files)
    assert other.scaler.state_dict() == be.scaler.state_dict()
    assert other.opt.state_dict()["state"][0]["step"] == 3
    a, b = be.train_step(batch)[0], other.train_step(batch)[0]
    assert a == b


def test_optimizer_files_from_before_the_scaler_still_load(tiny, tmp_path):
    from cnnspec.train.plan import make_plan
    from cnnspec.train.torch_backend import TorchBackend

    model = cnnspec.compile_file(tiny)
    be = TorchBackend(model, make_plan(model, 10), seed=0)
    rng = np.random.default_rng(0)
    be.train_step(
        {
            "x": rng.random((8, 8, 8, 1), np.float32),
            "y": rng.integers(0, 10, 8),
            "present": np.ones(8, np.float32),
        }
    )
    weights = be.save(str(tmp_path / "e0"))[0]
    old = str(tmp_path / "old.optim.pt")
    torch.save(be.opt.state_dict(), old)  # the earlier format
    other = TorchBackend(model, make_plan(model, 10), seed=1)
    other.load([weights, old])
    assert other.opt.state_dict()["state"][0]["step"] == 1


# --- metrics counted on the device agree with the numpy ones ---------------------------------
@pytest.mark.parametrize(
    "units, metrics", [(10, "accuracy top5"), (3, "accuracy top5"), (1, "accuracy")]
)
def test_device_meter_counts_what_the_numpy_meter_counts(tmp_path, units, metrics):
    from cnnspec.train.metrics import Meter
    from cnnspec.train.plan import make_plan
    from cnnspec.train.torch_backend import TorchMeter

    act, loss = ("sigmoid", "bce") if units == 1 else ("softmax", "sparse_cce")
    path = tmp_path / "net.cnn"
    path.write_text(
        TINY.replace("dense 10 softmax", f"dense {units} {act}").replace(
            "metrics accuracy top5", f"loss {loss}\n  metrics {metrics}"
        )
    )
    plan = make_plan(cnnspec.compile_file(path))
    rng = np.random.default_rng(units)
    ours, ref = TorchMeter(plan), Meter(plan)
    for n in (32, 32, 7):
        logits = torch.from_numpy(rng.normal(size=(n, units))).float()
        prob = torch.softmax(logits, 1) if units > 1 else torch.sigmoid(logits)
        batch = {"y": rng.integers(0, max(units, 2), n)}
        # the torch backend hands its meter the logits of K > 1 heads (their order is the
        # probabilities' order), the probability of a single unit
        ours.update([logits if units > 1 else prob], batch)
        ref.update([prob.numpy()], batch)
        assert ours.result() == ref.result()  # read mid-epoch, as the progress bar does
    assert ours.state() == ref.state()
