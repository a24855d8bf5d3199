"""Shared helpers of the bench scripts: time a command as a whole process, print a markdown
table, write the numbers as JSON. Timings on a busy machine are noisy, so each script reports
the minimum (the least disturbed run) beside the median, and the load average it ran under."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def checkout_env() -> dict:
    """The environment of a child that must import this checkout's cnnspec, not an installed
    one."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # Import the checkout as an installed package is imported, from bytecode (pip compiles
    # what it installs, torch's and torchvision's included). Where PYTHONDONTWRITEBYTECODE is
    # set (this machine sets it), every run would compile cnnspec's source again: 25 ms.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def process_costs(
    argv: list[str], repeats: int, cwd: Path = ROOT, env: dict | None = None, warmup: int = 1
) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds) of each run. CPU time (user + system of the child) depends
    less on what else the machine runs, so it is the better number on a busy machine."""
    costs = []
    for i in range(warmup + repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        took = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
        if i >= warmup:
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            costs.append((took, cpu))
    return costs


def stats(costs: list[tuple[float, float]]) -> dict:
    walls, cpus = [w for w, _ in costs], [c for _, c in costs]
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "cpu_median_s": statistics.median(cpus),
        "cpu_min_s": min(cpus),
        "runs": walls,
    }


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's name as /proc/cpuinfo gives it ('unknown' off Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "load_average_1min": load_average(),
        "python": sys.version.split()[0],
    }


def target_row(target: str, measured: float, goal: str, met: bool, unit: str = "") -> dict:
    """One line of BENCHMARKS.md: what was compared, the measured ratio, the goal, and whether
    this run met it. Scripts put a list of these under "report_rows" in their JSON."""
    return {"target": target, "measured": f"{measured:.3f}{unit}", "goal": goal, "met": met}


def markdown(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path | None, data: dict) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")
