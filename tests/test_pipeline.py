"""The streaming input pipeline: sources index without decoding, batches decode per sample
in the frameworks' loaders, shards split an epoch exactly, and two "machines" (two local
torchrun process groups meeting on 127.0.0.1) train as one process does."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnspec.data import index, load, write_shapes
from cnnspec.data import samples as samples_module

ROOT = Path(__file__).resolve().parents[1]
TINY = """model tiny
input 8x8x1
conv 8 3x3 same relu
flatten
dense 10 softmax
compile { optimizer sgd lr=0.05 momentum=0.9; epochs 2; batch_size 32; seed 5 }
"""


@pytest.fixture
def decodes(monkeypatch):
    """Counts the images decoded (every file source decodes through decode_image)."""
    seen = []
    real = samples_module.decode_image

    def counting(path, size, channels):
        seen.append(path)
        return real(path, size, channels)

    monkeypatch.setattr(samples_module, "decode_image", counting)
    return seen


@pytest.mark.parametrize(
    "fmt, task",
    [("folder", "classify"), ("segmentation", "segment"), ("coco", "detect"), ("voc", "detect")],
)
def test_every_file_source_streams(tmp_path, decodes, fmt, task):
    """Indexing decodes no image and the first batch decodes only its own: a source that
    decoded everything up front fails here."""
    from cnnspec.data.torch_loader import set_epoch, torch_loader

    write_shapes(tmp_path, fmt, n=24, size=16, seed=3)
    samples = index(str(tmp_path), (16, 16, 3), task)
    assert len(samples) >= 20 and decodes == []
    loader = torch_loader(samples, 4, train=True, seed=0, workers=0)
    set_epoch(loader, 0)
    batch = next(iter(loader))
    assert batch["x"].shape == (4, 16, 16, 3) and batch["x"].dtype == np.float32
    assert len(decodes) == 4
    assert sorted(map(str, decodes)) == sorted(
        str(samples.reader.paths[samples.rows[i]]) for i in batch["index"]
    )


def test_streamed_samples_equal_the_loaded_arrays(tmp_path):
    write_shapes(tmp_path, "segmentation", n=12, size=16, seed=1)
    whole = load(str(tmp_path), (16, 16, 3), "segment")
    samples = index(str(tmp_path), (16, 16, 3), "segment")
    for i in (0, 5, 11):
        one = samples.sample(i)
        assert np.array_equal(one["x"], whole.x[i]) and np.array_equal(one["masks"], whole.masks[i])


@pytest.mark.parametrize(
    "paths",
    [
        ["/data/train/cat/1.jpg", "/data/train/cat/2.jpg", "/data/train/dog/10.jpg"],
        ["/d/été/ü.png", "/d/été/ñ.png", "/d/\udcff.png"],  # \udcff: an undecodable byte
        ["/only/one.jpg"],
        ["a.jpg", "b.jpg"],  # nothing shared
        [],
    ],
)
def test_path_array_gives_back_every_path(paths):
    """Paths are held as their shared prefix and bytes of the rest; each row reads back as
    the same str, whatever its characters (os.fsencode's surrogateescape included)."""
    held = samples_module.path_array([Path(p) for p in paths])
    assert len(held) == len(paths)
    assert [held[i] for i in range(len(paths))] == paths
    assert samples_module.path_array(held) is held
    assert all(p.startswith(held.prefix) for p in paths)
    if paths and paths[0].startswith("/data/"):  # 1 byte a character after the prefix
        assert held.prefix == "/data/train/" and held.rest.dtype == np.dtype("S10")


def test_ram_cache_keeps_uint8_and_gives_the_same_batches(tmp_path):
    write_shapes(tmp_path, "folder", n=12, size=16, seed=2)
    streamed = index(str(tmp_path), (16, 16, 3), "classify")
    cached = index(str(tmp_path), (16, 16, 3), "classify", cache="ram")
    assert cached.reader.x.dtype == np.uint8 and cached.reader.x.shape == (12, 16, 16, 3)
    for i in range(12):
        assert np.array_equal(streamed.sample(i)["x"], cached.sample(i)["x"])


@pytest.mark.parametrize("n, world", [(12, 3), (10, 3), (7, 2)])
def test_shards_cover_each_sample_once_and_make_up_the_global_batch(n, world):
    """DistributedSampler strides one permutation over the ranks: every sample goes to one
    rank; where world does not divide n, torch repeats (world - n % world) samples so that
    the ranks take the same number of steps (DDP's collectives need it)."""
    from cnnspec.data.samples import ArrayImages, Samples
    from cnnspec.data.torch_loader import set_epoch, torch_loader

    data = Samples(
        ArrayImages(np.zeros((n, 2, 2, 1), np.float32)),
        y=np.zeros(n),
        classes=["a"],
        input_shape=(2, 2, 1),
    )
    batch = 2 * world
    for epoch in (0, 1):
        per_rank = []
        for rank in range(world):
            loader = torch_loader(
                data, batch, train=True, seed=4, workers=0, rank=rank, world=world
            )
            set_epoch(loader, epoch)
            per_rank.append([b["index"].tolist() for b in loader])
        rows = [i for batches in per_rank for b in batches for i in b]
        assert set(rows) == set(range(n))
        assert len(rows) == n + (-n) % world
        one = torch_loader(data, batch, train=True, seed=4, workers=0)
        set_epoch(one, epoch)
        if n % world == 0:  # the ranks' batch k together is the one-process batch k
            for k, whole in enumerate(one):
                assert sorted(i for r in per_rank for i in r[k]) == sorted(whole["index"])


def test_augmentation_is_the_same_whatever_the_workers(tmp_path):
    from cnnspec.data import parse_ops
    from cnnspec.data.torch_loader import set_epoch, torch_loader

    write_shapes(tmp_path, "folder", n=8, size=16, seed=2)
    samples = index(str(tmp_path), (16, 16, 3), "classify")
    got = []
    for workers in (0, 2):
        loader = torch_loader(
            samples, 4, train=True, seed=1, ops=parse_ops(["flip", "crop 2"]), workers=workers
        )
        set_epoch(loader, 3)
        got.append(np.concatenate([b["x"] for b in loader]))
    assert np.array_equal(got[0], got[1])


def _children() -> set[int]:
    """This process's living child processes (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.add(int(entry))
    return found


def test_one_set_of_workers_lives_at_a_time_and_restarted_ones_repeat_the_batches(tmp_path):
    # each forked worker holds (in RSS) the trainer's pages: the training set's persistent
    # workers end while the validation set is read, and start again for the next epoch
    from cnnspec.data import parse_ops
    from cnnspec.data.torch_loader import set_epoch, torch_loader

    write_shapes(tmp_path, "folder", n=12, size=16, seed=2)
    samples = index(str(tmp_path), (16, 16, 3), "classify")
    train, held_out = samples.split(0.25, seed=0)
    before = _children()
    ops = parse_ops(["flip", "crop 2"])
    fit = torch_loader(train, 4, train=True, seed=1, ops=ops, workers=2)
    check = torch_loader(held_out, 4, train=False, seed=1, workers=2)
    runs = []
    for epoch in (0, 1, 0):
        set_epoch(fit, epoch)
        runs.append(np.concatenate([b["x"] for b in fit]))
        assert len(_children() - before) == 2
        set_epoch(check, epoch)
        assert sum(len(b["x"]) for b in check) == len(held_out)
        assert len(_children() - before) == 2
    assert not np.array_equal(runs[0], runs[1]) and np.array_equal(runs[0], runs[2])


def _rows(out: Path) -> list[dict]:
    with open(out / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_train_as_one_process(tmp_path):
    """Two torchrun process groups (--nnodes 2, one process each, rendezvous on 127.0.0.1)
    against one process with the same global batch: losses and accuracies agree within
    2e-3 (floating-point reduction order; the sampler's padding of the last batch)."""
    spec = tmp_path / "tiny.cnn"
    spec.write_text(TINY)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    base = [
        sys.executable,
        "-m",
        "cnnspec",
        "train",
        str(spec),
        "--data",
        "digits",
        "--progress",
        "off",
        "--workers",
        "0",
    ]
    single = subprocess.run(
        [*base, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = [
        subprocess.Popen(
            [
                *base,
                "--out",
                str(tmp_path / f"node{r}"),
                "--nnodes",
                "2",
                "--node-rank",
                str(r),
                "--rdzv-endpoint",
                endpoint,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    for node in nodes:
        _, err = node.communicate(timeout=400)
        assert node.returncode == 0, err[-3000:]
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "node0")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=2e-3, abs=2e-3), key
    result = json.loads((tmp_path / "node0" / "result.json").read_text())
    assert result["processes"] == 2
    assert not (tmp_path / "node1" / "result.json").exists()  # rank 0 alone writes


def test_cli_trains_from_a_folder_with_worker_processes(tmp_path):
    from cnnspec.cli import main

    write_shapes(tmp_path / "data", "folder", n=24, size=8, seed=0)
    spec = tmp_path / "tiny.cnn"
    spec.write_text(
        TINY.replace("8x8x1", "8x8x3")
        .replace("dense 10", "dense 3")
        .replace("epochs 2", "epochs 1")
        .replace("batch_size 32", "batch_size 8")
    )
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(spec),
                "--data",
                str(tmp_path / "data"),
                "--workers",
                "2",
                "--out",
                str(out),
                "--progress",
                "off",
            ]
        )
        == 0
    )
    assert json.loads((out / "result.json").read_text())["n_train"] > 0


def test_bad_flags_are_usage_errors(tmp_path, capsys):
    from cnnspec.cli import main

    spec = tmp_path / "tiny.cnn"
    spec.write_text(TINY)
    for flags, said in (
        (["--workers", "-1"], "--workers"),
        (["--nnodes", "2", "--node-rank", "2"], "--node-rank"),
        (["--nnodes", "2"], "--rdzv-endpoint"),
        (["--nnodes", "2", "--rdzv-endpoint", "node0"], "HOST:PORT"),
    ):
        assert main(["train", str(spec), "--data", "digits", *flags]) == 2
        assert said in capsys.readouterr().err


def test_result_names_the_kept_checkpoint_and_the_last_epoch(tmp_path, capsys):
    """lr 0.3 makes epoch 3 the best and epoch 4 worse: result.json's metrics are best.*'s,
    which `cnnspec evaluate` reproduces, and the last epoch's are reported beside them."""
    from cnnspec.cli import main

    spec = tmp_path / "tiny.cnn"
    spec.write_text(TINY.replace("lr=0.05", "lr=0.3").replace("epochs 2", "epochs 4"))
    out = tmp_path / "run"
    assert (
        main(["train", str(spec), "--data", "digits", "--out", str(out), "--progress", "off"]) == 0
    )
    said = capsys.readouterr().out
    assert "kept checkpoint (best.*, epoch 3)" in said and "last epoch (4)" in said
    result = json.loads((out / "result.json").read_text())
    assert (result["kept"], result["best_epoch"], result["last_epoch"]) == ("best", 3, 4)
    assert result["metrics"]["loss"] < result["last_epoch_metrics"]["loss"]
    assert (
        main(
            [
                "evaluate",
                str(spec),
                "--weights",
                str(out / "best.safetensors"),
                "--data",
                "digits",
                "--format",
                "json",
            ]
        )
        == 0
    )
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    for key, value in result["metrics"].items():
        assert evaluated[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


def test_keras_loader_with_workers_gives_the_same_batches(tmp_path):
    pytest.importorskip("tensorflow")
    from cnnspec.data import parse_ops
    from cnnspec.data.loading import keras_batches

    write_shapes(tmp_path, "segmentation", n=10, size=16, seed=4)
    samples = index(str(tmp_path), (16, 16, 3), "segment")
    ops = parse_ops(["flip", "rotate 20"])
    runs = [
        list(keras_batches(samples, 4, train=True, seed=2, epoch=1, ops=ops, workers=w))
        for w in (0, 2)
    ]
    assert [len(b["x"]) for b in runs[1]] == [4, 4, 2]
    for a, b in zip(*runs):
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_a_broken_image_met_in_a_worker_is_named_without_a_traceback(tmp_path, backend):
    write_shapes(tmp_path / "data", "folder", n=12, size=8, seed=0)
    broken = min((tmp_path / "data" / "square").iterdir())
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated file
    spec = tmp_path / "tiny.cnn"
    spec.write_text(
        TINY.replace("8x8x1", "8x8x3")
        .replace("dense 10", "dense 3")
        .replace("epochs 2", "epochs 1")
        .replace("batch_size 32", "batch_size 4")
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnspec",
            "train",
            str(spec),
            "--data",
            str(tmp_path / "data"),
            "--workers",
            "2",
            "--backend",
            backend,
            "--out",
            str(tmp_path / "run"),
            "--progress",
            "off",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert str(broken) in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


class _DyingImages:
    """A reader whose third image kills the worker process that decodes it."""

    def __len__(self):
        return 8

    def image(self, row):
        if row == 2:
            os._exit(3)
        return np.zeros((2, 2, 1), np.float32)


def test_a_worker_that_dies_is_a_data_error_saying_how_to_go_on():
    from cnnspec.data import DataError
    from cnnspec.data.samples import Samples
    from cnnspec.data.torch_loader import set_epoch, torch_loader

    data = Samples(_DyingImages(), y=np.zeros(8), classes=["a"], input_shape=(2, 2, 1))
    loader = torch_loader(data, 1, train=False, workers=1)
    set_epoch(loader, 0)
    with pytest.raises(DataError, match="worker died") as info:
        list(loader)
    assert "--resume" in info.value.hint
