"""Whole-process time of `cnnspec summary specs/resnet50.cnn` against torchinfo summarising
torchvision's ResNet-50, and against Keras' `summary()` of keras.applications.ResNet50, each
run as a fresh process (startup and imports included, as a user sees it, with bytecode as an
installed package has it). Targets: cnnspec within 0.2 s, at least 15x faster than each.

    python bench/summary_speed.py [--repeats 5] [--no-keras] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from timing import (
    ROOT,
    checkout_env,
    load_average,
    machine,
    markdown,
    process_costs,
    stats,
    target_row,
    write_json,
)

SPEC = ROOT / "specs" / "resnet50.cnn"
CNNSPEC = [sys.executable, "-m", "cnnspec", "summary", str(SPEC)]
TORCHINFO = [
    sys.executable,
    "-c",
    (
        "import torchvision, torchinfo; "
        "torchinfo.summary(torchvision.models.resnet50(), "
        "(1, 3, 224, 224))"
    ),
]
KERAS = [
    sys.executable,
    "-c",
    ("import keras; keras.applications.ResNet50(weights=None).summary()"),
]
BARE = [sys.executable, "-c", "pass"]
TARGET_RATIO = 15
TARGET_SECONDS = 0.2


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--no-keras",
        action="store_true",
        help="skip Keras' summary() (TensorFlow's import is the slow part)",
    )
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    env = checkout_env()
    load_before = load_average()
    results = {
        "python -c pass": stats(process_costs(BARE, args.repeats, env=env)),
        "cnnspec summary resnet50.cnn": stats(process_costs(CNNSPEC, args.repeats, env=env)),
        "torchinfo.summary(resnet50)": stats(process_costs(TORCHINFO, args.repeats, env=env)),
    }
    if not args.no_keras:
        results["keras ResNet50().summary()"] = stats(process_costs(KERAS, args.repeats, env=env))
    ours = results["cnnspec summary resnet50.cnn"]
    theirs = results["torchinfo.summary(resnet50)"]
    ratio_median = theirs["median_s"] / ours["median_s"]
    ratio_min = theirs["min_s"] / ours["min_s"]
    ratio_cpu = theirs["cpu_min_s"] / ours["cpu_min_s"]
    rows = [
        [name, f"{r['median_s']:.3f}", f"{r['min_s']:.3f}", f"{r['cpu_min_s']:.3f}"]
        for name, r in results.items()
    ]
    print(markdown(["whole process", "wall median s", "wall min s", "CPU min s"], rows))
    print(
        f"\ntorchinfo / cnnspec: {ratio_median:.1f}x (wall median), {ratio_min:.1f}x "
        f"(wall min), {ratio_cpu:.1f}x (CPU min); target >= {TARGET_RATIO}x"
    )
    print(
        f"{args.repeats} runs each after one warm-up; load average {load_before} -> "
        f"{load_average()} on {machine()['cpus']} CPUs"
    )
    goal = f">= {TARGET_RATIO}x"
    report = [
        target_row(
            "summary start-up: `cnnspec summary specs/resnet50.cnn`, whole process (wall median)",
            ours["median_s"],
            f"<= {TARGET_SECONDS} s",
            ours["median_s"] <= TARGET_SECONDS,
            " s",
        ),
        target_row(
            "summary start-up: torchinfo / cnnspec (ResNet-50, wall median)",
            ratio_median,
            goal,
            ratio_median >= TARGET_RATIO,
            "x",
        ),
    ]
    if "keras ResNet50().summary()" in results:
        keras_ratio = results["keras ResNet50().summary()"]["median_s"] / ours["median_s"]
        print(f"Keras summary() / cnnspec: {keras_ratio:.1f}x (wall median)")
        report.append(
            target_row(
                "summary start-up: Keras summary() / cnnspec (ResNet50, wall median)",
                keras_ratio,
                goal,
                keras_ratio >= TARGET_RATIO,
                "x",
            )
        )
    write_json(
        Path(args.json) if args.json else None,
        {
            "machine": machine(),
            "load_average_before": load_before,
            "results": results,
            "ratio_median": ratio_median,
            "ratio_min": ratio_min,
            "ratio_cpu": ratio_cpu,
            "target_ratio": TARGET_RATIO,
            "report_rows": report,
        },
    )
    return 0 if all(row["met"] for row in report) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
