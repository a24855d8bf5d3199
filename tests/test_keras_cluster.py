"""Keras on several machines: MultiWorkerMirroredStrategy from TF_CONFIG. Two "machines" are
two local processes on localhost (free ports); their loss curve must equal one process with
the same global batch, the chief alone writes the run folder, and a bad TF_CONFIG is a clear
usage error."""

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

from cnnspec.data.loading import worker_rows
from cnnspec.train.keras_cluster import Cluster, cluster_from_env

ROOT = Path(__file__).resolve().parents[1]
# SGD, not Adam: a conv bias before BatchNorm gets a gradient of float noise only, which Adam
# scales up to full steps, so its value (and BN's moving mean) would follow the reduction
# order rather than the data.
TINY = """model tiny
input 8x8x1
conv 8 3x3 same; bn; relu
maxpool 2
flatten
dense 10 softmax
compile {
  loss sparse_categorical_crossentropy
  optimizer sgd lr=0.1 momentum=0.9
  metrics accuracy
  epochs 2; batch_size 64; validation_split 0.2; seed 3
}
"""
TASK = {"type": "worker", "index": 0}
# measured: 1e-6 relative (float reduction order over two workers); allowed: 1e-4
LOSS_RTOL = 1e-4


def _config(ports, kind="worker", index=0, chief=None) -> str:
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    if chief:
        cluster["chief"] = [f"localhost:{chief}"]
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


@pytest.mark.parametrize(
    "config, expected",
    [
        (None, None),
        (_config([1]), None),  # one task: nothing to distribute
        (_config([1, 2], index=1), Cluster(1, 2, "worker 1")),
        (_config([1, 2], index=0, chief=3), Cluster(1, 3, "worker 0")),
        (_config([1, 2], kind="chief", index=0, chief=3), Cluster(0, 3, "chief 0")),
    ],
)
def test_the_cluster_comes_from_tf_config(config, expected):
    env = {} if config is None else {"TF_CONFIG": config}
    assert cluster_from_env(env) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not a cluster description"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}}', "not a cluster description"),
        (_config([1, 2], index=2), "not in its cluster"),
        (_config([1, 2], kind="ps"), "must be a worker"),
        (json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": TASK}), "names ps"),
    ],
)
def test_a_malformed_tf_config_is_a_clear_error(text, message):
    with pytest.raises(ValueError, match=message):
        cluster_from_env({"TF_CONFIG": text})


def test_the_cli_refuses_a_malformed_tf_config_without_traceback(tmp_path, capsys, monkeypatch):
    from cnnspec.cli import main

    spec = tmp_path / "tiny.cnn"
    spec.write_text(TINY)
    monkeypatch.setenv("TF_CONFIG", _config([1, 2], index=5))
    code = main(["train", str(spec), "--data", "digits", "--backend", "keras"])
    err = capsys.readouterr().err
    assert code == 2 and "TF_CONFIG" in err and "Traceback" not in err


@pytest.mark.parametrize("n, count", [(64, 2), (63, 2), (30, 4), (1, 2), (3, 4)])
def test_worker_shares_make_the_global_batch(n, count):
    rows = np.arange(100, 100 + n)
    parts = [worker_rows(rows, (i, count)) for i in range(count)]
    assert all(len(p) for p in parts)  # no worker is left without rows
    joined = np.concatenate(parts)
    if n >= count:
        np.testing.assert_array_equal(joined, rows)  # contiguous, in order, nothing twice
    else:  # padded by repeating rows, as torch's DistributedSampler pads
        np.testing.assert_array_equal(joined, np.resize(rows, count))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _train(spec, out, env_extra: dict, *extra) -> subprocess.Popen:
    env = {
        **{k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **env_extra,
    }
    argv = ["train", str(spec), "--data", "digits", "--backend", "keras", "--out", str(out)]
    return subprocess.Popen(
        [sys.executable, "-m", "cnnspec", *argv, "--progress", "off", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _history(out: Path) -> list[dict]:
    with open(out / "history.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cluster")
    spec = root / "tiny.cnn"
    spec.write_text(TINY)
    ports = _free_ports(2)
    procs = [
        _train(spec, root / f"worker{i}", {"TF_CONFIG": _config(ports, index=i)}) for i in range(2)
    ]
    outputs = [p.communicate(timeout=400) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    one = _train(spec, root / "one", {})
    _, err = one.communicate(timeout=400)
    assert one.returncode == 0, err[-3000:]
    return {"root": root, "stdout": [o for o, _ in outputs], "spec": spec}


def test_two_workers_follow_one_process_with_the_same_global_batch(runs):
    root = runs["root"]
    mine, ref = _history(root / "worker0"), _history(root / "one")
    assert len(mine) == len(ref) == 2
    for a, b in zip(mine, ref):
        for key in ("train_loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=LOSS_RTOL), key
        for key in ("train_accuracy", "val_accuracy"):
            assert abs(a[key] - b[key]) <= 1 / 359, key  # one validation image at most
    assert ref[1]["train_loss"] < ref[0]["train_loss"]
    result = json.loads((root / "worker0" / "result.json").read_text())
    assert result["processes"] == 2 and result["replicas"] == 2


def test_only_the_chief_writes_and_prints(runs):
    root = runs["root"]
    assert not (root / "worker1").exists()
    assert "held-out" in runs["stdout"][0] and runs["stdout"][1].strip() == ""
    assert not list((root / "worker0").glob("*.tmp*"))  # the atomic writes left nothing


def test_resuming_without_the_run_folder_on_every_worker_is_an_error(runs):
    """Worker 1 finds no checkpoint where the chief finds one: both stop with the reason,
    neither waits for the other's collectives."""
    root, ports = runs["root"], _free_ports(2)
    procs = [
        _train(
            runs["spec"],
            root / f"worker{i}",
            {"TF_CONFIG": _config(ports, index=i)},
            "--resume",
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=400)
        assert proc.returncode == 1, err[-2000:]
        assert "must be on a disk every machine shares" in err and "Traceback" not in err
