"""ONNX export of a built network."""

from __future__ import annotations

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
    import warnings

    import torch

    from ...outputs import write_with

    outputs = [identifier(o) for o in model.outputs]
    axes = {"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    was_training = module.training
    module.eval()

    def write(tmp):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (input_example(model),),
                tmp,
                dynamo=False,
                input_names=["input"],
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=opset,
            )

    try:
        write_with(path, write)
    finally:
        module.train(was_training)
