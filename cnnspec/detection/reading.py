"""Reading a dense head's raw output (batch, P, 4 + C + E): boxes, scores, detections.

The layout is the one of cnnspec.detection.priors, so this is the same numpy for both
backends; only the suppression calls the framework's kernel (postprocess.select).
    decode    xyxy boxes in input pixels (postprocess.decode_offsets on the anchors, or
              decode_distances from the points scaled by their stride; a negative
              distance counts as 0, as FCOS' ReLU and the training losses make it) and per-class
              scores: the class sigmoids, times the objectness sigmoid (YOLO), or the
              geometric mean with the centre-ness sigmoid (torchvision's FCOS); a softmax
              head's background column 0 is dropped (SSD)
    detect    decode, clip to the image, then class-aware NMS under `Settings`
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnspec.detection.boxes import clip
from cnnspec.detection.objects import Detections
from cnnspec.detection.postprocess import decode_distances, decode_offsets, select
from cnnspec.detection.priors import HeadInfo, anchor_boxes, points, strides


@dataclass(frozen=True)
class Settings:
    """What inference keeps: candidates scoring above `score_threshold`, suppression of
    same-class boxes overlapping more than `iou_threshold`, at most `max_detections` per
    image (torchvision's RetinaNet/FCOS defaults 0.05, 0.5 and 100 are COCO's)."""

    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_detections: int = 100

    def __post_init__(self) -> None:
        for name in ("score_threshold", "iou_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]. Received: {name}={value}")
        if int(self.max_detections) < 1:
            raise ValueError(
                f"max_detections must be at least 1. Received: max_detections={self.max_detections}"
            )


def check_output(head: HeadInfo, raw) -> np.ndarray:
    """The output as a float32 (B, P, 4 + C + E) array, or a ValueError naming both shapes."""
    out = np.asarray(raw, dtype=np.float32)
    expected = (head.geometry.count, head.columns)
    if out.ndim != 3 or out.shape[1:] != expected:
        raise ValueError(
            f"head {head.output}: expected an output of shape (batch, {expected[0]}, "
            f"{expected[1]}) (priors, 4 + {head.classes} classes"
            f"{'' if head.extra == 'none' else ' + ' + head.extra}), got {out.shape}"
        )
    return out


def decode(head: HeadInfo, raw) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (B, P, 4) xyxy input pixels, scores (B, P, C') in [0, 1]) of a raw output;
    C' is C, or C - 1 for a softmax head (its background column dropped)."""
    out = check_output(head, raw)
    batch, count = out.shape[:2]
    deltas = out[..., :4].reshape(-1, 4)
    if head.coder == "offsets":
        anchors = np.tile(anchor_boxes(head.geometry), (batch, 1))
        boxes = decode_offsets(anchors, deltas, head.coder_weights)
    else:
        boxes = decode_distances(
            np.tile(points(head.geometry), (batch, 1)),
            np.maximum(deltas, 0),  # below 0 counts as 0, as in training (dense_torch)
            np.tile(strides(head.geometry), batch),
        )
    return boxes.reshape(batch, count, 4).astype(np.float32), scores_of(head, out)


def scores_of(head: HeadInfo, out: np.ndarray) -> np.ndarray:
    logits = out[..., 4 : 4 + head.classes].astype(np.float64)
    if head.activation == "softmax":
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return (shifted / shifted.sum(-1, keepdims=True))[..., 1:].astype(np.float32)
    scores = _sigmoid(logits)
    if head.extra == "objectness":
        scores = scores * _sigmoid(out[..., -1:].astype(np.float64))
    elif head.extra == "centerness":
        scores = np.sqrt(scores * _sigmoid(out[..., -1:].astype(np.float64)))
    return scores.astype(np.float32)


def detect(
    head: HeadInfo,
    raw,
    *,
    framework: str,
    settings: Settings = Settings(),
    image_size: tuple[int, int] | None = None,
) -> list[Detections]:
    """The detections kept per image: decode, clip to the (height, width) image when it is
    given, and class-aware NMS with the framework's kernel (postprocess.select)."""
    boxes, scores = decode(head, raw)
    if image_size is not None:
        height, width = image_size
        boxes = clip(boxes.reshape(-1, 4), width, height).reshape(boxes.shape).astype(np.float32)
    return select(
        boxes,
        scores,
        framework=framework,
        iou_threshold=settings.iou_threshold,
        score_threshold=settings.score_threshold,
        max_detections=settings.max_detections,
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # the two-sided form never overflows exp()
    return np.where(
        x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x)))
    )
