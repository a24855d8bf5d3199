"""Weights into a built network: cnnspec state_dicts, torchvision's matched by order, files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...ir import Model
from .plan import plan


class WeightsError(ValueError):
    """Weights that do not fit the network: says which layer, which tensor, which shapes."""


@dataclass
class LoadReport:
    """What `load_torchvision_state_dict` matched: (cnnspec key, torchvision key) pairs."""

    matched: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)       # cnnspec keys without a source
    unexpected: list[str] = field(default_factory=list)    # torchvision keys left over
    mismatched: list[str] = field(default_factory=list)    # described pairs that differ
    reordered: list[str] = field(default_factory=list)     # dense weights re-ordered CHW->HWC

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"{len(self.matched)} tensors matched"]
        for title, items in (("missing in the torchvision weights", self.missing),
                             ("unexpected (no cnnspec layer left)", self.unexpected),
                             ("mismatched", self.mismatched)):
            if items:
                shown = items[:8] + ([f"... and {len(items) - 8} more"] if len(items) > 8 else [])
                lines.append(f"{len(items)} {title}:")
                lines += [f"  {i}" for i in shown]
        return "\n".join(lines)


def _groups(keys) -> list[tuple[str, list[str]]]:
    """State-dict keys grouped by the module that owns them, in order."""
    out: list[tuple[str, list[str]]] = []
    for key in keys:
        owner, _, _ = key.rpartition(".")
        if out and out[-1][0] == owner:
            out[-1][1].append(key)
        else:
            out.append((owner, [key]))
    return out


def _flat_sources(model: Model) -> dict[str, tuple | None]:
    sources: dict[str, tuple | None] = {}
    for n in model.nodes:
        shapes = [model.node(i).shape for i in n.inputs]
        sources[n.name] = n.layer.flat_source(shapes, [sources[i] for i in n.inputs]) \
            if n.inputs else None
    return sources


def _shape(t) -> str:
    return "x".join(str(d) for d in t.shape) or "scalar"


def load_torchvision_state_dict(module, model: Model, state_dict, strict: bool = True):
    """Copy a torchvision-style state_dict into a built cnnspec network, layer by layer in
    order: the i-th module with tensors in torchvision's state_dict goes to the i-th in the
    spec's node order, tensor names (weight, bias, running_mean, ...) and shapes checked.
    A dense layer reading a flattened HxWxC map gets its columns reordered from torchvision's
    C, H, W flatten to cnnspec's H, W, C. Raises WeightsError naming the layers when
    something does not fit (strict), else returns the LoadReport with what was copied."""
    import torch
    target = module.state_dict()
    node_of = {}
    for step in plan(model).steps:
        if step.attr is not None:
            node_of[".".join(step.attr)] = step.node
    sources = _flat_sources(model)
    dst = _groups(target.keys())
    src = _groups(state_dict.keys())
    report = LoadReport()
    updates = {}
    for k, ((d_owner, d_keys), (s_owner, s_keys)) in enumerate(zip(dst, src)):
        d_names = [key[len(d_owner) + 1:] for key in d_keys]
        s_names = [key[len(s_owner) + 1:] for key in s_keys]
        node = next((node_of[o] for o in node_of if d_owner == o or
                     d_owner.startswith(o + ".")), d_owner)
        where = f"layer {k + 1}: cnnspec '{node}' ({d_owner}) <- torchvision '{s_owner}'"
        if sorted(d_names) != sorted(s_names):
            report.mismatched.append(f"{where}: tensors {sorted(d_names)} vs {sorted(s_names)}")
            continue
        for name in d_names:
            dk, sk = f"{d_owner}.{name}", f"{s_owner}.{name}"
            value = state_dict[sk]
            flat = _input_flat(model, sources, node)
            if flat and name == "weight" and value.dim() == 2:
                h, w, c = flat
                if h * w > 1 and c > 1 and value.shape[1] == h * w * c:
                    value = value.reshape(-1, c, h, w).permute(0, 2, 3, 1).reshape(
                        value.shape[0], -1)
                    report.reordered.append(dk)
            if tuple(value.shape) != tuple(target[dk].shape):
                report.mismatched.append(f"{where}: {name} is {_shape(target[dk])} in cnnspec, "
                                         f"{_shape(value)} in torchvision")
                continue
            updates[dk] = value.detach().to(target[dk].dtype)
            report.matched.append((dk, sk))
    for _, keys in dst[len(src):]:
        report.missing += keys
    for _, keys in src[len(dst):]:
        report.unexpected += keys
    if strict and not report.ok:
        raise WeightsError(f"the torchvision weights do not fit '{model.name}':\n{report}")
    with torch.no_grad():
        for key, value in updates.items():
            target[key].copy_(value)
    return report



def _input_flat(model: Model, sources: dict, node: str) -> tuple | None:
    """The HxWxC map flattened into this node's (one) input, if any."""
    if node not in sources:
        return None
    inputs = model.node(node).inputs
    return sources[inputs[0]] if len(inputs) == 1 else None


def read_weights(path) -> dict:
    """A state_dict from .safetensors (safetensors) or a torch file read with
    weights_only=True (no pickle code runs); a dict holding "state_dict" is unwrapped."""
    import torch
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001  (a corrupt file: say which, no traceback)
        raise WeightsError(f"{path}: not a readable weights file ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise WeightsError(f"{path}: expected a mapping of names to tensors (a state_dict)")
    return state


def load_weights(module, model: Model, state: dict, fmt: str = "cnnspec"):
    """Load a state_dict with cnnspec's keys (fmt 'cnnspec') or torchvision's ('torchvision',
    matched by order); raises WeightsError listing what does not fit."""
    if fmt == "torchvision":
        return load_torchvision_state_dict(module, model, state)
    target = module.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [f"{k}: {_shape(state[k])} in the file, {_shape(target[k])} in the network"
              for k in target if k in state and state[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        report = LoadReport(missing=missing, unexpected=unexpected, mismatched=shapes)
        raise WeightsError(f"the weights do not fit '{model.name}':\n{report}\n(torchvision "
                           "weights: use the torchvision format, matched by order)")
    module.load_state_dict(state)
    return None
