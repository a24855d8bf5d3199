"""ONNX export of a built network."""

from __future__ import annotations

from pathlib import Path

from ...ir import Model
from .plan import identifier


def input_example(model: Model, batch: int = 1):
    import torch
    shape = model.input_shape
    nchw = (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)
    return torch.randn(batch, *nchw, generator=torch.Generator().manual_seed(0))


def export_onnx(module, model: Model, path, opset: int = 17) -> None:
    """Write the network (eval mode) as ONNX, batch size dynamic; atomically (temp + rename).
    Uses torch's TorchScript-based exporter (the dynamo one needs onnxscript)."""
    import os
    import tempfile
    import warnings

    import torch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs = [identifier(o) for o in model.outputs]
    axes = {"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    was_training = module.training
    module.eval()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (input_example(model),), tmp, dynamo=False,
                              input_names=["input"], output_names=outputs,
                              dynamic_axes=axes, opset_version=opset)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        module.train(was_training)
