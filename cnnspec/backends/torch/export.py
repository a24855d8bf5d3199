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
    """Write the network (eval mode) as ONNX, batch size dynamic; atomically (temp + rename)."""
    outputs = [identifier(o) for o in model.outputs]
    axes = {"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    write_onnx(module, model, path, outputs, axes, opset)


def write_onnx(module, model: Model, path, outputs: list[str], axes: dict, opset: int) -> None:
    """`module` (in eval mode, its mode restored after) traced on the spec's input example and
    written as ONNX with these output names and dynamic axes, atomically (temp + rename).
    Uses torch's TorchScript-based exporter (the dynamo one needs onnxscript); its tracer
    warnings are about Python values made constants, which the export means to do."""
    import warnings

    import torch

    from ...outputs import write_with

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


def standardising(module, model: Model, mean: list[float], std: list[float]):
    """`module` behind (x - mean) / std per channel: for weights trained with a data-fitted
    `normalize` of a spec that does not declare its preprocessing, so that the ONNX file
    reads [0, 1] images as predict does. The constants are non-persistent buffers."""
    import torch

    shape = (1, -1, 1, 1) if len(model.input_shape) == 3 else (1, -1)

    class Standardised(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = module
            self.register_buffer("mean", torch.tensor(mean).view(shape), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(shape), persistent=False)

        def forward(self, x):
            return self.net((x - self.mean) / self.std)

    return Standardised()
