"""Weights into a built network: cnnspec state_dicts, torchvision's matched by order, files.

Matching, the flatten rule and the report are cnnspec.weights' (the transfer section uses
the same); this module only moves torch tensors in and out of them.
"""

from __future__ import annotations

from pathlib import Path

from ...ir import Model
from ...weights import fingerprint as fp
from ...weights.matching import LoadReport, SourceLayer, SourceWeights, match, targets
from .plan import module_paths


class WeightsError(ValueError):
    """Weights that do not fit the network: says which layer, which tensor, which shapes."""


def _shape(t) -> str:
    return "x".join(str(d) for d in t.shape) or "scalar"


def _source(state_dict, label: str) -> SourceWeights:
    """A torch state_dict as the file's layers, in its registration order, C,H,W flatten;
    a module's own tensors after its sub-modules' (see _after_children)."""
    layers: dict[str, SourceLayer] = {}
    for key, value in state_dict.items():
        owner, _, role = key.rpartition(".")
        layers.setdefault(owner, SourceLayer(owner, {})).tensors[role] = (
            value.detach().cpu().numpy()
        )
    return SourceWeights(label, _after_children(list(layers.values())), "torch", flatten="chw")


def _after_children(layers: list[SourceLayer]) -> list[SourceLayer]:
    """torch lists a module's own parameters before its sub-modules' tensors, but a module
    that has both applies its own after them (torchvision's ConvNeXt CNBlock: `layer_scale`
    times the output of `block`): in order matching, they go after its last sub-module's.

        >>> [x.name for x in _after_children([SourceLayer(n, {}) for n in ("b", "b.0", "b.1", "c")])]
        ['b.0', 'b.1', 'b', 'c']
    """
    out: list[SourceLayer] = []
    held: list[SourceLayer] = []  # modules waiting for the end of their sub-modules
    for layer in layers:
        while held and not layer.name.startswith(held[-1].name + "."):
            out.append(held.pop())
        if any(other.name.startswith(layer.name + ".") for other in layers) and layer.name:
            held.append(layer)
        else:
            out.append(layer)
    return out + held[::-1]


def load_torchvision_state_dict(
    module, model: Model, state_dict, strict: bool = True
) -> LoadReport:
    """Copy a torchvision-style state_dict into a built cnnspec network, layer by layer in
    order: the i-th module with tensors in torchvision's state_dict goes to the i-th
    parameterised node of the spec, tensor names (weight, bias, running_mean, ...) and
    shapes checked. Tensors that index a flattened map's features (a dense layer's columns,
    a batch norm after flatten) are reordered from torchvision's C, H, W to cnnspec's
    H, W, C (cnnspec.weights.flatten). Raises WeightsError naming the layers when something
    does not fit (strict), else returns the LoadReport with what was copied."""
    import torch

    target = module.state_dict()
    paths = module_paths(model)
    owned: dict[str, dict[str, tuple]] = {}  # node -> its tensors (the longest path owns)
    longest_first = sorted(paths.items(), key=lambda item: -len(item[1]))
    for key, value in target.items():
        node, path = next(((n, p) for n, p in longest_first if key.startswith(p + ".")), (None, ""))
        if node is not None:
            owned.setdefault(node, {})[key[len(path) + 1 :]] = tuple(value.shape)
    nodes = [n for n in model.nodes if n.name in owned]
    report = match(
        targets(model, nodes, lambda n: owned[n.name]),
        _source(state_dict, "torchvision"),
        "torchvision",
        method="order",
    )
    if strict and not (report.ok and not report.unexpected):
        raise WeightsError(f"the torchvision weights do not fit '{model.name}':\n{report}")
    with torch.no_grad():
        for node, values in report.values.items():
            for role, value in values.items():
                key = f"{paths[node]}.{role}"
                target[key].copy_(torch.from_numpy(value).to(target[key].dtype))
    return report


def read_weights(path, model: Model | None = None) -> dict:
    """A state_dict from .safetensors (safetensors) or a torch file read with
    weights_only=True (no pickle code runs); a dict holding "state_dict" is unwrapped.
    With `model`, a file that carries another spec's fingerprint is refused."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if model is not None:
        try:
            fp.check(path, model)
        except fp.ForeignWeights as exc:
            raise WeightsError(str(exc)) from None
    try:
        if path.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (a corrupt or pickle file: say which, no traceback)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: not a readable weights file ({first})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a mapping of names to tensors (a state_dict)")
    return state


def load_weights(module, model: Model, state: dict, fmt: str = "cnnspec", label: str = "the file"):
    """Load a state_dict with cnnspec's keys (fmt 'cnnspec') or torchvision's ('torchvision',
    matched by order); raises WeightsError listing what does not fit."""
    if fmt == "torchvision":
        return load_torchvision_state_dict(module, model, state)
    target = module.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [
        f"{k}: {_shape(state[k])} in the file, {_shape(target[k])} in the network"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if missing or unexpected or shapes:
        report = LoadReport(label, "name", missing=missing, unexpected=unexpected)
        text = "\n".join(
            [
                str(report),
                *([f"{len(shapes)} mis-shaped:"] if shapes else []),
                *(f"  {line}" for line in shapes[:8]),
            ]
        )
        raise WeightsError(
            f"{label} does not fit '{model.name}':\n{text}\n(torchvision "
            "weights: use the torchvision format, matched by order)"
        )
    module.load_state_dict(state)
    return None
