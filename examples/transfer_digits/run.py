"""Transfer learning measured with `cnnspec train`: digits 0-4 -> digits 5-9 from 10 images a class.

    python examples/transfer_digits/run.py [--backend torch|keras] [--shots 3 10] [--seeds 0 1 2]

1. writes the data (sklearn's bundled 8x8 digits, nothing downloaded) as .npz files in work/:
   digits 0-4 (all), and for each seed: `shots` images of each of 5-9 to train on and every
   other image of 5-9 as the test set (labels 0-4 standing for 5-9);
2. `cnnspec train pretrain.cnn` on digits 0-4;
3. `cnnspec train transfer.cnn` (features of step 2, frozen, new head) and `cnnspec train
   scratch.cnn` (same network, random start) on the few images of 5-9;
4. `cnnspec evaluate` both on the held-out images of 5-9; writes work/result_BACKEND.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"


def cnnspec(*args: str) -> str:
    cmd = [sys.executable, "-m", "cnnspec", *args]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=HERE)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def write_data(shots: list[int], seeds: list[int]) -> None:
    from cnnspec.data import load

    ds = load("digits", (16, 16, 1), "classify")
    x, y = ds.x, ds.y
    WORK.mkdir(exist_ok=True)
    low = y < 5
    np.savez(WORK / "digits_0_4.npz", x=x[low], y=y[low], classes=[str(c) for c in range(5)])
    names = [str(c) for c in range(5, 10)]
    for n in shots:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            train = np.concatenate(
                [rng.choice(np.flatnonzero(y == c), n, replace=False) for c in range(5, 10)]
            )
            test = np.setdiff1d(np.flatnonzero(y >= 5), train)
            np.savez(WORK / f"few_{n}_{seed}.npz", x=x[train], y=y[train] - 5, classes=names)
            np.savez(WORK / f"test_{n}_{seed}.npz", x=x[test], y=y[test] - 5, classes=names)


def accuracy(spec: str, run: str, test: str, backend: str) -> float:
    suffix = ".safetensors" if backend == "torch" else ".weights.h5"
    out = cnnspec(
        "evaluate",
        spec,
        "--weights",
        str(WORK / run / f"best{suffix}"),
        "--data",
        str(test),
        "--split",
        "all",
        "--format",
        "json",
    )
    return float(json.loads(out)["metrics"]["accuracy"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="torch", choices=("torch", "keras"))
    ap.add_argument("--shots", type=int, nargs="+", default=[3, 10])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    write_data(args.shots, args.seeds)
    b = ["--backend", args.backend, "--progress", "off"]
    for old in WORK.glob("*/"):  # runs of an earlier invocation (other backend)
        shutil.rmtree(old)
    cnnspec(
        "train",
        "pretrain.cnn",
        "--data",
        str(WORK / "digits_0_4.npz"),
        "--out",
        str(WORK / "pretrain"),
        *b,
    )
    pre = json.loads((WORK / "pretrain" / "result.json").read_text())
    result = {
        "backend": args.backend,
        "pretrain_val_accuracy_0_4": pre["metrics"].get("accuracy"),
        "shots": {},
    }
    for n in args.shots:
        rows = []
        for seed in args.seeds:
            few, test = WORK / f"few_{n}_{seed}.npz", WORK / f"test_{n}_{seed}.npz"
            row = {"seed": seed, "n_test": len(np.load(test)["y"])}
            for name in ("transfer", "scratch"):
                run = f"{name}_{n}_{seed}"
                cnnspec("train", f"{name}.cnn", "--data", str(few), "--out", str(WORK / run), *b)
                row[name] = accuracy(f"{name}.cnn", run, test, args.backend)
            rows.append(row)
            print(
                f"{n} a class, seed {seed}: transferred {row['transfer']:.4f}  "
                f"scratch {row['scratch']:.4f}",
                flush=True,
            )
        result["shots"][str(n)] = {
            "runs": rows,
            "transfer_accuracy": float(np.mean([r["transfer"] for r in rows])),
            "scratch_accuracy": float(np.mean([r["scratch"] for r in rows])),
        }
    (WORK / f"result_{args.backend}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
