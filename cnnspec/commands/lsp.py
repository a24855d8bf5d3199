"""cnnspec lsp: the language server for editors, on stdin/stdout (see cnnspec/lsp.py)."""

from __future__ import annotations

import sys

from ._common import EXIT_OK, EXIT_SPEC

NAME, HELP, ORDER = "lsp", "language server for editors (stdio)", 90
DESCRIPTION = (
    "Run the language server on stdin/stdout: diagnostics as you type, and hover "
    "with the output shape, parameters and MACs of the layer under the cursor. "
    "Needs the pygls package."
)


def configure(p):
    p.add_argument(
        "--stdio", action="store_true", help="accepted for editors; stdio is the only transport"
    )


def run(args) -> int:
    try:
        import pygls  # noqa: F401

        from ..lsp import serve
    except ImportError:
        print(
            "cnnspec lsp: error: the language server needs pygls: pip install pygls",
            file=sys.stderr,
        )
        return EXIT_SPEC
    serve()
    return EXIT_OK
