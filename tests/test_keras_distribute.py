"""The Keras backend beyond one device, and in mixed precision.

Mirrored: a fresh process with CNNSPEC_KERAS_REPLICAS=2 splits the CPU into two logical
devices before TensorFlow starts (tests/keras_mirrored_run.py) and trains with a real
tf.distribute.MirroredStrategy; its steps and its LeNet-5 run must follow the one-device
backend's. Mixed precision: LeNet-5 with `mixed_precision true` trains on digits in the
policy for the device, the policy stays inside the model, and the weights round-trip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec.train import keras_devices

ROOT = Path(__file__).resolve().parents[1]
LENET = (ROOT / "specs" / "lenet5.cnn").read_text()


@pytest.fixture(scope="module")
def mirrored() -> dict:
    env = {
        **os.environ,
        keras_devices.REPLICAS_ENV: "2",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "keras_mirrored_run.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("task", ["classify", "segment", "detect"])
def test_mirrored_steps_equal_one_device_steps(mirrored, task):
    """BatchNorm synchronised, ce + dice from all-reduced sums, box losses over the global
    count of objects, an odd batch and one smaller than the replicas: float rounding only."""
    got = mirrored["steps"][task]
    assert got["strategies"] == ["MirroredStrategy", "_DefaultDistributionStrategy"]
    assert got["replicas"] == [2, 1]
    assert got["loss_rel_diff"] < 1e-5
    assert got["output_diff"] < 1e-5
    assert got["weight_diff"] < 1e-5


def test_mirrored_lenet_follows_the_one_device_run(mirrored):
    runs = mirrored["runs"]
    assert runs["mirrored"]["replicas"] == [2] and runs["default"]["replicas"] == [1]
    mine, ref = runs["mirrored"]["history"], runs["default"]["history"]
    assert len(mine) == len(ref) == 2
    for a, b in zip(mine, ref):
        for key in ("train_loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-3), key
        for key in ("train_accuracy", "val_accuracy"):
            assert abs(a[key] - b[key]) <= 0.01, key
    assert ref[1]["train_loss"] < ref[0]["train_loss"]
    assert runs["mirrored"]["metrics"]["accuracy"] > 0.9
    assert runs["default"]["metrics"]["accuracy"] > 0.9


def test_mirrored_float16_with_loss_scaling_trains(mirrored):
    """Several GPUs with mixed precision: LossScaleOptimizer under MirroredStrategy."""
    run = mirrored["runs"]["mirrored_float16"]
    assert run["replicas"] == [2] and run["optimizer"] == "LossScaleOptimizer"
    assert run["loss_scale"] >= 1.0
    assert run["metrics"]["accuracy"] > 0.85  # 0.94 measured after one epoch


# --- device choice -------------------------------------------------------------------------
def test_replicas_come_from_the_argument_or_the_environment(monkeypatch):
    monkeypatch.delenv(keras_devices.REPLICAS_ENV, raising=False)
    assert keras_devices.requested_replicas() is None
    assert keras_devices.requested_replicas(3) == 3
    monkeypatch.setenv(keras_devices.REPLICAS_ENV, "2")
    assert keras_devices.requested_replicas() == 2
    assert keras_devices.requested_replicas(1) == 1
    monkeypatch.setenv(keras_devices.REPLICAS_ENV, "two")
    with pytest.raises(ValueError, match="Received: CNNSPEC_KERAS_REPLICAS='two'"):
        keras_devices.requested_replicas()
    with pytest.raises(ValueError, match="at least 1"):
        keras_devices.requested_replicas(0)


def test_one_device_is_the_default_strategy_several_gpus_are_mirrored(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv(keras_devices.REPLICAS_ENV, raising=False)
    assert keras_devices.make_strategy(1) is tf.distribute.get_strategy()
    gpus = len(tf.config.list_physical_devices("GPU"))
    chosen = keras_devices.make_strategy()
    if gpus > 1:
        assert isinstance(chosen, tf.distribute.MirroredStrategy)
        assert chosen.num_replicas_in_sync == gpus
    else:
        assert chosen is tf.distribute.get_strategy()


def test_splitting_a_started_cpu_is_a_clear_error():
    import tensorflow as tf

    assert float(tf.constant(1.0) + 1.0) == 2.0  # TensorFlow has started in this process
    n = len(tf.config.list_logical_devices("CPU")) + 1
    with pytest.raises(RuntimeError, match=f"cannot split the CPU into {n} devices"):
        keras_devices.split_cpu(n)


def test_policy_by_device():
    import tensorflow as tf

    assert keras_devices.policy_name(False) is None
    assert keras_devices.policy_name(False, "mixed_float16") is None
    assert keras_devices.policy_name(True, "mixed_float16") == "mixed_float16"
    gpu = bool(tf.config.list_physical_devices("GPU"))
    assert keras_devices.policy_name(True) == ("mixed_float16" if gpu else "mixed_bfloat16")


# --- mixed precision -----------------------------------------------------------------------
def _fit(model, policy=None, epochs=2):
    """A KerasBackend trained on digits; (backend, plan, held-out metrics, validation set)."""
    from cnnspec.train.driver import Options, Trainer, eval_ops, evaluate, fitted_ops
    from cnnspec.train.keras_backend import KerasBackend
    from cnnspec.train.session import load_data

    plan, data = load_data(model, "digits")
    spec = plan.compile
    train, val = data.split(spec.validation_split, spec.seed)
    be = KerasBackend(model, plan, spec.seed, policy=policy)
    opts = Options(
        epochs=epochs,
        batch_size=spec.batch_size,
        seed=spec.seed,
        augment=list(spec.augment),
        progress=False,
        log=lambda *a: None,
    )
    Trainer(be, plan, opts).fit(train, val)
    ops = eval_ops(fitted_ops(opts.augment, train))
    return be, plan, evaluate(be, plan, val, spec.batch_size, ops=ops), val


def _mixed_lenet():
    return cnnspec.compile_text(LENET.replace("seed 0", "seed 0; mixed_precision true"))


@pytest.fixture(scope="module")
def mixed_run():
    return _fit(_mixed_lenet())


def test_mixed_precision_lenet_trains_in_the_device_policy(mixed_run):
    import keras

    be, _, metrics, _ = mixed_run
    assert be.policy == keras_devices.policy_name(True)
    convs = [layer for layer in be.net.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(c.dtype_policy.name == be.policy for c in convs)
    assert all(c.compute_dtype == be.policy.split("_")[1] for c in convs)
    assert all(w.dtype == "float32" for w in be.net.weights)  # variables stay float32
    assert metrics["accuracy"] > 0.9  # 0.95 measured after two epochs
    assert np.isfinite(metrics["loss"])


def test_mixed_precision_policy_does_not_leak(mixed_run):
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"
    from cnnspec.backends.keras import build

    net = build(cnnspec.compile_text(LENET))
    assert all(layer.dtype_policy.name == "float32" for layer in net.layers)


def test_mixed_precision_weights_round_trip(mixed_run, tmp_path):
    from cnnspec.train.keras_backend import KerasBackend

    be, plan, _, val = mixed_run
    files = be.save(str(tmp_path / "ep"))
    x = val.x[:32]
    again = KerasBackend(_mixed_lenet(), plan, seed=7)  # other initial weights
    assert not np.allclose(again.predict(x)[0], be.predict(x)[0], atol=1e-2)
    again.load(files)
    np.testing.assert_array_equal(again.predict(x)[0], be.predict(x)[0])
    for mine, theirs in zip(again.opt.variables, be.opt.variables, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    full = KerasBackend(cnnspec.compile_text(LENET), plan)  # the same weights in float32
    full.load(files, optimizer=False)
    assert full.predict(x)[0].dtype == np.float32
    np.testing.assert_allclose(full.predict(x)[0], be.predict(x)[0], atol=0.05)
    assert (full.predict(x)[0].argmax(1) == be.predict(x)[0].argmax(1)).mean() > 0.9


def test_float16_with_loss_scaling_trains_on_cpu_too():
    """The GPU's policy, forced on this CPU: LossScaleOptimizer scales the loss and unscales
    the gradients, and a step with non-finite gradients is skipped."""
    import keras

    be, _, metrics, _ = _fit(_mixed_lenet(), policy="mixed_float16", epochs=1)
    assert isinstance(be.opt, keras.optimizers.LossScaleOptimizer)
    assert metrics["accuracy"] > 0.85  # 0.94 measured after one epoch
    assert float(be.opt.dynamic_scale) >= 1.0
    assert keras.mixed_precision.global_policy().name == "float32"
