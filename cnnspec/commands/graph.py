"""cnnspec graph FILE [-o OUT.svg|png|dot] [--params]: draw the network with Graphviz."""

from __future__ import annotations

import sys
from pathlib import Path

from ._common import EXIT_OK, EXIT_SPEC, EXIT_USAGE, load, output_is_input, write_atomic

NAME, HELP, ORDER = "graph", "draw the network (Graphviz: svg, png or dot)", 45
DESCRIPTION = (
    "Draw the network: a box per layer with its output shape, a cluster per block, "
    "residual and branch, skip connections dashed. The format follows the suffix of "
    "-o (.svg, .png, .dot/.gv); without -o the DOT text goes to stdout. svg and png "
    "need Graphviz's 'dot' program."
)


def configure(p):
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", metavar="OUT", help="OUT.svg, OUT.png or OUT.dot")
    p.add_argument("--params", action="store_true", help="show parameters and MACs per layer")


def run(args) -> int:
    from ..graph import GraphvizMissing, render, to_dot

    fmt = None
    if args.output:
        suffix = Path(args.output).suffix.lower().lstrip(".")
        fmt = {"gv": "dot"}.get(suffix, suffix)
        if fmt not in ("svg", "png", "dot"):
            print(
                f"cnnspec graph: error: cannot tell the format of {args.output!r}: "
                "use a name ending in .svg, .png or .dot",
                file=sys.stderr,
            )
            return EXIT_USAGE
    if output_is_input("graph", args.output, args.file):
        return EXIT_USAGE
    model = load(args.file)
    if model is None:
        return EXIT_SPEC
    text = to_dot(model, params=args.params)
    if fmt is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        data = render(text, fmt)
    except GraphvizMissing:
        fallback = Path(args.output).with_suffix(".dot")
        write_atomic(fallback, text)
        print(
            f"cnnspec graph: Graphviz 'dot' is not installed, so no {fmt} was made; wrote the "
            f"DOT text to {fallback} instead (install Graphviz, e.g. 'apt-get install "
            f"graphviz', or render it elsewhere with 'dot -T{fmt}')",
            file=sys.stderr,
        )
        return EXIT_SPEC
    except (RuntimeError, OSError) as exc:
        print(f"cnnspec graph: error: {exc}", file=sys.stderr)
        return EXIT_SPEC
    write_atomic(args.output, data)
    print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK
