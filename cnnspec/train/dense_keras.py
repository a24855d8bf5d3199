"""The losses of a dense detection head in Keras 3, term by term those of dense_torch.

Written with keras.ops on whole (B, P) arrays and masks rather than boolean gathers, so the
step keeps static shapes under tf.function. A background prior's box term is computed on a
fixed unit box against itself (zero loss, zero gradient) rather than masked after the fact:
a degenerate predicted box would otherwise put 0 x NaN into the gradient.
    focal       keras.losses.binary_focal_crossentropy with class balancing (alpha 0.25,
                gamma 2), the formula of torchvision.ops.sigmoid_focal_loss
    BCE         keras.ops.binary_crossentropy(from_logits=True)
    GIoU        Keras has no box loss, so torchvision's generalized_box_iou_loss is written
                out (same eps, same formula)
A softmax head (SSD) has dense_torch's SSD terms:
    smooth L1   keras.losses.huber with delta 1 (the same function as smooth L1 with beta 1)
                on the offsets encoded as torchvision's BoxCoder.encode_single (written
                out, as `decode` is); a background prior encodes its own anchor (zeros)
    hard negatives  keras.ops.sparse_categorical_crossentropy(from_logits=True), the
                negatives ranked per image with two argsorts, as torchvision's SSD ranks them
"""

from __future__ import annotations

import numpy as np

from cnnspec.detection.assign import IGNORED
from cnnspec.detection.postprocess import LOG_RATIO_CLIP
from cnnspec.detection.priors import HeadInfo, anchor_boxes, points, strides
from cnnspec.train.dense import HARD_NEGATIVES, NEGATIVE_RATIO, class_loss_of

GIOU_EPS = 1e-7  # torchvision.ops.generalized_box_iou_loss's


class DenseLoss:
    """The losses of one head (see dense_torch.DenseLoss): targets are Targets' arrays."""

    def __init__(self, head: HeadInfo, classification: str | None = None):
        self.head = head
        self.classification = class_loss_of(head, classification)
        if head.coder == "offsets":
            self.references = anchor_boxes(head.geometry).astype(np.float32)
        else:
            self.points = points(head.geometry).astype(np.float32)
            self.scale = strides(head.geometry).astype(np.float32)

    def encode(self, boxes):
        """(B, P, 4) offsets of xyxy boxes from the anchors: BoxCoder.encode_single."""
        from keras import ops

        a = self.references
        width, height = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        cx, cy = a[:, 0] + 0.5 * width, a[:, 1] + 0.5 * height
        wx, wy, ww, wh = (float(w) for w in self.head.coder_weights)
        box_w, box_h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        box_x, box_y = boxes[..., 0] + 0.5 * box_w, boxes[..., 1] + 0.5 * box_h
        return ops.stack(
            [
                wx * (box_x - cx) / width,
                wy * (box_y - cy) / height,
                ww * ops.log(box_w / width),
                wh * ops.log(box_h / height),
            ],
            -1,
        )

    def decode(self, deltas):
        """(B, P, 4) xyxy boxes from the (B, P, 4) box columns (postprocess' formulas)."""
        from keras import ops

        if self.head.coder == "distances":
            d = ops.maximum(deltas, 0.0) * self.scale[None, :, None]  # as dense_torch
            x, y = self.points[None, :, 0], self.points[None, :, 1]
            return ops.stack([x - d[..., 0], y - d[..., 1], x + d[..., 2], y + d[..., 3]], -1)
        a = self.references
        width, height = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        cx, cy = a[:, 0] + 0.5 * width, a[:, 1] + 0.5 * height
        w = np.asarray(self.head.coder_weights, np.float32)
        d = deltas / w
        centre_x, centre_y = d[..., 0] * width + cx, d[..., 1] * height + cy
        half_w = 0.5 * ops.exp(ops.minimum(d[..., 2], LOG_RATIO_CLIP)) * width
        half_h = 0.5 * ops.exp(ops.minimum(d[..., 3], LOG_RATIO_CLIP)) * height
        return ops.stack(
            [centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], -1
        )

    def __call__(self, out, targets: dict) -> dict:
        import keras
        from keras import ops

        if self.classification == HARD_NEGATIVES:
            return self.ssd(out, targets)
        head = self.head
        matched = ops.convert_to_tensor(targets["matched"])
        fg = ops.cast(matched >= 0, out.dtype)
        valid = ops.cast(matched != IGNORED, out.dtype)
        count = ops.maximum(ops.sum(fg), 1.0)
        logits = out[..., 4 : 4 + head.classes]
        classes = ops.maximum(ops.convert_to_tensor(targets["classes"]), 0)
        onehot = ops.one_hot(classes, head.classes, dtype=out.dtype) * fg[..., None]
        if self.classification == "focal":
            per = keras.losses.binary_focal_crossentropy(
                onehot,
                logits,
                apply_class_balancing=True,
                alpha=0.25,
                gamma=2.0,
                from_logits=True,
            )  # the mean over classes
            cls = ops.sum(per * head.classes * valid)
        else:
            bce = ops.binary_crossentropy(onehot, logits, from_logits=True)
            cls = ops.sum(ops.sum(bce, -1) * fg)
        unit = ops.convert_to_tensor(np.array([0.0, 0.0, 1.0, 1.0], np.float32))
        chosen = fg[..., None] > 0
        predicted = ops.where(chosen, self.decode(out[..., :4]), unit)
        truth = ops.where(chosen, ops.convert_to_tensor(targets["boxes"], out.dtype), unit)
        box = ops.sum(giou_loss(predicted, truth) * fg)
        losses = {"loss_box": box / count, "loss_cls": cls / count}
        if head.extra == "centerness":
            centre = ops.convert_to_tensor(targets["centerness"], out.dtype)
            bce = ops.binary_crossentropy(centre, out[..., -1], from_logits=True)
            losses["loss_extra"] = ops.sum(bce * fg) / count
        elif head.extra == "objectness":
            bce = ops.binary_crossentropy(fg, out[..., -1], from_logits=True)
            losses["loss_extra"] = ops.sum(bce * valid) / count
        total = None
        for value in losses.values():
            total = value if total is None else total + value
        return {"loss": total, **losses}

    def ssd(self, out, targets: dict) -> dict:
        """SSD's smooth L1 and hard-negative cross-entropy (dense_torch.DenseLoss.ssd)."""
        import keras
        from keras import ops

        matched = ops.convert_to_tensor(targets["matched"])
        fg = ops.cast(matched >= 0, out.dtype)
        count = ops.maximum(ops.sum(fg), 1.0)
        chosen = fg[..., None] > 0
        truth = ops.where(
            chosen, ops.convert_to_tensor(targets["boxes"], out.dtype), self.references
        )
        # huber is the mean over the 4 offsets; smooth L1 sums them
        per = keras.losses.huber(self.encode(truth), out[..., :4], delta=1.0) * 4.0
        box = ops.sum(per * fg)
        classes = ops.convert_to_tensor(targets["classes"])
        labels = ops.where(matched >= 0, classes + 1, ops.zeros_like(classes))
        logits = out[..., 4 : 4 + self.head.classes]
        ce = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        hard = ops.cast(hard_negatives(ops.stop_gradient(ce), fg), out.dtype)
        cls = ops.sum(ce * fg) + ops.sum(ce * hard)
        losses = {"loss_box": box / count, "loss_cls": cls / count}
        return {"loss": losses["loss_box"] + losses["loss_cls"], **losses}


