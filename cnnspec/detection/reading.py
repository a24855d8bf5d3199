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
from functools import lru_cache

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
    keep = np.ones(out.shape[:2], bool)
    return _boxes(head, out, keep), scores_of(head, out)


def _boxes(head: HeadInfo, out: np.ndarray, keep: np.ndarray, rows=None) -> np.ndarray:
    """(B, N, 4) boxes of the (B, N) priors `rows` (all P when None) whose raw outputs
    `out` holds, decoded where `keep` says (zeros elsewhere)."""
    boxes = np.zeros((*out.shape[:2], 4), np.float32)
    image, column = np.nonzero(keep)
    prior = column if rows is None else rows[image, column]
    if not len(prior):
        return boxes
    deltas = out[keep, :4]
    if head.coder == "offsets":
        found = decode_offsets(_priors(head.geometry)[0][prior], deltas, head.coder_weights)
    else:
        centres, scale = _priors(head.geometry)
        # below 0 counts as 0, as in training (dense_torch)
        found = decode_distances(centres[prior], np.maximum(deltas, 0), scale[prior])
    boxes[keep] = found
    return boxes


@lru_cache(maxsize=16)
def _priors(geometry) -> tuple[np.ndarray, np.ndarray | None]:
    """(anchor boxes, None) or (points, strides) of a geometry, made once per geometry."""
    if geometry.anchors is not None:
        return anchor_boxes(geometry), None
    return points(geometry), strides(geometry)


def scores_of(head: HeadInfo, out: np.ndarray) -> np.ndarray:
    logits = out[..., 4 : 4 + head.classes]
    if head.activation == "softmax":
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return (shifted / shifted.sum(-1, keepdims=True))[..., 1:].astype(np.float32)
    scores = _sigmoid(logits)
    if head.extra == "objectness":
        scores = scores * _sigmoid(out[..., -1:])
    elif head.extra == "centerness":
        scores = np.sqrt(scores * _sigmoid(out[..., -1:]))
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
    out = check_output(head, raw)
    scores = scores_of(head, out)
    # Only priors where some class clears the threshold can be kept: gather those (per image,
    # padded with zero scores to the most any image has) before decoding and suppression,
    # as torchvision's post-processing filters before it decodes.
    keep = scores.max(-1, initial=0.0) > settings.score_threshold
    rows = np.argsort(~keep, axis=1, kind="stable")[:, : max(1, int(keep.sum(1).max()))]
    kept = np.take_along_axis(keep, rows, axis=1)
    out = np.take_along_axis(out, rows[..., None], axis=1)
    scores = np.take_along_axis(scores, rows[..., None], axis=1) * kept[..., None]
    boxes = _boxes(head, out, kept, rows)
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
    # 1 / (1 + exp(-x)) written with tanh, which never overflows
    return 0.5 * (1.0 + np.tanh(0.5 * x))
