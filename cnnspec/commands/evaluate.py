"""cnnspec evaluate FILE --weights W --data SOURCE: metrics of saved weights."""

from __future__ import annotations

import json
import sys

from ._common import EXIT_OK, EXIT_SPEC, EXIT_USAGE, load
from .train import add_device

NAME, HELP, ORDER = "evaluate", "metrics of trained weights on a dataset", 61
DESCRIPTION = (
    "Load weights saved by 'cnnspec train' (.safetensors: torch, .weights.h5: "
    "keras) and report the loss and metrics on the held-out split of the data "
    "(the same split training used), or on all of it with --split all."
)


def configure(p):
    p.add_argument("file", metavar="FILE")
    p.add_argument("--weights", required=True, metavar="W")
    p.add_argument("--data", required=True, metavar="SOURCE")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--backend", choices=("torch", "keras"), help="default: from the weights file's suffix"
    )
    add_device(p)
    p.add_argument("--split", choices=("val", "all"), default="val")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--format", choices=("text", "json"), default="text")
    from .predict import add_detection_settings

    # COCO's evaluation keeps low scores: a precision-recall curve needs them
    add_detection_settings(p, score_threshold=0.05)


def run(args) -> int:
    from .predict import detection_settings
    from .train import check_device, guarded, parse_options

    model = load(args.file)
    if model is None:
        return EXIT_SPEC
    if not check_device(args, "evaluate"):
        return EXIT_USAGE
    try:
        settings = detection_settings(args)
    except ValueError as exc:
        print(f"cnnspec evaluate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def work():
        from ..train.session import evaluate

        return evaluate(
            model,
            args.weights,
            args.data,
            args.backend,
            args.batch_size,
            args.split,
            parse_options(args.data_option),
            args.device,
            settings=settings,
        )

    code, result = guarded(work, args.file, "evaluate")
    if code != EXIT_OK:
        return code
    if args.format == "json":
        print(json.dumps(result, indent=2, default=float))
    else:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
        print(f"{result['task']} on {result['n']} images: {shown}")
        print_per_class(result)
    sys.stdout.flush()
    return EXIT_OK


def print_per_class(result: dict) -> None:
    """Dense detection heads: COCO AP@[.5:.95] and AP@.5 of each class (pycocotools)."""
    for name, ap in (result.get("per_class") or {}).items():
        shown = "  ".join(
            f"{key} {'-' if ap[key] is None else f'{ap[key]:.4f}'}" for key in ("ap", "ap_50")
        )
        print(f"  {name:>12}  {shown}")
