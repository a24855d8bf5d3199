"""Training with PyTorch: the network from cnnspec.backends.torch, one batch at a time.

The model lives on one device (cnnspec.train.devices: cpu, cuda, mps). Each numpy batch
becomes tensors there once (images NCHW); losses are computed in float32 even under
mixed precision (float16 autocast + GradScaler on CUDA, bfloat16 autocast on CPU).
Outputs stay on the device: TorchMeter keeps classification counts there and copies only
the other roles' outputs to numpy, for the shared metric code. Heads trained with
cross-entropy get logits (plan.py strips their final softmax/sigmoid) and use
F.cross_entropy / binary_cross_entropy_with_logits, the numerically stable forms. Weights
are saved with safetensors; optimizer (and loss-scaler) state with torch.save (tensors and
numbers only) and read back with weights_only=True.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from ..ir import Model
from .dense import targets_of, with_targets
from .devices import amp_policy, process_group_backend
from .driver import Comm
from .metrics import Meter
from .plan import CE_LOSSES, Head, TrainingPlan, logits_model, weighted_losses

EPS = 1e-6


class TorchComm(Comm):
    """Sums over the processes of a torchrun group: gloo on CPU, NCCL on CUDA (whose
    collectives take CUDA tensors only, so the sums travel through the device)."""

    def __init__(self, device="cpu"):
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(process_group_backend(device))
        self.dist, self.device = dist, torch.device(device)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def sum(self, values: dict) -> dict:
        keys = sorted(values)
        arrays = [np.atleast_1d(np.asarray(values[k], dtype=np.float64)) for k in keys]
        flat = torch.from_numpy(np.concatenate(arrays) if arrays else np.zeros(0))
        flat = flat.to(self.device)
        self.dist.all_reduce(flat)
        flat = flat.cpu()
        out, at = {}, 0
        for k, a in zip(keys, arrays):
            part = flat[at : at + a.size].numpy()
            at += a.size
            out[k] = part.reshape(np.shape(values[k])) if np.ndim(values[k]) else float(part[0])
        return out

    def barrier(self) -> None:
        self.dist.barrier()


def make_optimizer(params, spec):
    o = spec.optimizer
    eps = o.eps if o.eps is not None else 1e-7  # Keras' default, so both backends agree
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    if o.name == "adam":
        return torch.optim.Adam(
            params, lr=o.lr, betas=(o.beta1, o.beta2), eps=eps, weight_decay=o.weight_decay
        )
    if o.name == "adamw":
        return torch.optim.AdamW(
            params, lr=o.lr, betas=(o.beta1, o.beta2), eps=eps, weight_decay=o.weight_decay
        )
    return torch.optim.RMSprop(
        params, lr=o.lr, alpha=o.rho, eps=eps, momentum=o.momentum, weight_decay=o.weight_decay
    )


class TorchBackend:
    name = "torch"
    weights_suffix = ".safetensors"
    normalize: dict | None = None  # the input normalisation the weights files carry

    def __init__(
        self,
        model: Model,
        plan: TrainingPlan,
        seed: int = 0,
        comm: Comm | None = None,
        device="cpu",
    ):
        from ..backends.torch import build

        self.plan, self.seed = plan, seed
        self.comm = comm or Comm()
        self.device = torch.device(device)
        torch.manual_seed(seed)
        from ..transfer import prepare

        built = logits_model(model, plan)
        self.model = model  # the spec's: its fingerprint marks the weights files
        self.net = build(built)
        if plan.dense:
            from .dense_torch import start_at_prior

            start_at_prior(self.net, built, plan)
        # the spec's transfer section: load the source, freeze (a no-op without one)
        self.transfer = prepare(self.net, built, "torch")
        self.net.to(self.device)  # in place: the parameters stay the objects prepare saw
        self.module = self._wrap()
        self.opt = make_optimizer(
            self.transfer.param_groups(plan.compile.optimizer.lr), plan.compile
        )
        self.amp = plan.compile.mixed_precision
        dtype, scaled = amp_policy(self.device.type)
        self.amp_dtype = getattr(torch, dtype)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp and scaled else None
        # on a GPU, per-batch losses stay tensors (no sync); on CPU a float costs nothing
        self._sync_losses = self.device.type == "cpu"
        self._loaders: dict = {}

    def _wrap(self):
        """The network as the processes train it: DDP over the group when there are several
        (device_ids: the one GPU this process drives), else the network itself."""
        if self.comm.world == 1:
            return self.net
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.net, device_ids=ids)

    # --- the driver's interface ------------------------------------------------------------
    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # transfer's backbone_lr

    def end_epoch(self, epoch: int) -> None:
        """After `epoch` epochs: transfer's unfreeze_at (the optimizer already holds every
        parameter; frozen ones just had no gradient). DDP reduces the gradients of the
        parameters that were trainable when it wrapped the network, so it wraps it again."""
        if self.transfer.epoch_end(epoch) and self.comm.world > 1:
            self.module = self._wrap()

    def start_epoch(self, epoch: int) -> None:
        # Dropout draws from a stream fixed by (seed, epoch): a resumed run repeats it.
        torch.manual_seed(self.seed * 1_000_003 + epoch)

    def train_step(self, batch: dict):
        if not self.net.training:  # module.train() walks every submodule: once, not per batch
            self.module.train()
        tensors = self.tensors(with_targets(self.plan, batch))
        outs = self._forward(self.module, tensors["x"])
        losses = self.losses(outs, tensors)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            losses["loss"].backward()
            self.opt.step()
        else:  # scale the loss, unscale the gradients, skip steps with inf/nan, adapt
            self.scaler.scale(losses["loss"]).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        return self._report(losses), self._activated(outs, ranking=True)

    @torch.no_grad()
    def start_eval(self) -> None:
        """Under DDP, every process takes rank 0's buffers (BN running statistics) before a
        held-out pass. DDP broadcasts them before each training forward, but that forward's
        own batch then updates each process's copy; rank 0's are the ones its checkpoint
        saves, so the pass scores what `cnnspec evaluate` of that checkpoint will load."""
        if self.comm.world > 1:
            for buffer in self.net.buffers():
                self.comm.dist.broadcast(buffer, 0)

    @torch.no_grad()
    def eval_step(self, batch: dict):
        if self.net.training:
            self.net.eval()
        tensors = self.tensors(with_targets(self.plan, batch))
        outs = self._forward(self.net, tensors["x"])
        return self._report(self.losses(outs, tensors)), self._activated(outs, ranking=True)

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        if self.net.training:
            self.net.eval()
        outs = self._activated(self._forward(self.net, self.tensors({"x": x})["x"]))
        return [o.cpu().numpy() for o in outs]

    def batches(
        self,
        samples,
        batch_size: int,
        *,
        train: bool,
        seed: int,
        epoch: int,
        ops=None,
        workers: int | None = None,
    ):
        """This rank's batches of one epoch: a DataLoader (cnnspec.data.torch_loader) kept
        per data set, so that its worker processes persist from epoch to epoch."""
        from ..data.torch_loader import set_epoch, torch_loader

        key = (id(samples), train, batch_size, repr(ops), workers)
        if key not in self._loaders:  # the samples stay referenced, so the id stays theirs
            self._loaders[key] = (
                samples,
                torch_loader(
                    samples,
                    batch_size,
                    train=train,
                    seed=seed,
                    ops=ops,
                    workers=workers,
                    rank=self.comm.rank,
                    world=self.comm.world,
                    pin_memory=self.device.type == "cuda",
                ),
            )
        loader = self._loaders[key][1]
        set_epoch(loader, epoch)
        return loader

    def meter(self, plan: TrainingPlan) -> Meter:
        """The driver's running metrics for this backend's outputs (tensors on the device)."""
        return TorchMeter(plan)

    # --- forward, losses -------------------------------------------------------------------
    def tensors(self, batch: dict) -> dict[str, torch.Tensor]:
        """The numpy batch as tensors on the device, images NCHW (the network's layout).
        On CPU from_numpy shares the arrays' memory: nothing is copied; a batch the loader
        pinned (CUDA) arrives as tensors and is copied without blocking."""
        out = {}
        for key, value in batch.items():
            if key != "index":
                tensor = (
                    value
                    if isinstance(value, torch.Tensor)
                    else torch.from_numpy(np.ascontiguousarray(value))
                )
                out[key] = tensor.to(self.device, non_blocking=tensor.is_pinned())
        # contiguous: the same NCHW memory layout (and conv kernels) whatever C is
        out["x"] = out["x"].permute(0, 3, 1, 2).contiguous()
        return out

    def _forward(self, module, x: torch.Tensor) -> list[torch.Tensor]:
        if self.amp:
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                out = module(x)
        else:
            out = module(x)
        if isinstance(out, dict):
            out = [out[h.output] for h in self.plan.heads]
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        return [o.float() for o in outs]  # losses in float32, also under autocast

    def losses(self, outs, batch) -> dict[str, torch.Tensor]:
        return weighted_losses(self.plan, outs, batch, LOSSES)

    def _report(self, losses: dict) -> dict:
        """The batch's losses for the driver's sums: floats on CPU, detached tensors on an
        accelerator (the driver adds them up there and reads them once per epoch)."""
        if self._sync_losses:
            return {k: float(v.detach()) for k, v in losses.items()}
        return {k: v.detach() for k, v in losses.items()}

    def _activated(self, outs, ranking: bool = False) -> list[torch.Tensor]:
        """The heads' outputs with their activation, NHWC, still on the device. ranking:
        for TorchMeter, which reads only the order of a class or mask head's K > 1 scores
        (argmax, top-5), the same for logits as for their softmax: the softmax is skipped."""
        result = []
        for head, out in zip(self.plan.heads, outs):
            out = out.detach()
            if ranking and head.role in RANKED and head.units > 1:
                pass
            elif _logit_head(head):
                out = (
                    torch.sigmoid(out)
                    if head.units == 1 or head.activation == "sigmoid"
                    else torch.softmax(out, 1)
                )
            if out.dim() == 4:
                out = out.permute(0, 2, 3, 1)
            result.append(out)
        return result

    # --- checkpoints -----------------------------------------------------------------------
    def save(self, prefix: str) -> list[str]:
        from safetensors.torch import save_file

        from ..weights import normalization
        from ..weights.fingerprint import metadata
        from .checkpoint import atomic_path

        weights, optim = prefix + ".safetensors", prefix + ".optim.pt"
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        state = {"optimizer": self.opt.state_dict()}
        if self.scaler is not None:  # the loss scale a resumed run continues from
            state["scaler"] = self.scaler.state_dict()
        notes = metadata(self.model) | normalization.entry(self.normalize)
        atomic_path(weights, lambda tmp: save_file(tensors, tmp, notes))
        atomic_path(optim, lambda tmp: torch.save(state, tmp))
        return [weights, optim]

    def load(self, files: list[str], optimizer: bool = True) -> None:
        """Weights (.safetensors, or a .pt / .pth state_dict read with weights_only=True) and,
        for a resumed run, the optimizer state (.optim.pt). A file that is missing, cannot be
        read, holds a pickle or belongs to another spec raises WeightsError (a ValueError)."""
        from ..backends.torch.weights import load_weights, read_weights

        for f in files:
            if f.endswith(".optim.pt"):
                if optimizer and os.path.exists(f):
                    self._load_optimizer(f)
                continue
            load_weights(self.net, self.model, read_weights(f, self.model), label=f)

    def _load_optimizer(self, f: str) -> None:
        from ..backends.torch.weights import WeightsError

        try:
            state = torch.load(f, weights_only=True, map_location=self.device)
            if not isinstance(state, dict):
                raise TypeError(f"found {type(state).__name__}, not a dict")
            if "optimizer" not in state:  # written before the scaler was saved too
                state = {"optimizer": state}
            self.opt.load_state_dict(state["optimizer"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except Exception as exc:  # noqa: BLE001 - a pickle payload or a corrupt file: no traceback
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WeightsError(
                f"{f}: cannot read the optimizer state ({first}); it is read "
                "with weights_only=True, so nothing in it ran"
            ) from None


RANKED = ("class", "mask")  # roles whose metrics use only the order of K > 1 scores


class TorchMeter(Meter):
    """The shared Meter, with classification counts added up as tensors where the outputs
    are (a GPU is not made to wait, nor outputs copied, every batch); the other roles'
    outputs go to numpy for the shared code. `state` and `result` read the tensors."""

    def update(self, outputs, batch: dict) -> None:
        for head, out in zip(self.plan.heads, outputs):
            if head.role == "class" and torch.is_tensor(out):
                self._class_counts(out, batch)
            else:
                out = out.cpu().numpy() if torch.is_tensor(out) else np.asarray(out)
                getattr(self, f"_{head.role}")(out, batch)

    def _class_counts(self, prob: torch.Tensor, batch: dict) -> None:
        """Meter._class on the device: the same counts (argmax takes the first of equal
        values, as numpy's; a tie at the 5th place may admit another of the tied classes,
        as numpy's argpartition may). `prob`: probabilities, or for K > 1 the logits,
        whose order is theirs."""
        y = torch.from_numpy(batch["y"]).to(prob.device)
        if prob.shape[-1] == 1:  # one sigmoid unit: yes/no
            hits = ((prob[:, 0] > 0.5).long() == y).sum()
            self._count("correct", hits)
            self._count("top5", hits)
        else:
            self._count("correct", (prob.argmax(-1) == y).sum())
            if "top5" in self.names:
                top = prob.topk(min(5, prob.shape[-1]), dim=-1).indices
                self._count("top5", (top == y[:, None]).any(1).sum())
        self._add("n", len(y))

    def _count(self, key: str, value: torch.Tensor) -> None:
        self.sums[key] = value if key not in self.sums else self.sums[key] + value

    def state(self) -> dict:
        self.sums = {k: float(v) if torch.is_tensor(v) else v for k, v in self.sums.items()}
        return dict(self.sums)

    def result(self) -> dict[str, float]:
        self.state()
        return super().result()


def _logit_head(head: Head) -> bool:
    """Outputs are logits when plan stripped the activation, or a CE head had none."""
    return head.logits or (head.activation is None and bool(set(head.losses) & CE_LOSSES))


# --- losses by head role (mean over the batch; batch: TorchBackend.tensors) ------------
def _class_loss(name, head, out, batch):
    """Labels are class indices, or mixup/cutmix's soft (N, K) rows, which every class loss
    takes as its target: categorical and sparse cross-entropy alike become the soft
    cross-entropy -sum(t log p) (F.cross_entropy with class probabilities), binary
    cross-entropy scores each unit against its share; a one-unit head reads column 1."""
    y, present = batch["y"], batch["present"]
    soft = y.dim() == 2
    masked = head.role == "class" and "boxes" in batch  # a detector's: only where present
    if not masked and head.units > 1 and name != "binary_crossentropy" and _logit_head(head):
        return F.cross_entropy(out, y)  # the fused mean: one graph node, not two
    if head.units == 1 or name == "binary_crossentropy":
        if soft:
            target = y[:, 1:] if head.units == 1 else y
        else:
            target = y.float()[:, None] if head.units == 1 else F.one_hot(y, head.units).float()
        per = _bce(head, out, target).flatten(1).mean(1)
    elif _logit_head(head):
        per = F.cross_entropy(out, y, reduction="none")
    elif soft:
        per = -(y * torch.log(out.clamp_min(EPS))).sum(1)
    else:
        per = F.nll_loss(torch.log(out.clamp_min(EPS)), y, reduction="none")
    if masked:
        return (per * present).sum() / present.sum().clamp_min(1)
    return per.mean()


def _bce(head, out, target):
    if _logit_head(head):
        return F.binary_cross_entropy_with_logits(out, target, reduction="none")
    return F.binary_cross_entropy(out.clamp(EPS, 1 - EPS), target, reduction="none")


def _mask_loss(name, head, out, batch):
    masks = batch["masks"]
    if head.units == 1:
        prob = torch.sigmoid(out) if _logit_head(head) else out
        target = masks[:, None].float()
        bce = _bce(head, out, target).mean()
        dice = 1 - _dice(prob, target)
    else:
        prob = torch.softmax(out, 1) if _logit_head(head) else out
        target = F.one_hot(masks, head.units).permute(0, 3, 1, 2).float()
        bce = (
            F.cross_entropy(out, masks)
            if _logit_head(head)
            else F.nll_loss(torch.log(prob.clamp_min(EPS)), masks)
        )
        dice = 1 - _dice(prob[:, 1:], target[:, 1:])
    if name == "dice":
        return dice
    if name == "ce_dice":
        return bce + dice
    return bce


def _dice(prob, target):
    """Soft Dice per channel over the batch, then the mean (V-Net, Milletari et al. 2016)."""
    inter = (prob * target).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + target.sum((0, 2, 3))
    return ((2 * inter + 1.0) / (denom + 1.0)).mean()


def _present_loss(name, head, out, batch):
    target = batch["present"][:, None]
    return _bce(head, out, target).mean()


def _box_loss(name, head, out, batch):
    present, boxes = batch["present"], batch["boxes"]
    n = present.sum().clamp_min(1)
    if name == "iou":
        per = 1 - box_iou(out, boxes)
    elif name == "mse":
        per = ((out - boxes) ** 2).mean(1)
    elif name == "mae":
        per = (out - boxes).abs().mean(1)
    else:  # smooth_l1 (Huber with beta 1, as torch's SmoothL1Loss and Fast R-CNN)
        per = F.smooth_l1_loss(out, boxes, reduction="none").mean(1)
    return (per * present).sum() / n


def box_iou(a, b):
    ix = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    iy = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    return inter / (area_a + area_b - inter).clamp_min(EPS)


def _image_loss(name, head, out, batch):
    x = batch["x"]  # NCHW already (TorchBackend.tensors)
    if name == "binary_crossentropy":
        return _bce(head, out, x).mean()
    if name == "mae":
        return (out - x).abs().mean()
    return ((out - x) ** 2).mean()


def _dense_loss(name, head, out, batch):
    """A dense detection head's GIoU, classification (`name`: focal or bce) and extra
    terms (train/dense_torch.py) against the batch's Targets (train/dense.with_targets)."""
    from .dense_torch import DenseLoss

    key = (head.info, name, str(out.device))
    if key not in _DENSE:
        _DENSE[key] = DenseLoss(head.info, out.device, name)
    if out.dim() == 4:  # one level as a plain conv output, NCHW: the layout is NHWC's
        out = out.permute(0, 2, 3, 1)
    return _DENSE[key](out.reshape(len(out), -1, head.info.columns), targets_of(head, batch))


_DENSE: dict = {}  # DenseLoss per head: its priors are made once

LOSSES = {
    "dense": _dense_loss,
    "class": _class_loss,
    "mask": _mask_loss,
    "present": _present_loss,
    "box": _box_loss,
    "image": _image_loss,
}
