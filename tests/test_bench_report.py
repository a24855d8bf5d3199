"""bench/run_all.py in quick mode on one cheap script: the report names the machine and has
one table row per target, with the measured ratio and its goal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_report_format(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run_all.py"),
            "--quick",
            "--only",
            "compile_scaling",
            "--report",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: a target missed, still a report
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n")
    assert "--quick" in text and "QUICK MODE" in text
    cpu_line = next(line for line in text.splitlines() if line.startswith("- CPU: "))
    assert f"{os.cpu_count()} cores" in cpu_line
    assert "load average (1 min):" in text and " at start, " in text and " at end." in text
    table = text.split("## Targets\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert table[0] == "| target | measured | goal | met | script |"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert len(rows) == 2
    for row, what in zip(rows, ("compile time per layer", "parse+check time per statement")):
        target, measured, goal, met, script = row
        assert what in target and script == "compile_scaling.py"
        assert float(measured) > 0 and goal and met in ("yes", "**no**")
    assert "### compile_scaling.py" in text and "train_loop" not in text


def test_a_missing_script_is_listed_without_a_number(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import run_all

    monkeypatch.setattr(run_all, "EXPECTED", [*run_all.EXPECTED, "not_here.py"])
    assert run_all.missing() == ["not_here.py"]
    context = {
        "date": "today",
        "quick": False,
        "load_start": 1.0,
        "load_end": 2.0,
        "machine": {"cpu": "Some CPU", "cpus": 2, "python": "3"},
    }
    rows = [{"target": "t", "measured": "1.010", "goal": "<= 1.03", "met": True}]
    text = run_all.report(
        [{"name": "x.py", "returncode": 0, "stdout": "out", "rows": rows}], ["not_here.py"], context
    )
    assert "| t | 1.010 | <= 1.03 | yes | x.py |" in text
    assert "- `not_here.py`: not in bench/ on this checkout; no number measured." in text
    assert "not_here.py |" not in text and "QUICK" not in text
