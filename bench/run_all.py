"""Run every benchmark in bench/ one after the other and print their tables (`make bench`).

    python bench/run_all.py [--json DIR]    # DIR/NAME.json for each script that takes --json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELPERS = {"run_all.py", "timing.py"}


def scripts() -> list[Path]:
    return [p for p in sorted(HERE.glob("*.py")) if p.name not in HELPERS]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="DIR", type=Path)
    args = parser.parse_args(argv)
    failed = []
    for script in scripts():
        command = [sys.executable, str(script)]
        if args.json is not None and "--json" in _help(script):
            args.json.mkdir(parents=True, exist_ok=True)
            command += ["--json", str(args.json / f"{script.stem}.json")]
        print(f"\n## {script.name}\n", flush=True)
        if subprocess.run(command, cwd=HERE.parent, check=False).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nmissed their targets or failed: {', '.join(failed)}")
    return 1 if failed else 0


def _help(script: Path) -> str:
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                          text=True, check=False)
    return done.stdout


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
