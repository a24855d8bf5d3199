"""cnnspec summary FILE: every layer's output shape, parameters and MACs, and the totals."""

from __future__ import annotations

from ._common import EXIT_OK, EXIT_SPEC, load

NAME, HELP, ORDER = "summary", "per-layer shapes, parameters and MACs", 20
DESCRIPTION = (
    "Per-layer output shapes, parameters and multiply-accumulates (MACs: conv and "
    "dense weight multiply-accumulates per sample; bias additions are not counted)."
)


def configure(p):
    p.add_argument("file", metavar="FILE")
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    p.add_argument(
        "--explain", action="store_true", help="show the arithmetic behind each shape and count"
    )


def run(args) -> int:
    from ..summary import render_json, render_table

    model = load(args.file, "json" if args.format == "json" else "text")
    if model is None:
        return EXIT_SPEC
    if args.format == "json":
        print(render_json(model))
    else:
        print(render_table(model, explain=args.explain, markdown=args.format == "markdown"))
    return EXIT_OK
