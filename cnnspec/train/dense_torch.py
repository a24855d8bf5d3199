"""The losses of a dense detection head in torch, from numpy targets (detection.assign).

One head output (B, P, 4 + C + E) (cnnspec.detection.priors' layout) and its Targets give
three terms, each summed and divided by the batch's number of foreground priors (at least
1), as torchvision's RetinaNet and FCOS normalise them:
    loss_box    GIoU (torchvision.ops.generalized_box_iou_loss) of the decoded boxes of the
                foreground priors against their objects; boxes decode with torchvision's
                own coders (BoxCoder for anchor offsets, BoxLinearCoder for distances)
    loss_cls    focal loss (torchvision.ops.sigmoid_focal_loss, alpha 0.25, gamma 2) over
                every prior not ignored, for heads without objectness (RetinaNet, FCOS);
                binary cross-entropy over the foreground priors for heads with objectness
                (YOLOv3-v5, YOLOX: the objectness column says whether there is an object)
    loss_extra  centre-ness: BCE against FCOS' centre-ness target on the foreground priors;
                objectness: BCE against 1 on the foreground, 0 on the background
A softmax head (SSD, Liu et al. 2016) has SSD's two terms instead, as torchvision's
SSD.compute_loss writes them, both divided by the batch's foreground priors:
    loss_box    smooth L1 (beta 1) of the box columns against the foreground objects
                encoded on their anchors (torchvision's BoxCoder, the head's box_weights)
    loss_cls    softmax cross-entropy against class + 1 (0: the background) on every
                positive prior and, per image, the NEGATIVE_RATIO (3) times as many
                negatives of the highest loss (hard negative mining)
So an anchor-free head with centre-ness trained by `losses` equals torchvision's
FCOSHead.compute_loss on the same matches, and a softmax head SSD.compute_loss
(tests/test_detection_train.py, tests/test_detection_train_ssd.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder, BoxLinearCoder
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from cnnspec.detection.assign import Targets
from cnnspec.detection.priors import HeadInfo, anchor_boxes, points, strides
from cnnspec.train.dense import HARD_NEGATIVES, NEGATIVE_RATIO, class_loss_of


class Decoder(torch.nn.Module):
    """(B, P, 4) xyxy boxes from a head's (B, P, 4) box columns with torchvision's own
    coders, the formulas of detection.reading.decode; a module, so that ONNX export
    (dense_onnx) carries the priors as constants."""

    def __init__(self, head: HeadInfo, device="cpu"):
        super().__init__()
        self.offsets = head.coder == "offsets"
        if self.offsets:
            references = anchor_boxes(head.geometry)
            self.coder = BoxCoder(weights=head.coder_weights)
        else:
            # BoxLinearCoder(normalize_by_size) scales distances by the reference box's size:
            # a box of one stride around each point gives point -/+ distance x stride.
            half = strides(head.geometry)[:, None] / 2
            centre = points(head.geometry)
            references = np.concatenate([centre - half, centre + half], axis=1)
            self.coder = BoxLinearCoder(normalize_by_size=True)
        self.register_buffer(
            "references", torch.as_tensor(references, dtype=torch.float32, device=device)
        )

    def forward(self, deltas: torch.Tensor) -> torch.Tensor:
        batch = deltas.shape[0]
        if self.offsets:
            flat = self.coder.decode_single(deltas.reshape(-1, 4), self.references.repeat(batch, 1))
            return flat.reshape(batch, -1, 4)
        # a distance below 0 would turn the box inside out, and GIoU rewards inverted boxes
        # (negative union): it counts as 0, as FCOS' ReLU makes it (reading.decode too)
        return self.coder.decode(deltas.clamp_min(0), self.references.expand(batch, -1, -1))


class DenseLoss:
    """The losses of one head, its priors kept on `device` as the coders want them."""

    def __init__(self, head: HeadInfo, device="cpu", classification: str | None = None):
        self.head = head
        self.classification = class_loss_of(head, classification)
        self.decode = Decoder(head, device)

    def __call__(self, out: torch.Tensor, targets: dict) -> dict[str, torch.Tensor]:
        """out: (B, P, 4 + C + E) float; targets: Targets' arrays as tensors (see `tensors`)."""
        if self.classification == HARD_NEGATIVES:
            return self.ssd(out, targets)
        head = self.head
        matched = targets["matched"]
        fg = matched >= 0
        count = fg.sum().clamp_min(1).to(out.dtype)
        logits = out[..., 4 : 4 + head.classes]
        onehot = F.one_hot(targets["classes"].clamp_min(0), head.classes).to(out.dtype)
        onehot = onehot * fg[..., None]
        if self.classification == "focal":
            valid = matched != -2  # IGNORED: between the IoU thresholds
            cls = sigmoid_focal_loss(logits[valid], onehot[valid], reduction="sum")
        else:
            cls = F.binary_cross_entropy_with_logits(logits[fg], onehot[fg], reduction="sum")
        boxes = self.decode(out[..., :4])
        box = generalized_box_iou_loss(boxes[fg], targets["boxes"][fg], reduction="sum")
        losses = {"loss_box": box / count, "loss_cls": cls / count}
        if head.extra == "centerness":
            extra = F.binary_cross_entropy_with_logits(
                out[..., -1][fg], targets["centerness"][fg], reduction="sum"
            )
            losses["loss_extra"] = extra / count
        elif head.extra == "objectness":
            valid = matched != -2
            extra = F.binary_cross_entropy_with_logits(
                out[..., -1][valid], fg[valid].to(out.dtype), reduction="sum"
            )
            losses["loss_extra"] = extra / count
        return {"loss": sum(losses.values()), **losses}

    def ssd(self, out: torch.Tensor, targets: dict) -> dict[str, torch.Tensor]:
        """SSD's smooth L1 and hard-negative cross-entropy (see the module docstring)."""
        fg = targets["matched"] >= 0
        count = fg.sum().clamp_min(1).to(out.dtype)
        anchors = self.decode.references.expand(len(out), -1, -1)[fg]
        encoded = self.decode.coder.encode_single(targets["boxes"][fg], anchors)
        box = F.smooth_l1_loss(out[..., :4][fg], encoded, reduction="sum", beta=1.0)
        labels = torch.where(fg, targets["classes"] + 1, 0)
        logits = out[..., 4 : 4 + self.head.classes]
        ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
        ce = ce.view_as(labels)
        cls = ce[fg].sum() + ce[hard_negatives(ce.detach(), fg)].sum()
        losses = {"loss_box": box / count, "loss_cls": cls / count}
        return {"loss": losses["loss_box"] + losses["loss_cls"], **losses}


def hard_negatives(loss: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """(B, P) the negatives SSD trains on: per image, the NEGATIVE_RATIO x (its positives)
    of the highest `loss`, ranked as torchvision's SSD ranks them (positives last at -inf,
    so an image with too few negatives also counts positives again, as there)."""
    ranked = loss.masked_fill(fg, float("-inf")).argsort(1, descending=True)
    return ranked.argsort(1) < NEGATIVE_RATIO * fg.sum(1, keepdim=True)


def tensors(targets: Targets, device="cpu") -> dict[str, torch.Tensor]:
    """The numpy Targets as tensors on `device` (what DenseLoss reads)."""
    return {
        name: torch.from_numpy(np.ascontiguousarray(value)).to(device)
        for name, value in targets._asdict().items()
    }


def start_at_prior(net, model, plan) -> None:
    """Set each dense head's class and objectness biases to PRIOR_BIAS (train/dense.py), as
    torchvision's RetinaNet initialises its classification head. Weights loaded afterwards
    (resume, transfer) replace them."""
    from ..backends.torch import module_paths
    from .dense import PRIOR_BIAS, prior_biased

    paths = module_paths(model)
    for head in plan.heads:
        if head.role != "dense":
            continue
        module = net.get_submodule(paths.get(head.info.output, head.info.output))
        for part in prior_biased(head.info):
            for bias in _predictor_biases(module, part):
                with torch.no_grad():
                    bias.fill_(PRIOR_BIAS)


def _predictor_biases(module, part: str) -> list:
    """The biases of a detect module's class ("cls") or objectness ("extra") predictors:
    torchvision's names (cls_logits, objectness) when shared, each level's last conv in the
    classification branch's module_list when separate."""
    if part == "extra":
        return [module.get_parameter("regression_head.objectness.bias")]
    branch = module.get_submodule("classification_head")
    if hasattr(branch, "cls_logits"):
        return [branch.cls_logits.bias]
    return [level[-1].bias for level in branch.module_list]
