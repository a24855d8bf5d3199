"""cnnspec export FILE --onnx OUT.onnx [--weights W]: the network as an ONNX file."""

from __future__ import annotations

import sys

from ._common import EXIT_OK, EXIT_SPEC, EXIT_USAGE, load, report
from .check import _size, over_budget

NAME, HELP, ORDER = "export", "export the network (with weights) to ONNX", 45
DESCRIPTION = (
    "Export the network to ONNX through PyTorch, in eval mode with a dynamic batch "
    "size. Weights come from a .safetensors file or a torch file (read with "
    "weights_only=True); without --weights they are freshly initialised."
)


def configure(p):
    p.add_argument("file", metavar="FILE")
    p.add_argument("--onnx", metavar="OUT", required=True, help="the .onnx file to write")
    p.add_argument("--weights", metavar="W", help="a state_dict: .safetensors, .pt or .pth")
    p.add_argument(
        "--weights-format",
        choices=("cnnspec", "torchvision"),
        default="cnnspec",
        help="key names of the weights: cnnspec's, or torchvision's (matched by "
        "layer order, CHW flatten reordered); default cnnspec",
    )
    p.add_argument("--logits", action="store_true", help="leave out the final softmax")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument(
        "--decode",
        action="store_true",
        help="dense detection heads: export boxes (xyxy pixels) and per-class scores "
        "instead of the raw head output",
    )
    p.add_argument(
        "--nms",
        action="store_true",
        help="with --decode: class-aware NMS too (one image per call; the settings of "
        "--score-threshold, --iou-threshold, --max-detections, --top-k)",
    )
    from .predict import add_detection_settings

    add_detection_settings(p)
    p.add_argument(
        "--max-memory",
        type=_size,
        metavar="SIZE",
        help="refuse networks whose parameters plus batch-1 activations (float32) "
        "need more than SIZE (default: the memory available now)",
    )


def _available_memory() -> int | None:
    """Free physical memory in bytes, where the system says (Linux, macOS), else None."""
    import os

    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _opset_range() -> tuple[int, int]:
    """The opsets this torch exports; torch keeps them in a private module, hence the fallback
    (torch 2.x: 7 to 20 or more)."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET, ONNX_MIN_OPSET

        return ONNX_MIN_OPSET, ONNX_MAX_OPSET
    except ImportError:
        return 7, 20


def run(args) -> int:
    model = load(args.file)
    if model is None:
        return EXIT_SPEC
    try:
        import torch  # noqa: F401  (the exporter is torch's)
    except ImportError:
        print("cnnspec export needs PyTorch: pip install 'cnnspec[torch]' onnx", file=sys.stderr)
        return EXIT_USAGE
    low, high = _opset_range()
    if not low <= args.opset <= high:
        print(
            f"cnnspec export: --opset must be from {low} to {high} with this PyTorch; "
            f"received {args.opset}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    # Estimated before anything is allocated: `dense 1e9` or a huge input was a MemoryError.
    limit = args.max_memory if args.max_memory is not None else _available_memory()
    if limit is not None:
        errs = over_budget(model, limit, args.file)
        if errs is not None:
            if args.max_memory is None:
                errs.errors[0].message = errs.errors[0].message.replace(
                    "--max-memory", "the memory available"
                )
            report(errs, args.file)
            return EXIT_SPEC
    from ..backends import torch as tb

    net = tb.build(model, logits=args.logits)
    if args.weights:
        try:
            tb.load_weights(net, model, tb.read_weights(args.weights, model), args.weights_format)
        except tb.WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_SPEC
        net = _with_trained_normalization(net, model, args.weights)
    if args.decode or args.nms:
        return _export_decoded(net, model, args)
    tb.export_onnx(net, model, args.onnx, opset=args.opset)
    print(f"wrote {args.onnx}", file=sys.stderr)
    return EXIT_OK


def _export_decoded(net, model, args) -> int:
    """--decode [--nms]: the dense detection head's decoding in the graph (train/dense_onnx)."""
    from ..train.plan import dense_heads
    from .predict import detection_settings

    heads = dense_heads(model)
    if not heads or not args.decode:
        why = "--nms needs --decode" if heads else "the network has no dense detection head"
        print(f"cnnspec export: {why}", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = detection_settings(args) if args.nms else None
    except ValueError as exc:
        print(f"cnnspec export: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from ..train.dense_onnx import export_decoded

    export_decoded(net, model, heads[0], args.onnx, settings, opset=args.opset)
    print(f"wrote {args.onnx} (decoded{', with NMS' if settings else ''})", file=sys.stderr)
    return EXIT_OK


def _with_trained_normalization(net, model, weights: str):
    """The weights' data-fitted normalisation put in front of the network, where the spec
    does not declare its own (cnnspec/train/pixels.py): the ONNX file then reads what predict
    reads, images in [0, 1]."""
    from ..backends.torch.export import standardising
    from ..train.pixels import declares, weights_normalization

    norm = None if declares(model) else weights_normalization(weights)
    if not norm:
        return net
    print(
        f"the ONNX file standardises its input with the mean and std {weights} was "
        "trained with; declare them on the input line to put them in the spec",
        file=sys.stderr,
    )
    return standardising(net, model, norm["mean"], norm["std"])
