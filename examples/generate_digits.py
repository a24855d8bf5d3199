"""Do the generated digits look like digits? The full-length DCGAN and VAE runs, judged.

Trains, with `cnnspec train` itself (each a fresh process, one torch thread):
    DCGAN  examples/dcgan_digits_generator.cnn --discriminator
           examples/dcgan_digits_discriminator.cnn          (Radford et al. 2015, 32x32x1)
    VAE    specs/vae.cnn --decoder specs/vae_decoder.cnn    (Kingma & Welling 2013, 28x28x1)
on the bundled digits, then prints what each run's result.json says: the judge
(cnnspec/train/judge.py: a classifier trained on the real digits) reading 1,000 samples of the
trained model, of the same model untrained (the floor), and 180 held-out real digits (the
ceiling). Nothing here is typed in: every number comes from the runs' result.json.

    python examples/generate_digits.py [--work DIR] [--gan-epochs 30] [--vae-epochs 30]
                                       [--vae-batch-size 16] [--json FILE]
Samples: DIR/gan/samples.png, DIR/vae/samples.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commands(work: Path, args) -> dict[str, list[str]]:
    common = ["--data", "digits", "--threads", "1", "--seed", "0"]
    return {
        "gan": [
            "train",
            "examples/dcgan_digits_generator.cnn",
            "--discriminator",
            "examples/dcgan_digits_discriminator.cnn",
            *common,
            "--epochs",
            str(args.gan_epochs),
            "--out",
            str(work / "gan"),
        ],
        "vae": [
            "train",
            "specs/vae.cnn",
            "--decoder",
            "specs/vae_decoder.cnn",
            *common,
            "--epochs",
            str(args.vae_epochs),
            "--batch-size",
            str(args.vae_batch_size),
            "--out",
            str(work / "vae"),
        ],
    }


def train(argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print("$ cnnspec " + " ".join(argv), flush=True)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cnnspec", *argv],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def row(name: str, result: dict, wall: float) -> dict:
    judge = result["judge"]
    m = result["metrics"]
    return {
        "model": name,
        "epochs": result["epochs_run"],
        "seconds": result["seconds"],
        "wall_seconds": round(wall, 1),
        "judge_accuracy": judge["accuracy"],
        "trained": {k: m[f"sample_{k}"] for k in ("confidence", "classes", "score")},
        "untrained": judge["untrained"],
        "real": judge["real"],
    }


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| model | epochs | s (train) | samples: confidence / classes / score | "
            "untrained | real digits (held out) | judge accuracy |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    fmt = lambda s: f"{s['confidence']:.3f} / {s['classes']} / {s['score']:.2f}"
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['epochs']} | {r['seconds']:.0f} | "
            f"{fmt(r['trained'])} | {fmt(r['untrained'])} | {fmt(r['real'])} | "
            f"{r['judge_accuracy']:.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "generate_digits")
    ap.add_argument("--gan-epochs", type=int, default=30)
    ap.add_argument("--vae-epochs", type=int, default=30)
    ap.add_argument("--vae-batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    rows = []
    for name, argv in commands(args.work, args).items():
        wall = train(argv)
        result = json.loads((args.work / name / "result.json").read_text(encoding="utf-8"))
        rows.append(row(name, result, wall))
    print(table(rows))
    print(f"samples: {args.work / 'gan' / 'samples.png'}, {args.work / 'vae' / 'samples.png'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