def hard_negatives(loss, fg):
    """(B, P) bool: the negatives SSD trains on (dense_torch.hard_negatives): the rank of
    each prior by descending loss, positives last, below 3 x the image's positives."""
    from keras import ops

    ranked = ops.argsort(ops.where(fg > 0, np.inf, -loss), axis=-1)  # descending loss
    rank = ops.argsort(ranked, axis=-1)
    return ops.cast(rank, fg.dtype) < NEGATIVE_RATIO * ops.sum(fg, axis=-1, keepdims=True)


def giou_loss(a, b):
    """1 - GIoU of xyxy boxes, element by element: torchvision.ops.generalized_box_iou_loss
    (Rezatofighi et al., 2019) with reduction "none"."""
    from keras import ops

    x0, y0, x1, y1 = (a[..., i] for i in range(4))
    u0, v0, u1, v1 = (b[..., i] for i in range(4))
    iw, ih = ops.minimum(x1, u1) - ops.maximum(x0, u0), ops.minimum(y1, v1) - ops.maximum(y0, v0)
    inter = ops.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = (x1 - x0) * (y1 - y0) + (u1 - u0) * (v1 - v0) - inter
    iou = inter / (union + GIOU_EPS)
    enclose = (ops.maximum(x1, u1) - ops.minimum(x0, u0)) * (
        ops.maximum(y1, v1) - ops.minimum(y0, v0)
    )
    return 1 - (iou - (enclose - union) / (enclose + GIOU_EPS))


def start_at_prior(net, plan) -> None:
    """Set each dense head's class and objectness biases to PRIOR_BIAS (train/dense.py), as
    the torch backend does (dense_torch.start_at_prior); loaded weights replace them."""
    from ..backends.keras_plan import keras_name
    from .dense import PRIOR_BIAS, prior_biased

    for head in plan.heads:
        if head.role != "dense":
            continue
        layer = net.get_layer(keras_name(head.info.output))
        for part in prior_biased(head.info):
            for branch in layer.branches:
                for _tower, predictors in branch:
                    for predictor in predictors:
                        if predictor.name.startswith(part) and predictor.bias is not None:
                            predictor.bias.assign(np.full(predictor.bias.shape, PRIOR_BIAS))
