"""Helpers shared by the sub-commands: load specs, report errors the same way everywhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import SpecErrors

EXIT_OK, EXIT_SPEC, EXIT_USAGE = 0, 1, 2

# `--scale NAME` of the command line (cli.py sets it): the named scale every spec is compiled at
selected_scale: str | None = None


def load(path: str, fmt: str = "text"):
    """Compile a spec file; on errors print them and return None."""
    from ..compiler import compile_file

    try:
        return compile_file(path, selected_scale)
    except SpecErrors as errs:
        report(errs, path, fmt)
        return None


def report(errs: SpecErrors, path: str | None, fmt: str = "text") -> None:
    if fmt == "json":
        print(json.dumps({"ok": False, "errors": errs.to_list()}, indent=2))
        return
    source = None
    if path:
        try:
            source = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            source = None
    print(errs.render(source), file=sys.stderr)


def add_format(parser, choices=("text", "json"), default="text"):
    parser.add_argument(
        "--format", choices=choices, default=default, help=f"output format (default {default})"
    )


def output_is_input(command: str, output: str | None, *inputs: str | None) -> bool:
    """True (after saying so) when -o names one of the command's inputs: writing it would
    replace the user's file with generated text."""
    from ..outputs import OutputError, refuse_input

    if not output:
        return False
    try:
        refuse_input(output, *inputs)
    except OutputError as exc:
        print(f"cnnspec {command}: error: {shown(output)} {exc.strerror}", file=sys.stderr)
        return True
    return False


def shown(path: str | Path) -> str:
    """A file name as an error line may show it: control characters escaped, so that a name
    holding a newline or an escape sequence cannot rewrite the terminal or forge a
    `file:line:col` line."""
    from ..errors import printable

    return printable(str(path))


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write a file so that a crash leaves the old one or the new one, never half of either
    (links followed, devices written in place, modes kept: cnnspec.outputs)."""
    from ..outputs import write_file

    write_file(path, data)
