"""Load the source into a built network and freeze it, in PyTorch or Keras.

    state = prepare(net, model)            # net from cnnspec.backends.{torch,keras}.build(model)
    state.report                           # LoadReport: matched, missing, unexpected, mis-shaped
    optimizer = SGD(state.param_groups(lr))          # torch: backbone_lr for the pretrained part
    ...after each epoch:  if state.epoch_end(epoch): rebuild the Keras optimizer / recompile

Frozen batch norm (bn=inference, the default) runs in inference mode: it normalises with its
pretrained running statistics and does not update them, because the statistics of small
fine-tuning batches would replace the pretrained ones. That is Keras' rule for a BN layer with
trainable=False; torch needs it said, as it switches every BN to batch statistics in train().
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SpecError, SpecErrors
from ..ir import Model
from ..weights.layouts import keras_tensor, to_keras, torch_shape
from ..weights.matching import LoadReport, Target, match, targets
from .freeze import _span, backbone, parameterised
from .sources import resolve
from .tensors import read


def backend_of(net) -> str:
    module = type(net).__module__
    if module.startswith("torch") or any(
        c.__module__.startswith("torch.nn") for c in type(net).__mro__
    ):
        return "torch"
    return "keras"


def prepare(net, model: Model, backend: str | None = None, log=None) -> TransferState:
    """Load the transfer source into `net` and freeze what the spec says; SpecErrors when the
    file is missing or (strict) does not fit."""
    spec = model.transfer
    if spec is None:
        return TransferState(net, None, model, None)
    adapter = _adapter(net, model, backend)
    report = _match(adapter, model)
    head = bool(spec.head)
    if spec.strict and (not report.ok or (report.unexpected and not head)):
        raise SpecErrors(
            [
                SpecError(
                    "E413",
                    "the source does not fit the spec: " + report.describe().split(": ", 1)[1],
                    _span(spec.source_span or spec.span),
                    path=model.source,
                    hint="make the backbone follow the source's layer order, or write 'partial' in "
                    "the transfer section to load what fits",
                )
            ]
        )
    adapter.load(report.values)
    state = TransferState(net, adapter, model, report)
    state.freeze()
    if log:
        log(report.describe())
    return state


def _match(adapter, model: Model) -> LoadReport:
    spec = model.transfer
    span = _span(spec.source_span or spec.span)
    need_top = any(n.kind == "dense" for n in backbone(model))
    try:
        weights = read(resolve(spec.source, span, model.source, need_top), span)
    except SpecError as err:
        raise SpecErrors([err.located(model.source)]) from None
    return match(adapter.targets(parameterised(backbone(model))), weights, spec.source)


def _adapter(net, model: Model, backend: str | None):
    backend = backend or backend_of(net)
    return TorchAdapter(net, model) if backend == "torch" else KerasAdapter(net, model)


@dataclass
class TransferState:
    """What prepare did, and the trainer's hooks: param_groups, epoch_end."""

    net: object
    adapter: object
    model: Model
    report: LoadReport | None
    unfrozen: bool = False
    handles: list = field(default_factory=list)

    def freeze(self) -> None:
        if self.adapter is not None:
            self.adapter.freeze(
                [n for n in self.model.nodes if n.frozen], self.model.transfer.freeze.bn_inference
            )

    def summary(self) -> dict | None:
        """For result.json: the source, the load report, what the freeze left trainable."""
        if self.report is None:
            return None
        spec = self.model.transfer
        return {
            "source": spec.source,
            "loaded": self.report.describe(),
            **self.report.to_dict(),
            "freeze": spec.freeze.mode,
            "frozen_layers": sum(n.frozen for n in self.model.nodes),
            "trainable_params": self.model.trainable,
            "non_trainable_params": self.model.non_trainable,
        }

    def epoch_end(self, epoch: int) -> bool:
        """After `epoch` (1-based) epochs: unfreeze everything at unfreeze_at. True when
        something changed, so that a Keras trainer recompiles."""
        spec = self.model.transfer
        k = spec.freeze.unfreeze_at if spec else None
        if self.adapter is None or self.unfrozen or k is None or epoch < k:
            return False
        self.adapter.unfreeze()
        self.unfrozen = True
        return True

    def backbone_lr_scale(self, lr: float) -> float | None:
        """backbone_lr / lr, or None when the spec sets no backbone_lr."""
        spec = self.model.transfer
        if spec is None or spec.freeze.backbone_lr is None:
            return None
        return spec.freeze.backbone_lr / lr

    def backbone_variables(self) -> list:
        """Keras: the variables of the layers that came from the source."""
        if self.adapter is None:
            return []
        return self.adapter.variables(backbone(self.model))

    def param_groups(self, lr: float) -> list[dict]:
        """torch optimizer groups: the backbone at backbone_lr, the head at lr. Frozen
        parameters are included (they get no gradient, so optimizers skip them) so that
        unfreeze_at needs no new optimizer. `lr_scale` lets a schedule keep the ratio."""
        if self.adapter is None:
            return [{"params": list(self.net.parameters())}]
        return self.adapter.param_groups(
            lr, self.model.transfer.freeze.backbone_lr if self.model.transfer else None
        )


