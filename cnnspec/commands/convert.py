"""cnnspec convert FILE --from torch|keras --weights IN -o OUT: weights from one backend to
the other, for the network FILE describes (mapped by node name, see cnnspec.convert)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..outputs import need_space, write_with
from ._common import EXIT_OK, EXIT_SPEC, load, output_is_input

NAME, HELP, ORDER = "convert", "convert weights between the PyTorch and Keras backends", 40
DESCRIPTION = (
    "Convert a network's weights: from a PyTorch state_dict (.safetensors, or .pt / "
    ".pth) to a Keras .weights.h5 file, or from a Keras .weights.h5 file to "
    ".safetensors for PyTorch."
)


def configure(p):
    p.add_argument("file", metavar="FILE", help="the spec the weights belong to")
    p.add_argument(
        "--from",
        dest="source",
        choices=("torch", "keras"),
        required=True,
        help="the framework the weights come from",
    )
    p.add_argument("--weights", required=True, metavar="IN", help="the weights file to read")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="where to write (.weights.h5 for keras, .safetensors for torch)",
    )


def _to_keras(model, args) -> None:
    from ..backends.keras import build
    from ..backends.torch.weights import read_weights
    from ..convert import load_torch_into_keras, save_keras_weights
    from ..weights.fingerprint import stamp_h5

    kmodel = build(model)
    load_torch_into_keras(kmodel, model, read_weights(args.weights, model))
    # HDF5 segfaults on a full disk: check the room first, then write beside and rename
    need_space(args.output, 4 * sum(node.params for node in model.nodes) + (1 << 20))
    notes = _carried(args.weights)

    def write(tmp):
        save_keras_weights(kmodel, model, tmp)
        if notes:
            stamp_h5(tmp, model, notes)

    write_with(args.output, write)


def _to_torch(model, args) -> None:
    from safetensors.numpy import save_file

    from ..backends.keras import build
    from ..convert import keras_to_torch, keras_weights, load_keras_weights
    from ..weights.fingerprint import metadata

    kmodel = build(model)
    load_keras_weights(kmodel, model, args.weights)
    state = keras_to_torch(model, keras_weights(kmodel, model))
    notes = metadata(model) | _carried(args.weights)
    write_with(args.output, lambda tmp: save_file(state, tmp, notes))


def _carried(weights: str) -> dict[str, str]:
    """The input normalisation the source file carries, for the converted file to carry too."""
    from ..weights import normalization

    found = normalization.read(weights)
    return {} if found is normalization.ABSENT else normalization.entry(found)


def run(args) -> int:
    from ..backends.torch.weights import WeightsError
    from ..convert import ConversionError

    model = load(args.file)
    if model is None:
        return EXIT_SPEC
    if output_is_input("convert", args.output, args.file, args.weights):
        return 2
    wanted = ".weights.h5" if args.source == "torch" else ".safetensors"
    if not args.output.endswith(wanted):
        print(
            f"cnnspec convert: error: --from {args.source} writes {wanted}, got {args.output!r}",
            file=sys.stderr,
        )
        return 2
    if not Path(args.weights).is_file():
        print(f"cnnspec convert: error: no such weights file: {args.weights}", file=sys.stderr)
        return EXIT_SPEC
    try:
        (_to_keras if args.source == "torch" else _to_torch)(model, args)
    except (ConversionError, WeightsError, ValueError, OSError) as exc:
        print(f"cnnspec convert: error: {exc}", file=sys.stderr)
        return EXIT_SPEC
    print(f"wrote {args.output}")
    return EXIT_OK
