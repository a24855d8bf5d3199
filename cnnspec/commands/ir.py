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
    if model.source:  # the document names the file as text (LANG=C: no surrogates)
        model.source = model.source.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    sys.stdout.write(model.to_json() + "\n")
    return EXIT_OK