class TorchAdapter:
    def __init__(self, net, model: Model):
        from ..backends.torch import module_paths

        self.net, self.model = net, model
        self.hooks: list = []
        # node name -> module path: the torch backend nests dotted names and makes each part
        # a Python identifier, so 'layer1.0.conv1' may live at 'layer1.n0.conv1'.
        self.paths = module_paths(getattr(net, "spec", model))

    def _module(self, name: str):
        try:
            return self.net.get_submodule(self.paths.get(name, name))
        except AttributeError:
            return None

    def _tensors(self, name: str) -> dict:
        module = self._module(name)
        if module is None:
            return {}
        return {
            k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")
        }

    def targets(self, nodes) -> list[Target]:
        return targets(
            self.model,
            nodes,
            lambda n: {k: tuple(v.shape) for k, v in self._tensors(n.name).items()},
            lambda name: (self.paths.get(name, name),),
        )

    def load(self, values: dict) -> None:
        import torch

        state = self.net.state_dict()
        for node, tensors in values.items():
            prefix = self.paths.get(node, node) + "."
            for role, value in tensors.items():
                key = prefix + role
                state[key] = torch.from_numpy(value.copy()).to(state[key].dtype)
        self.net.load_state_dict(state)

    def _params(self, nodes):
        seen = set()
        for n in nodes:
            module = self._module(n.name)
            for p in module.parameters() if module is not None else ():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def freeze(self, nodes, bn_inference: bool) -> None:
        from torch import nn

        for p in self._params(nodes):
            p.requires_grad_(False)
        if not bn_inference:
            return
        for n in nodes:
            module = self._module(n.name)
            for m in module.modules() if module is not None else ():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    # train() would switch it back to batch statistics on every epoch;
                    # the hook puts it in inference mode before each forward.
                    self.hooks.append(m.register_forward_pre_hook(_inference_mode))
                    m.eval()

    def unfreeze(self) -> None:
        for p in self.net.parameters():
            p.requires_grad_(True)
        for h in self.hooks:
            h.remove()
        self.hooks = []

    def param_groups(self, lr: float, backbone_lr: float | None) -> list[dict]:
        if backbone_lr is None:
            return [{"params": list(self.net.parameters())}]
        back = {id(p) for p in self._params(backbone(self.model))}
        base = [p for p in self.net.parameters() if id(p) in back]
        rest = [p for p in self.net.parameters() if id(p) not in back]
        return [
            {"params": base, "lr": backbone_lr, "lr_scale": backbone_lr / lr},
            {"params": rest, "lr": lr, "lr_scale": 1.0},
        ]


def _inference_mode(module, args):
    module.training = False


class KerasAdapter:
    def __init__(self, net, model: Model):
        from ..backends.keras import keras_name

        self.net, self.model = net, model
        self.keras_name = keras_name
        self.frozen: list = []

    def _layer(self, name: str):
        try:
            return self.net.get_layer(self.keras_name(name))
        except ValueError:
            return None

    def _layout(self, node, v):
        return keras_tensor(node.kind, _keras_var(v), len(v.shape), node.layer)

    def targets(self, nodes) -> list[Target]:
        def shapes(n):
            layer = self._layer(n.name)
            return {
                (t := self._layout(n, v)).torch: torch_shape(t, tuple(v.shape))
                for v in (layer.weights if layer is not None else ())
            }

        return targets(self.model, nodes, shapes, lambda name: (self.keras_name(name),))

    def load(self, values: dict) -> None:
        for name, tensors in values.items():
            node, layer = self.model.node(name), self._layer(name)
            for v in layer.weights:
                t = self._layout(node, v)
                if t.torch in tensors:
                    v.assign(to_keras(t, tensors[t.torch]).astype(v.dtype))

    def freeze(self, nodes, bn_inference: bool) -> None:
        import keras

        for n in nodes:
            layer = self._layer(n.name)
            if layer is None:
                continue
            if isinstance(layer, keras.layers.BatchNormalization) and not bn_inference:
                # Keras runs a non-trainable BN in inference mode; bn=train keeps the layer
                # trainable (batch statistics, updated moving averages) and fixes gamma, beta.
                for v in layer.trainable_weights:
                    v.trainable = False
            else:
                layer.trainable = False
            self.frozen.append(layer)

    def unfreeze(self) -> None:
        for layer in self.frozen:
            layer.trainable = True
            for v in layer.weights:
                if _keras_var(v) in ("gamma", "beta"):
                    v.trainable = True
        self.frozen = []

    def variables(self, nodes) -> list:
        out = []
        for n in nodes:
            layer = self._layer(n.name)
            out.extend(layer.weights if layer is not None else ())
        return out

    def param_groups(self, lr: float, backbone_lr: float | None) -> list[dict]:
        raise NotImplementedError(
            "param_groups is for torch optimizers; the Keras trainer "
            "uses backbone_variables and backbone_lr_scale"
        )


def _keras_var(v) -> str:
    return v.name.rsplit("/", 1)[-1].split(":")[0]
