"""The PyTorch backend: the IR as a torch.nn.Module, as standalone source, weight loading and ONNX.

    import cnnspec
    from cnnspec.backends import torch as tb
    model = cnnspec.compile_file("specs/resnet18.cnn")
    net = tb.build(model)                  # nn.Module; input NCHW float, output NCHW / NC
    source = tb.source_code(model)            # the same network as a readable .py file
    tb.load_torchvision_state_dict(net, model, torchvision_model.state_dict())

Tensors are NCHW (torch's layout); the spec's shapes are HWC. Every semantic choice that differs
between frameworks follows the spec (Keras): TensorFlow's 'same' padding, flatten in H, W, C
order, BatchNorm momentum in Keras' sense. The emitter table (emitters.py, keyed by layer
kind) says how; plan/runtime/source only wire its modules and expressions along the graph,
and name no layer kind.

A network ending in softmax keeps it (inference); `build(model, logits=True)` or setting
`net.logits = True` skips those final softmaxes so that training uses cross-entropy on logits
(`net.softmax_outputs` lists the outputs concerned).

Only build/instantiate/load import torch; planning and `source_code` need no framework.
"""

from .emitters import EMITTERS, torch_op
from .export import export_onnx, input_example
from .plan import Plan, Step, class_name, identifier, layout, module_paths, plan
from .runtime import build, compile_expr, instantiate
from .source import source_code, template_dir
from .weights import (
    LoadReport,
    WeightsError,
    load_torchvision_state_dict,
    load_weights,
    read_weights,
)

__all__ = [
    "EMITTERS",
    "LoadReport",
    "Plan",
    "Step",
    "WeightsError",
    "build",
    "class_name",
    "compile_expr",
    "export_onnx",
    "identifier",
    "input_example",
    "instantiate",
    "layout",
    "load_torchvision_state_dict",
    "load_weights",
    "module_paths",
    "plan",
    "read_weights",
    "source_code",
    "template_dir",
    "torch_op",
]
