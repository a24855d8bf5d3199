"""What building a module and writing its source share: each layer's torch op along the graph,
the modules' attribute paths, dead nodes and final softmaxes. Needs no framework."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ...ir import Model
from ...logits import final_activation, without_final_activation
from .. import torch_emit as te
from ..pysource import identifier
from .emitters import torch_op

# nn.Module's own attributes, and those the generated class adds: a layer called so gets "_".
_MODULE_ATTRS = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "smart_apply",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
        "logits",
        "output_names",
        "softmax_outputs",
        "spec",
    }
)
# Names the generated forward uses for itself.
_CODE_NAMES = frozenset({"self", "x", "inputs", "torch", "nn", "F", "float", "build_model"})


@dataclass
class Step:
    node: str
    op: te.TorchOp
    inputs: list[str]
    shape: tuple[int, ...]
    attr: tuple[str, ...] | None = None  # where the module lives, if the op has one
    softmax: bool = False  # a final softmax, skipped for logits
    live: bool = True  # feeds an output


@dataclass
class Plan:
    name: str
    class_name: str
    input: str
    input_shape: tuple[int, ...]
    steps: list[Step]
    outputs: list[str]
    containers: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def softmax_outputs(self) -> list[str]:
        return [s.node for s in self.steps if s.softmax]


def plan(model: Model) -> Plan:
    """Ask the emitter table for each node's torch op; name the modules; mark dead nodes and
    final softmaxes."""
    consumers: dict[str, int] = {n.name: 0 for n in model.nodes}
    for n in model.nodes:
        for i in n.inputs:
            consumers[i] += 1
    live = model.live()
    steps = []
    for node in model.nodes[1:]:
        layer, softmax = node.layer, False
        if (
            node.name in model.outputs
            and consumers[node.name] == 0
            and final_activation(layer) == "softmax"
        ):  # applied unless net.logits
            layer, softmax = without_final_activation(layer), True
        shapes = [model.node(i).shape for i in node.inputs]
        op = torch_op(layer, shapes, node.span, model.source)
        steps.append(
            Step(
                node.name,
                op,
                list(node.inputs),
                tuple(node.shape),
                softmax=softmax,
                live=node.name in live,
            )
        )
    _overwrite_where_safe(steps, consumers, model)
    containers = _name_modules(steps)
    return Plan(
        model.name,
        class_name(model.name),
        model.input.name,
        tuple(model.input_shape),
        steps,
        list(model.outputs),
        containers,
    )


def module_paths(model: Model) -> dict[str, str]:
    """Node name -> the torch module's attribute path (its state_dict key prefix): dotted
    names nest, and each part is made a Python identifier ('layer1.0' -> 'layer1.n0')."""
    return {s.node: ".".join(s.attr) for s in plan(model).steps if s.attr is not None}


def _overwrite_where_safe(steps: list[Step], consumers: dict[str, int], model: Model) -> None:
    """Use a layer's in-place forward (which overwrites its first input) where that input is a
    fresh tensor read by it alone, as torchvision's ReLU(inplace=True) after batch norm and
    `out += identity`: same values, no new allocation."""
    by_name = {s.node: s for s in steps}
    for step in steps:
        if step.op.inplace is None:
            continue
        src = by_name.get(step.inputs[0])
        if (
            src is not None
            and src.op.fresh
            and consumers[src.node] == 1
            and src.node not in model.outputs
        ):
            step.op = replace(step.op, forward=step.op.inplace)


def _name_modules(steps: list[Step]) -> list[tuple[str, ...]]:
    """Attribute paths for the modules: a dotted node name becomes nested containers, so that
    state_dict keys read `layer1.bottleneck1.conv1.weight`."""
    assigned: dict[tuple, tuple[str, ...]] = {}
    taken: dict[tuple[str, ...], set[str]] = {}
    containers: list[tuple[str, ...]] = []
    for step in steps:
        if step.op.module is None:
            continue
        parts = step.node.split(".")
        path: tuple[str, ...] = ()
        for i, part in enumerate(parts):
            leaf = i == len(parts) - 1
            key = (path, part, leaf)
            if key not in assigned:
                used = taken.setdefault(path, set())
                attr = identifier(part, _MODULE_ATTRS | used)
                used.add(attr)
                assigned[key] = (*path, attr)
                if not leaf:
                    containers.append(assigned[key])
            path = assigned[key]
        step.attr = path
    return containers


def layout(p: Plan):
    """(path, step) in registration order, step None for a container: each container just
    before its first member, so state_dict keys follow the spec's node order."""
    containers, made = set(p.containers), set()
    for step in p.steps:
        if step.attr is None:
            continue
        for k in range(1, len(step.attr)):
            if step.attr[:k] in containers and step.attr[:k] not in made:
                made.add(step.attr[:k])
                yield step.attr[:k], None
        yield step.attr, step


def class_name(name: str) -> str:
    words = [w for w in re.split(r"[^0-9A-Za-z]+", name) if w]
    text = "".join(w[:1].upper() + w[1:] for w in words) or "Model"
    return identifier(text if not text[0].isdigit() else f"Net{text}", _CODE_NAMES | {"Tensor"})
