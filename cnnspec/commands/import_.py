"""cnnspec import SOURCE -o OUT.cnn: write a spec from an existing model (see cnnspec/importer)."""

from __future__ import annotations

import sys

from ..errors import SpecError, SpecErrors
from ._common import EXIT_OK, EXIT_SPEC, EXIT_USAGE, output_is_input, report, write_atomic

NAME, HELP, ORDER = "import", "write a spec from a torchvision or Keras model", 45
DESCRIPTION = (
    "Write a spec from an existing model: torchvision:NAME (built with weights=None "
    "and traced with torch.fx), keras:NAME (keras.applications) or a saved .keras "
    "file. Repeated structures become blocks, torchvision's top-level module names "
    "are kept (layer1 = layer1, fc = dense 1000); the spec counts exactly what the "
    "source counts. What the language cannot say is refused with an E41x error "
    "naming the layer (E417: a construct it does not have yet, named)."
)


def configure(p):
    p.add_argument(
        "source", metavar="SOURCE", help="torchvision:resnet50, keras:MobileNetV2 or PATH.keras"
    )
    p.add_argument("-o", "--output", metavar="OUT.cnn", help="write here (default: stdout)")
    p.add_argument(
        "--input",
        metavar="HxWxC",
        default=None,
        help="input size (default 224x224x3; a saved Keras model keeps its own)",
    )


def run(args) -> int:
    from ..importer import import_spec

    shape = None
    if args.input:
        try:
            shape = tuple(int(d) for d in args.input.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            print(f"cnnspec import: --input wants HxWxC, got '{args.input}'", file=sys.stderr)
            return EXIT_USAGE
    if output_is_input("import", args.output, args.source):
        return EXIT_USAGE
    try:
        text = import_spec(args.source, shape)
    except SpecError as err:
        report(SpecErrors([err.located(args.source)]), None)
        return EXIT_SPEC
    if args.output:
        write_atomic(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK
