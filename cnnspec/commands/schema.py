"""cnnspec schema: the JSON Schema of the IR."""

from __future__ import annotations

import json

from ._common import EXIT_OK

NAME, HELP, ORDER = "schema", "print the JSON Schema of the IR", 31


def configure(p):
    pass


def run(args) -> int:
    from ..ir import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK
