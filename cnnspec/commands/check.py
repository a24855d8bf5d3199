"""cnnspec check FILE...: compile each spec, report every error, exit 1 if any."""

from __future__ import annotations

import json

from ..errors import SpecErrors
from ..layers import fmt_int, fmt_shape
from ._common import EXIT_OK, EXIT_SPEC, add_format, load, report

NAME, HELP, ORDER = "check", "check that specs are valid networks", 10


def configure(p):
    p.add_argument("files", nargs="+", metavar="FILE")
    add_format(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.add_argument(
        "--max-memory",
        type=_size,
        metavar="SIZE",
        help="refuse networks whose parameters plus batch-1 activations (float32) "
        "need more than SIZE, e.g. 4GiB or 500MB",
    )


def _size(text: str) -> int:
    import argparse

    from ..summary import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def over_budget(model, limit: int, path: str):
    """E320 when the network needs more memory than allowed, else None."""
    from ..errors import SpecError, SpecErrors
    from ..summary import BYTES_PER_VALUE, activation_values, human_bytes, memory_bytes

    need = memory_bytes(model)
    if need <= limit:
        return None
    params = model.params * BYTES_PER_VALUE
    acts = activation_values(model) * BYTES_PER_VALUE
    return SpecErrors(
        [
            SpecError(
                "E320",
                f"the network needs {human_bytes(need)}, more than --max-memory "
                f"{human_bytes(limit)}",
                path=path,
                received=f"{human_bytes(params)} of parameters + {human_bytes(acts)} of activations "
                "(batch 1, float32)",
                hint="shrink the input, the widths or the dense layers; 'cnnspec summary' shows "
                "where the memory goes",
            )
        ]
    )


def run(args) -> int:
    status, results = EXIT_OK, []
    for path in args.files:
        model = load(path, args.format)
        if model is not None and model.compile is not None:
            model = _check_training(model, path, args.format)
        if model is None:
            status = EXIT_SPEC
            continue
        if args.max_memory is not None:
            errs = over_budget(model, args.max_memory, path)
            if errs is not None:
                report(errs, path, args.format)
                status = EXIT_SPEC
                continue
        if args.format == "json":
            results.append({"path": path, "ok": True, **model.totals()})
        elif not args.quiet:
            print(
                f"{path}: ok: {len(model.nodes) - 1} layers, "
                f"{fmt_shape(model.input_shape)} -> "
                f"{', '.join(fmt_shape(s) for s in model.output_shapes)}, "
                f"{fmt_int(model.params)} params, {fmt_int(model.macs)} MACs"
            )
    if args.format == "json" and results:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return status


def _check_training(model, path: str, fmt: str):
    """A compile section must be trainable as written (loss vs head, metrics vs task): the
    same checks `cnnspec train` runs first, without importing a framework."""
    from ..train.plan import make_plan

    try:
        make_plan(model)
    except SpecErrors as errs:
        for err in errs.errors:
            err.located(path)
        report(errs, path, fmt)
        return None
    return model
