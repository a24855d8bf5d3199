"""cnnspec build FILE --backend torch|keras: standalone model source for a spec."""

from __future__ import annotations

import importlib
import sys

from ._common import EXIT_OK, EXIT_SPEC, load, write_atomic

NAME, HELP, ORDER = "build", "write standalone PyTorch or Keras source for a spec", 30

# backend name -> module with generate(model) -> str
BACKENDS = {"torch": "cnnspec.backends.torch", "keras": "cnnspec.backends.keras"}


def configure(p):
    p.add_argument("file", metavar="FILE")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="torch",
                   help="framework of the generated code (default torch)")
    p.add_argument("-o", "--output", metavar="PATH", help="write here instead of stdout")


def run(args) -> int:
    model = load(args.file)
    if model is None:
        return EXIT_SPEC
    source = importlib.import_module(BACKENDS[args.backend]).generate(model)
    if args.output:
        write_atomic(args.output, source)
    else:
        sys.stdout.write(source)
    return EXIT_OK
