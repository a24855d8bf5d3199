"""Run every benchmark in bench/, each in its own process, and write BENCHMARKS.md (`make bench`).

    python bench/run_all.py [--quick] [--only NAME ...] [--report BENCHMARKS.md] [--json DIR]

Each script runs as a fresh child process (torch and TensorFlow in one process behave
differently, and importing torchvision after TensorFlow crashes). Scripts that take `--json`
write their numbers there; the "report_rows" of that JSON (timing.target_row) become the rows
of the report's table. A script named in EXPECTED but absent is listed as missing, never given
a number. `--quick` passes each script small arguments (QUICK) for a smoke test; its numbers
say nothing about the targets.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import ROOT, checkout_env, load_average, machine, markdown

HERE = Path(__file__).resolve().parent
HELPERS = {"run_all.py", "timing.py"}
# The scripts whose targets the issues set; any other bench/*.py also runs, after them.
EXPECTED = [
    "summary_speed.py",
    "compile_scaling.py",
    "torch_models.py",
    "keras_models.py",
    "train_loop.py",
]
QUICK = {
    "summary_speed.py": ["--repeats", "1", "--no-keras"],
    "compile_scaling.py": ["--sizes", "1000,2000", "--repeats", "1", "--statements", "1000,10000"],
    "torch_models.py": ["--models", "resnet18", "--size", "64", "--batch", "1", "--reps", "1"],
    "keras_models.py": ["--repeats", "1", "--batch", "1"],
    "train_loop.py": ["--epochs", "2"],
    "data_pipeline.py": [
        "--sizes",
        "200,400",
        "--batches",
        "5",
        "--rounds",
        "1",
        "--memory-runs",
        "1",
    ],
    "resnet_epoch.py": ["--images", "32", "--batch", "16", "--rounds", "1"],
    "import_coverage.py": ["--only", "resnet18", "keras:MobileNet"],
    "detection_epoch.py": ["--images", "64", "--epochs", "2", "--rounds", "3"],
}
# Scripts without --json: the ratio they print, and the target it is held to.
PRINTED = {
    "train_loop.py": (
        r"ratio cnnspec/plain = ([0-9.]+)",
        "training loop: cnnspec trainer / hand-written loop (s per epoch)",
        1.05,
    ),
}


def scripts(only: list[str] | None = None) -> list[Path]:
    present = {p.name: p for p in HERE.glob("*.py") if p.name not in HELPERS}
    names = [n for n in EXPECTED if n in present] + sorted(set(present) - set(EXPECTED))
    if only:
        names = [n for n in names if n in only or n.removesuffix(".py") in only]
    return [present[n] for n in names]


def missing(only: list[str] | None = None) -> list[str]:
    wanted = [n for n in EXPECTED if not only or n in only or n.removesuffix(".py") in only]
    return [n for n in wanted if not (HERE / n).exists()]


def run(script: Path, json_dir: Path, quick: bool) -> dict:
    """Run one script (echoing its output) and collect its report rows."""
    command = [sys.executable, str(script)] + (QUICK.get(script.name, []) if quick else [])
    out = None
    if "--json" in _help(script):
        out = json_dir / f"{script.stem}.json"
        command += ["--json", str(out)]
    print(f"\n## {script.name}\n\n$ {' '.join(command[1:])}", flush=True)
    done = subprocess.run(
        command, cwd=ROOT, env=checkout_env(), capture_output=True, text=True, check=False
    )
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        print(done.stderr[-3000:], end="", file=sys.stderr, flush=True)
    rows = _rows(script, out, done.stdout)
    return {"name": script.name, "returncode": done.returncode, "stdout": done.stdout, "rows": rows}


def _rows(script: Path, out: Path | None, stdout: str) -> list[dict]:
    if out is not None and out.exists():
        return json.loads(out.read_text(encoding="utf-8")).get("report_rows", [])
    if script.name in PRINTED:
        pattern, target, goal = PRINTED[script.name]
        found = re.search(pattern, stdout)
        if found:
            ratio = float(found.group(1))
            return [
                {
                    "target": target,
                    "measured": f"{ratio:.3f}",
                    "goal": f"<= {goal}",
                    "met": ratio <= goal,
                }
            ]
    return []


def _help(script: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=checkout_env(),
    )
    return done.stdout


def report(results: list[dict], absent: list[str], context: dict) -> str:
    """BENCHMARKS.md: the machine, then one row per target, then each script's own output."""
    m = context["machine"]
    lines = [
        "# Benchmarks",
        "",
        (
            f"Measured {context['date']} by `python bench/run_all.py"
            f"{' --quick' if context['quick'] else ''}` (`make bench`)."
        ),
        "",
        f"- CPU: {m['cpu']}, {m['cpus']} cores; Python {m['python']}",
        (
            f"- load average (1 min): {context['load_start']} at start, {context['load_end']} "
            "at end. The machine is shared: other sessions' jobs may have run during the "
            "measurement, so absolute times are noisy; the ratios compare runs interleaved in one "
            "process or measured back to back under the same load."
        ),
    ]
    if context["quick"]:
        lines.append(
            "- QUICK MODE: tiny inputs and single repetitions; a smoke test, "
            "not a measurement of the targets."
        )
    table = [
        [r["target"], r["measured"], r["goal"], "yes" if r["met"] else "**no**", res["name"]]
        for res in results
        for r in res["rows"]
    ]
    lines += [
        "",
        "## Targets",
        "",
        markdown(["target", "measured", "goal", "met", "script"], table),
    ]
    notes = [f"- `{n}`: not in bench/ on this checkout; no number measured." for n in absent]
    notes += [
        f"- `{res['name']}`: exited with {res['returncode']}."
        for res in results
        if res["returncode"] != 0
    ]
    notes += [f"- `{res['name']}`: gave no target rows." for res in results if not res["rows"]]
    if notes:
        lines += ["", "## Notes", ""] + notes
    lines += ["", "## Script output", ""]
    for res in results:
        lines += [f"### {res['name']}", "", "```", res["stdout"].rstrip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test arguments")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts")
    parser.add_argument("--report", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--json", metavar="DIR", type=Path, help="keep each script's JSON here")
    args = parser.parse_args(argv)
    context = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "machine": machine(),
        "load_start": load_average(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        json_dir = args.json or Path(tmp)
        json_dir.mkdir(parents=True, exist_ok=True)
        results = [run(script, json_dir, args.quick) for script in scripts(args.only)]
    absent = missing(args.only)
    for name in absent:
        print(f"\n## {name}\n\nnot in bench/ on this checkout: skipped", flush=True)
    context["load_end"] = load_average()
    args.report.write_text(report(results, absent, context), encoding="utf-8")
    print(f"\nwrote {args.report}")
    failed = [
        r["name"]
        for r in results
        if r["returncode"] != 0 or not all(row["met"] for row in r["rows"])
    ]
    if failed:
        print(f"missed their targets or failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
