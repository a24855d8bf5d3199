"""cnnspec export FILE --onnx OUT.onnx [--weights W]: the network as an ONNX file."""

from __future__ import annotations

import sys

from ._common import EXIT_OK, EXIT_SPEC, EXIT_USAGE, load

NAME, HELP, ORDER = "export", "export the network (with weights) to ONNX", 45
DESCRIPTION = ("Export the network to ONNX through PyTorch, in eval mode with a dynamic batch "
               "size. Weights come from a .safetensors file or a torch file (read with "
               "weights_only=True); without --weights they are freshly initialised.")


def configure(p):
    p.add_argument("file", metavar="FILE")
    p.add_argument("--onnx", metavar="OUT", required=True, help="the .onnx file to write")
    p.add_argument("--weights", metavar="W", help="a state_dict: .safetensors, .pt or .pth")
    p.add_argument("--weights-format", choices=("cnnspec", "torchvision"), default="cnnspec",
                   help="key names of the weights: cnnspec's, or torchvision's (matched by "
                        "layer order, CHW flatten reordered); default cnnspec")
    p.add_argument("--logits", action="store_true", help="leave out the final softmax")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")


def run(args) -> int:
    model = load(args.file)
    if model is None:
        return EXIT_SPEC
    try:
        import torch  # noqa: F401  (the exporter is torch's)
    except ImportError:
        print("cnnspec export needs PyTorch: pip install 'cnnspec[torch]' onnx",
              file=sys.stderr)
        return EXIT_USAGE
    from ..backends import torch as tb
    net = tb.build(model, logits=args.logits)
    if args.weights:
        try:
            tb.load_weights(net, model, tb.read_weights(args.weights, model), args.weights_format)
        except tb.WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_SPEC
    tb.export_onnx(net, model, args.onnx, opset=args.opset)
    print(f"wrote {args.onnx}", file=sys.stderr)
    return EXIT_OK
