"""cnnspec kinds [KIND]: the layer reference, read from the registry."""

from __future__ import annotations

import difflib
import sys

from ._common import EXIT_OK, EXIT_USAGE

NAME, HELP, ORDER = "kinds", "list the layer kinds: arguments, defaults, formulas", 25


def configure(p):
    p.add_argument(
        "kind",
        metavar="KIND",
        nargs="?",
        help="a kind or one of its keywords (conv, maxpool, relu, ...)",
    )
    p.add_argument("--format", choices=("text", "markdown"), default="text")


def run(args) -> int:
    from ..layers import KEYWORDS, REGISTRY
    from ..reference import markdown_table, reference, render_entry, render_list

    if args.kind is None:
        print(markdown_table() if args.format == "markdown" else render_list())
        return EXIT_OK
    kind = args.kind
    if kind not in REGISTRY and kind in KEYWORDS:
        kind = KEYWORDS[kind][0].model_fields["kind"].default
    if kind not in REGISTRY:
        near = difflib.get_close_matches(args.kind, sorted({*REGISTRY, *KEYWORDS}), n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        print(
            f"cnnspec kinds: error: no layer kind or keyword {args.kind!r}{hint}", file=sys.stderr
        )
        return EXIT_USAGE
    print(render_entry(reference(kind)))
    return EXIT_OK
