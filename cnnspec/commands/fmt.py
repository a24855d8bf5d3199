"""cnnspec fmt FILE... [--check]: rewrite specs in the canonical layout (see cnnspec/fmt.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import SpecError, SpecErrors
from ._common import EXIT_OK, EXIT_SPEC, report, write_atomic

NAME, HELP, ORDER = "fmt", "rewrite specs in the canonical layout", 40
DESCRIPTION = (
    "Rewrite specs in the canonical layout, keeping comments, blocks and sections as "
    "written. '-' reads stdin and writes stdout. With --check nothing is written: "
    "exit 1 and list the files that would change; --diff shows the changes."
)


def configure(p):
    p.add_argument("files", nargs="+", metavar="FILE", help="spec files, or '-' for stdin")
    p.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any file would change"
    )
    p.add_argument(
        "--diff",
        action="store_true",
        help="write nothing; print a unified diff of the changes (exit 1 if any)",
    )


def run(args) -> int:
    from ..fmt import format_text

    status, changed = EXIT_OK, []
    for path in args.files:
        source = _read(path)
        if source is None:
            status = EXIT_SPEC
            continue
        try:
            result = format_text(source)
        except SpecError as err:
            report(SpecErrors([err.located(path)]), None if path == "-" else path)
            status = max(status, EXIT_SPEC)
            continue
        if args.diff:
            _print_diff(path, source, result)
            args.check = True
        if path == "-":
            if not args.check:
                sys.stdout.write(result)
            if result != source:
                changed.append(path)
            continue
        if result != source:
            changed.append(path)
            if not args.check:
                write_atomic(path, result)
                print(f"reformatted {path}", file=sys.stderr)
    if args.check:
        for path in changed:
            print(f"would reformat {path}")
        if changed:
            return max(status, EXIT_SPEC)
    return status


def _print_diff(path: str, before: str, after: str) -> None:
    import difflib

    sys.stdout.writelines(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"{path} (before)",
            tofile=f"{path} (formatted)",
        )
    )


def _read(path: str) -> str | None:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        print(f"{path}: error: cannot read: {why}", file=sys.stderr)
        return None
