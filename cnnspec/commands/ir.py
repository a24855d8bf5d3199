"""cnnspec ir FILE / cnnspec schema / cnnspec validate FILE.json."""

from __future__ import annotations

import sys

from ._common import EXIT_OK, EXIT_SPEC, load

NAME, HELP, ORDER = "ir", "print the IR of a spec as JSON", 30


def configure(p):
    p.add_argument("file", metavar="FILE")


def run(args) -> int:
    model = load(args.file, "json")
    if model is None:
        return EXIT_SPEC
    sys.stdout.write(model.to_json() + "\n")
    return EXIT_OK

