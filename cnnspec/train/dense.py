"""What trains a dense detection head, framework-free: the choice of its losses.

The formulas live in dense_torch (torchvision.ops) and dense_keras (keras.ops), term by
term the same; this module holds what both read, so neither backend imports the other.
"""

from __future__ import annotations

import math

import numpy as np

from cnnspec.detection.assign import assign
from cnnspec.detection.priors import HeadInfo

CLASS_LOSSES = ("focal", "bce")
# SSD's classification (Liu et al., 2016, section 2.2, "Hard negative mining"): softmax
# cross-entropy over the background and the classes, on every positive prior and the
# NEGATIVE_RATIO times as many highest-loss negatives of each image; torchvision's SSD keeps
# (1 - positive_fraction) / positive_fraction = 3 of them (positive_fraction 0.25).
HARD_NEGATIVES = "hard_negatives"
NEGATIVE_RATIO = 3.0


class UntrainableHead(ValueError):
    """A head that no loss trains as declared: its `detect` line is at fault, not the loss."""


def class_loss_of(head: HeadInfo, name: str | None = None) -> str:
    """The classification loss: `name`, or focal without objectness (RetinaNet, FCOS) and
    BCE on the foreground with it (YOLO: objectness already says where objects are); a
    softmax head (SSD) always trains with cross-entropy over hard negatives."""
    if head.activation == "softmax":
        return _softmax_loss(head, name)
    chosen = name or ("bce" if head.extra == "objectness" else "focal")
    if chosen not in CLASS_LOSSES:
        raise ValueError(f"unknown classification loss {chosen!r}; use one of focal, bce")
    return chosen


def _softmax_loss(head: HeadInfo, name: str | None) -> str:
    if head.coder != "offsets":
        raise UntrainableHead(
            f"head {head.output}: a softmax head trains as SSD does, from anchors; give it "
            "anchors (sizes=..., anchors=ssd) or declare sigmoid scores"
        )
    if head.classes < 2:
        raise UntrainableHead(
            f"head {head.output}: a softmax head's classes count the background (class 0) "
            f"and at least one object class. Received: classes={head.classes}"
        )
    if name not in (None, HARD_NEGATIVES):
        raise ValueError(
            f"head {head.output}: {name} classification is for sigmoid scores; a softmax "
            "head trains with SSD's cross-entropy over hard negatives (leave the loss out)"
        )
    return HARD_NEGATIVES


def object_classes(head: HeadInfo) -> int:
    """The object classes a head tells apart: its class columns, less the background
    column 0 of a softmax head (SSD's layout; decoding drops that column)."""
    return head.classes - (head.activation == "softmax")


# RetinaNet's prior (Lin et al., 2017, section 4.1): class logits, and YOLO's objectness,
# start at sigmoid = 0.01, so the thousands of background priors do not swamp the first steps.
PRIOR_PROBABILITY = 0.01
PRIOR_BIAS = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)


def prior_biased(head: HeadInfo) -> tuple[str, ...]:
    """The predictors of a head whose bias starts at PRIOR_BIAS: its class logits (sigmoid
    heads) and objectness; centre-ness is a regression target and starts at 0 (FCOS)."""
    return ("cls",) * (head.activation == "sigmoid") + ("extra",) * (head.extra == "objectness")


FIELDS = ("matched", "boxes", "classes", "centerness")  # detection.assign.Targets


def target_key(head_output: str, field: str) -> str:
    """The batch key of one Targets field of the head on `head_output`."""
    return f"targets_{head_output}_{field}"


def with_targets(plan, batch: dict) -> dict:
    """The batch with each dense head's Targets added (numpy, before the step, so both
    backends train from the same assignment): objects in input pixels, crowd regions
    left out of assignment as torchvision's and detectron2's COCO loaders leave them."""
    if not plan.dense or "object_boxes" not in batch:
        return batch
    height, width = np.shape(batch["x"])[1:3]
    scale = np.array([width, height, width, height], np.float32)
    boxes = np.asarray(batch["object_boxes"], np.float32) * scale
    classes = np.where(np.asarray(batch["object_crowd"]), -1, np.asarray(batch["object_classes"]))
    out = dict(batch)
    for head in plan.heads:
        targets = assign(head.info, boxes, classes)
        for field in FIELDS:
            out[target_key(head.output, field)] = getattr(targets, field)
    return out


def targets_of(head, batch: dict) -> dict:
    """The Targets fields of `head` from a batch made by with_targets."""
    return {field: batch[target_key(head.output, field)] for field in FIELDS}
