"""From a dense head's raw outputs to the detections kept per image.

Decoding (numpy, shared by both backends):
    decode_offsets    anchor-based heads (Faster R-CNN, RetinaNet, SSD): centre offsets in
                      anchor sizes and log size ratios, torchvision's BoxCoder formula
    decode_distances  anchor-free heads (FCOS, YOLOv8): distances from a point to the four
                      sides, in units of a per-point scale (the stride, or the anchor size)
Selection (`select`): class-aware non-maximum suppression with the framework's own kernel,
torchvision.ops.batched_nms for torch and tf.image.combined_non_max_suppression for Keras
(TensorFlow); each framework is imported only when a call names it.
"""

from __future__ import annotations

import math

import numpy as np

from cnnspec.detection.boxes import as_boxes
from cnnspec.detection.objects import Detections

FRAMEWORKS = ("torch", "keras")

# torchvision's bbox_xform_clip: exp() of a larger log-ratio would overflow float32 for
# boxes a thousand times their anchor.
LOG_RATIO_CLIP = math.log(1000.0 / 16)


def decode_offsets(anchors, deltas, weights=(1.0, 1.0, 1.0, 1.0), clip=LOG_RATIO_CLIP):
    """xyxy boxes from anchor-relative (dx, dy, dw, dh), as R-CNN (Girshick et al., 2014)
    parametrises them: centre = anchor centre + d * anchor size / weight, size = anchor size
    * exp(dw / weight), with dw and dh clipped at `clip`.

    >>> decode_offsets([[0, 0, 10, 20]], [[0.1, 0.0, 0.0, math.log(2)]]).round(3).tolist()
    [[1.0, -10.0, 11.0, 30.0]]
    """
    a = as_boxes(anchors)
    d = np.asarray(deltas, dtype=np.float64).reshape(-1, 4) / np.asarray(weights, np.float64)
    width, height = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    cx, cy = a[:, 0] + 0.5 * width, a[:, 1] + 0.5 * height
    new_cx, new_cy = cx + d[:, 0] * width, cy + d[:, 1] * height
    half_w = 0.5 * np.exp(np.minimum(d[:, 2], clip)) * width
    half_h = 0.5 * np.exp(np.minimum(d[:, 3], clip)) * height
    return np.stack([new_cx - half_w, new_cy - half_h, new_cx + half_w, new_cy + half_h], axis=1)


def decode_distances(points, distances, scale=1.0):
    """xyxy boxes from (left, top, right, bottom) distances to a point (FCOS, Tian et al.,
    2019; YOLOv8's DFL output once its distribution is reduced to an expectation).

    `scale` multiplies the distances: a number, one value per point (the stride of its
    level), or an (N, 2) array of (x, y) scales (torchvision's FCOS uses the anchor size).

    >>> decode_distances([[16, 16]], [[1, 2, 3, 4]], scale=8).tolist()
    [[8.0, 0.0, 40.0, 48.0]]
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    d = np.asarray(distances, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scale, dtype=np.float64)
    s = np.broadcast_to(s[:, None] if s.ndim == 1 else s, (len(p), 2))
    d = d * np.concatenate([s, s], axis=1)
    return np.stack(
        [p[:, 0] - d[:, 0], p[:, 1] - d[:, 1], p[:, 0] + d[:, 2], p[:, 1] + d[:, 3]], axis=1
    )


def select(
    boxes,
    scores,
    *,
    framework: str,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.05,
    max_detections: int = 100,
) -> list[Detections]:
    """The detections kept for each image of a batch.

    boxes: (B, N, 4) decoded xyxy boxes; scores: (B, N, C) per-class probabilities (after
    the sigmoid or softmax). Every (box, class) pair scoring above `score_threshold` is a
    candidate, so one box may be kept for two classes (RetinaNet's and YOLOv8's rule);
    suppression runs within each class; the best `max_detections` survive.
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; use one of {', '.join(FRAMEWORKS)}")
    b = np.asarray(boxes, dtype=np.float32)
    s = np.asarray(scores, dtype=np.float32)
    if b.ndim != 3 or b.shape[-1] != 4 or s.ndim != 3 or s.shape[:2] != b.shape[:2]:
        raise ValueError(
            f"select needs boxes (B, N, 4) and scores (B, N, C) for the same B and N, "
            f"got boxes {b.shape} and scores {s.shape}"
        )
    if int(max_detections) < 1:
        raise ValueError(f"max_detections must be at least 1, got {max_detections}")
    chosen = _select_torch if framework == "torch" else _select_keras
    return chosen(b, s, float(iou_threshold), float(score_threshold), int(max_detections))


def _select_torch(boxes, scores, iou_threshold, score_threshold, max_detections):
    import torch
    from torchvision.ops import batched_nms

    kept = []
    for image_boxes, image_scores in zip(torch.from_numpy(boxes), torch.from_numpy(scores)):
        where, label = torch.nonzero(image_scores > score_threshold, as_tuple=True)
        candidates, confidence = image_boxes[where], image_scores[where, label]
        # batched_nms returns its survivors by falling score.
        keep = batched_nms(candidates, confidence, label, iou_threshold)[:max_detections]
        kept.append(
            Detections(
                candidates[keep].numpy(),
                confidence[keep].numpy(),
                label[keep].numpy().astype(np.int64),
            )
        )
    return kept


def _select_keras(boxes, scores, iou_threshold, score_threshold, max_detections):
    import tensorflow as tf

    # One box shared by every class (q = 1). The op calls its boxes [y0, x0, y1, x1], but
    # IoU is the same with both axes swapped, so xyxy goes in and comes out unchanged;
    # clip_boxes would clip to [0, 1], meant for normalised coordinates.
    found, confidence, label, count = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],
        scores,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        clip_boxes=False,
    )
    return [
        Detections(
            found[i, :n].numpy(), confidence[i, :n].numpy(), label[i, :n].numpy().astype(np.int64)
        )
        for i, n in enumerate(count.numpy().tolist())
    ]
