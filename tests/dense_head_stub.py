"""A stand-in for cnnspec.detection.heads (the head construct, built beside this work) so
that training, evaluation and prediction of dense heads are tested end to end now: a model
whose single output is a plain conv map (H, W, 4 + C + 1) is read as one anchor-free,
YOLO-style head with objectness, at the stride the map has to the input.

    python tests/dense_head_stub.py train SPEC ...   runs the CLI with the stand-in installed
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnnspec.detection.priors import Geometry, HeadInfo


def head_infos(model) -> list[HeadInfo]:
    out = model.outputs[0]
    shape = model.node(out).shape
    if len(model.outputs) != 1 or len(shape) != 3 or shape[-1] < 6:
        return []
    rows, cols, columns = shape
    stride = model.input_shape[0] // rows
    geometry = Geometry((stride,), ((rows, cols),), offset=0.5)
    return [HeadInfo(out, columns - 5, geometry, extra="objectness")]


def install() -> None:
    import cnnspec.detection

    module = types.ModuleType("cnnspec.detection.heads")
    module.head_infos = head_infos
    sys.modules["cnnspec.detection.heads"] = module
    cnnspec.detection.heads = module


if __name__ == "__main__":
    install()
    from cnnspec.cli import main

    sys.exit(main(sys.argv[1:]))
