"""Helpers shared by the sub-commands: load specs, report errors the same way everywhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import SpecErrors

EXIT_OK, EXIT_SPEC, EXIT_USAGE = 0, 1, 2


def load(path: str, fmt: str = "text"):
    """Compile a spec file; on errors print them and return None."""
    from ..compiler import compile_file
    try:
        return compile_file(path)
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
    parser.add_argument("--format", choices=choices, default=default,
                        help=f"output format (default {default})")


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write a file so that a crash leaves the old one or the new one, never half of either."""
    import os
    import tempfile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
