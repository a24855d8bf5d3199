"""cnnspec validate IR.json: check an IR made by another program."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import SpecErrors
from ._common import EXIT_OK, EXIT_SPEC, EXIT_USAGE, add_format

NAME, HELP, ORDER = "validate", "validate an IR given as JSON (a file, or - for stdin)", 32


def configure(p):
    p.add_argument("file", metavar="IR.json")
    add_format(p)


def run(args) -> int:
    from ..validate import validate

    try:
        # bytes: validate() says which byte is not UTF-8, as a located E601
        text = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"cnnspec validate: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        model = validate(text)
    except SpecErrors as errs:
        for e in errs.errors:
            e.path = args.file
        if args.format == "json":
            print(json.dumps({"ok": False, "errors": errs.to_list()}, indent=2))
        else:
            print(errs.render(), file=sys.stderr)
        return EXIT_SPEC
    if args.format == "json":
        print(json.dumps({"ok": True, **model.totals()}))
    else:
        print(f"{args.file}: ok: {len(model.nodes) - 1} layers, {model.params:,} params")
    return EXIT_OK
