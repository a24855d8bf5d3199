"""cnnspec check FILE...: compile each spec, report every error, exit 1 if any."""

from __future__ import annotations

import json

from ..layers import fmt_int, fmt_shape
from ._common import EXIT_OK, EXIT_SPEC, add_format, load

NAME, HELP, ORDER = "check", "check that specs are valid networks", 10


def configure(p):
    p.add_argument("files", nargs="+", metavar="FILE")
    add_format(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")


def run(args) -> int:
    status, results = EXIT_OK, []
    for path in args.files:
        model = load(path, args.format)
        if model is None:
            status = EXIT_SPEC
            continue
        if args.format == "json":
            results.append({"path": path, "ok": True, **model.totals()})
        elif not args.quiet:
            print(f"{path}: ok: {len(model.nodes) - 1} layers, "
                  f"{fmt_shape(model.input_shape)} -> "
                  f"{', '.join(fmt_shape(s) for s in model.output_shapes)}, "
                  f"{fmt_int(model.params)} params, {fmt_int(model.macs)} MACs")
    if args.format == "json" and results:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return status
