"""Run by tests/test_keras_distribute.py in a fresh process with CNNSPEC_KERAS_REPLICAS=2: the
CPU is split into two logical devices before TensorFlow starts, and the Keras backend mirrors
over them. Prints one JSON object:

  steps:  per task (classifier with BatchNorm, segmenter with ce+dice, detector with the
          box-ratio losses), the largest loss / output difference between a mirrored backend
          and a one-device one fed the same batches, and the strategies used;
  runs:   LeNet-5 on digits for two epochs through cnnspec.train.session.train, mirrored and
          on one device: history, held-out metrics, seconds; and one mirrored epoch in
          mixed_float16 with loss scaling (what several GPUs with mixed precision run).

Nothing here imports torch: torchvision imported after TensorFlow crashes the process.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import cnnspec
from cnnspec.data import batches
from cnnspec.train import keras_backend
from cnnspec.train.keras_devices import REPLICAS_ENV
from cnnspec.train.session import load_data, train

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = """model c
input 8x8x1
conv 6 3x3 same; bn; relu
maxpool 2
flatten
dense 10 softmax
compile { loss sparse_categorical_crossentropy; optimizer sgd lr=0.1 momentum=0.9 }
"""
SEGMENTER = """model s
input 16x16x3
a = conv 8 3x3 same; bn; relu
maxpool 2
conv 8 3x3 same relu
upsample 2
concat a
conv 2 1x1 softmax
compile { loss ce_dice; optimizer adam lr=0.01 }
"""
DETECTOR = """model d
input 16x16x3
conv 8 3x3 same relu; maxpool 2
flatten
f = dense 16 relu
present = dense 1 sigmoid from=f
box = dense 4 sigmoid from=f
output present, box
compile { loss bce smooth_l1 iou; optimizer adam lr=0.01 }
"""
TASKS = [
    ("classify", CLASSIFIER, "digits", {}),
    ("segment", SEGMENTER, "shapes", {"n": 48}),
    ("detect", DETECTOR, "shapes", {"n": 48}),
]
# an odd batch (shards of 4 and 3 rows), then one smaller than the number of replicas
SIZES = (7, 1)


def step_parity(text: str, source: str, options: dict) -> dict:
    model = cnnspec.compile_text(text)
    plan, data = load_data(model, source, 0, options)
    mirrored = keras_backend.KerasBackend(model, plan, 0)
    single = keras_backend.KerasBackend(model, plan, 0, replicas=1)
    stream = batches(data, max(SIZES), shuffle=False, train=False)
    full = next(iter(stream))
    loss_diff = out_diff = 0.0
    for i, size in enumerate(SIZES):
        batch = {k: v[:size] for k, v in full.items()}
        for step in ("train_step", "eval_step")[: 1 if i else 2]:  # (each new shape traces)
            (la, oa), (lb, ob) = (getattr(be, step)(batch) for be in (mirrored, single))
            assert la.keys() == lb.keys(), (la, lb)
            loss_diff = max(loss_diff, *(abs(la[k] - lb[k]) / max(abs(lb[k]), 1e-3) for k in la))
            for a, b in zip(oa, ob):
                assert a.shape == b.shape, (a.shape, b.shape)
                out_diff = max(out_diff, float(np.abs(a - b).max()))
    weights = max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(mirrored.net.weights, single.net.weights)
    )
    return {
        "strategies": [type(mirrored.strategy).__name__, type(single.strategy).__name__],
        "replicas": [mirrored.replicas, single.replicas],
        "loss_rel_diff": loss_diff,
        "output_diff": out_diff,
        "weight_diff": weights,
    }


def lenet_run(replicas: int) -> dict:
    os.environ[REPLICAS_ENV] = str(replicas)
    seen = []
    init = keras_backend.KerasBackend.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen.append(self.replicas)

    keras_backend.KerasBackend.__init__ = spy
    try:
        model = cnnspec.compile_file(ROOT / "specs" / "lenet5.cnn")
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            result = train(
                model,
                "digits",
                backend="keras",
                out=out,
                epochs=2,
                progress=False,
                log=lambda *a: None,
            )
            seconds = time.perf_counter() - t0
            with open(Path(out) / "history.csv", newline="") as fh:
                history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    finally:
        keras_backend.KerasBackend.__init__ = init
    return {
        "replicas": seen,
        "metrics": result["metrics"],
        "history": history,
        "seconds": round(seconds, 2),
    }


def float16_run() -> dict:
    from cnnspec.train.driver import Options, Trainer, eval_ops, evaluate, fitted_ops

    text = (ROOT / "specs" / "lenet5.cnn").read_text()
    model = cnnspec.compile_text(text.replace("seed 0", "seed 0; mixed_precision true"))
    plan, data = load_data(model, "digits")
    train_part, val = data.split(plan.compile.validation_split, 0)
    t0 = time.perf_counter()
    be = keras_backend.KerasBackend(model, plan, 0, replicas=2, policy="mixed_float16")
    opts = Options(
        epochs=1,
        batch_size=32,
        augment=list(plan.compile.augment),
        progress=False,
        log=lambda *a: None,
    )
    Trainer(be, plan, opts).fit(train_part, val)
    metrics = evaluate(be, plan, val, 32, ops=eval_ops(fitted_ops(opts.augment, train_part)))
    return {
        "replicas": [be.replicas],
        "optimizer": type(be.opt).__name__,
        "loss_scale": float(be.opt.dynamic_scale.numpy()),
        "metrics": metrics,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    steps = {name: step_parity(text, source, options) for name, text, source, options in TASKS}
    runs = {"mirrored": lenet_run(2), "default": lenet_run(1), "mirrored_float16": float16_run()}
    json.dump({"steps": steps, "runs": runs}, sys.stdout)


if __name__ == "__main__":
    main()
