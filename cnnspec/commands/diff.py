"""cnnspec diff A.cnn B.cnn: what changed, layer by layer, with the totals and their deltas."""

from __future__ import annotations

from ._common import EXIT_OK, EXIT_SPEC, load

NAME, HELP, ORDER = "diff", "compare two specs layer by layer", 35
DESCRIPTION = (
    "Compare two networks layer by layer (matched by name, then by position): added "
    "and removed layers, changed arguments, shapes, parameters and MACs, the totals "
    "with deltas, and the compile/transfer settings. Exit 0 whether or not they "
    "differ; with --exit-code, exit 1 when they differ (as git diff does; a spec "
    "error also exits 1)."
)


def configure(p):
    p.add_argument("a", metavar="A.cnn")
    p.add_argument("b", metavar="B.cnn")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the networks differ")


def run(args) -> int:
    from ..diff import diff, render_json, render_markdown, render_text

    fmt = "json" if args.format == "json" else "text"
    a, b = load(args.a, fmt), load(args.b, fmt)
    if a is None or b is None:
        return EXIT_SPEC
    d = diff(a, b, args.a, args.b)
    render = {"text": render_text, "json": render_json, "markdown": render_markdown}
    print(render[args.format](d))
    return EXIT_SPEC if args.exit_code and d.different else EXIT_OK
