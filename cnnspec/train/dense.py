"""What trains a dense detection head, framework-free: the choice of its losses.

The formulas live in dense_torch (torchvision.ops) and dense_keras (keras.ops), term by
term the same; this module holds what both read, so neither backend imports the other.
"""

from __future__ import annotations

from cnnspec.detection.priors import HeadInfo

CLASS_LOSSES = ("focal", "bce")


def class_loss_of(head: HeadInfo, name: str | None = None) -> str:
    """The classification loss: `name`, or focal without objectness (RetinaNet, FCOS) and
    BCE on the foreground with it (YOLO: objectness already says where objects are)."""
    chosen = name or ("bce" if head.extra == "objectness" else "focal")
    if chosen not in CLASS_LOSSES:
        raise ValueError(f"unknown classification loss {chosen!r}; use one of focal, bce")
    if head.activation == "softmax":
        raise ValueError(
            f"head {head.output}: training softmax heads (SSD's hard negative mining) is not "
            "supported yet; declare the head's classes with sigmoid scores"
        )
    return chosen
