"""cnnspec's ResNet-50 (Keras backend) against keras.applications.ResNet50: timings.

specs/resnet50_keras.cnn built by the Keras backend, with the application's weights: forward
(predict_on_batch) and training step (train_on_batch) times, batch 8 at 224x224, in one
process, interleaved so that both see the same machine state; medians and their ratio.

    python bench/keras_models.py [--repeats 7] [--batch 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.03


def _models():
    import keras

    import cnnspec
    from cnnspec.backends.keras import build
    from cnnspec.convert import load_keras_applications_weights

    ir = cnnspec.compile_file(ROOT / "specs" / "resnet50_keras.cnn")
    ours, ref = build(ir), keras.applications.ResNet50(weights=None)
    load_keras_applications_weights(ours, ir, ref)
    for m in (ours, ref):
        m.compile(optimizer=keras.optimizers.SGD(1e-3), loss="categorical_crossentropy")
    return {"cnnspec": ours, "keras.applications": ref}


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", metavar="OUT", help="write the medians and ratios as JSON")
    args = parser.parse_args(argv)
    models = _models()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, 224, 224, 3)).astype("float32")
    y = np.eye(1000, dtype="float32")[rng.integers(0, 1000, args.batch)]
    jobs = {
        "forward": lambda m: m.predict_on_batch(x),
        "train step": lambda m: m.train_on_batch(x, y),
    }
    times = {(job, name): [] for job in jobs for name in models}
    for job, fn in jobs.items():
        for m in models.values():  # warm-up: tracing and first-call allocation
            fn(m)
        for _ in range(args.repeats):
            for name, m in models.items():
                times[job, name].append(_time(lambda m=m, fn=fn: fn(m)))
    print(f"ResNet-50, batch {args.batch}, 224x224, median of {args.repeats} (interleaved)")
    report = []
    for job in jobs:
        ours = statistics.median(times[job, "cnnspec"])
        ref = statistics.median(times[job, "keras.applications"])
        print(
            f"  {job:10s}  cnnspec {ours:.3f} s   keras.applications {ref:.3f} s   "
            f"ratio {ours / ref:.3f}"
        )
        report.append(
            {
                "target": f"keras ResNet50 {job}: cnnspec / keras.applications "
                f"(batch {args.batch}, median of {args.repeats})",
                "measured": f"{ours / ref:.3f}",
                "goal": f"<= {TARGET_RATIO}",
                "met": ours / ref <= TARGET_RATIO,
                "cnnspec_s": ours,
                "keras_s": ref,
            }
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"report_rows": report}, indent=2) + "\n", encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
