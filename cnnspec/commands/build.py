"""cnnspec build FILE --backend torch|keras [-o OUT.py]: standalone model source."""

from __future__ import annotations

import importlib
import sys

from ._common import EXIT_OK, EXIT_SPEC, EXIT_USAGE, load, output_is_input, write_atomic

NAME, HELP, ORDER = "build", "write the network as standalone PyTorch or Keras source", 40
DESCRIPTION = (
    "Write the network as a standalone Python file for a framework: readable code "
    "that imports the framework only, never cnnspec. The same spec gives the same "
    "bytes."
)

# backend name -> module offering source_code(model) -> str
BACKENDS = {"torch": "cnnspec.backends.torch", "keras": "cnnspec.backends.keras"}


def configure(p):
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        default="torch",
        help="framework to write code for (default torch)",
    )
    p.add_argument("-o", "--output", metavar="OUT", help="file to write (default: standard output)")


def backend(name: str):
    """The backend module for `name`, or None where it is not available."""
    try:
        return importlib.import_module(BACKENDS[name])
    except ModuleNotFoundError:
        return None


def run(args) -> int:
    if output_is_input("build", args.output, args.file):
        return EXIT_USAGE
    model = load(args.file)
    if model is None:
        return EXIT_SPEC
    mod = backend(args.backend)
    if mod is None or not hasattr(mod, "source_code"):
        print(
            f"cnnspec build: the {args.backend} backend is not available in this installation",
            file=sys.stderr,
        )
        return EXIT_USAGE
    source = mod.source_code(model)
    if args.output:
        write_atomic(args.output, source)
    else:
        sys.stdout.write(source)
    return EXIT_OK
