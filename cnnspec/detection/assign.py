"""Which ground-truth object each prior of a dense head learns: target assignment, in numpy.

Both backends train from the same targets, so assignment runs here, once per batch, on
padded arrays (no loop over boxes or priors): a batch's objects arrive as `boxes` (B, K, 4)
xyxy pixels and `classes` (B, K), padded with class -1 (pad_objects). The result, Targets,
holds per prior the index of its object (or BACKGROUND / IGNORED), that object's box and
class, and FCOS' centre-ness target.

    assign_centres   anchor-free heads (coder "distances"): FCOS' centre sampling, as
                     torchvision's FCOS.compute_loss does it (Tian et al., 2019/2020): a point
                     is positive for a box that holds it, within `radius` strides of the
                     box's centre, whose largest side distance falls in the point's level
                     range (4 to 8 strides; no lower bound on the first level, no upper on the
                     last); of several such boxes the smallest wins
    match_anchors    anchor heads (coder "offsets"): IoU matching with torchvision's Matcher
                     semantics (RetinaNet, Lin et al., 2017): IoU >= high positive, < low
                     background, between ignored, and each object's best anchors kept
                     (allow_low_quality_matches)
    match_default_boxes  softmax anchor heads (SSD, Liu et al., 2016): torchvision's
                     SSDMatcher: IoU >= threshold positive, the rest background (no ignored
                     band), and each object's best prior forced to it
    assign           the rule the head calls for: its coder, and for anchors its scores
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from cnnspec.detection.boxes import as_boxes
from cnnspec.detection.priors import HeadInfo, anchor_boxes, points, strides

BACKGROUND = -1
IGNORED = -2  # between the thresholds of match_anchors: neither positive nor negative

# torchvision's FCOS defaults: centre_sampling_radius 1.5; level ranges 4 and 8 anchor sizes.
RADIUS = 1.5
RANGE = (4.0, 8.0)


class Targets(NamedTuple):
    """Per prior of each image of a batch (P priors, in the head's output order).

    matched     (B, P) int64: the object's index in the padded batch, BACKGROUND or IGNORED
    boxes       (B, P, 4) float32 xyxy pixels of the matched object (zeros elsewhere)
    classes     (B, P) int64: the matched object's class, else BACKGROUND or IGNORED
    centerness  (B, P) float32: FCOS' sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)) of the
                prior's point in its object (0 elsewhere)
    """

    matched: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    centerness: np.ndarray

    @property
    def foreground(self) -> np.ndarray:
        return self.matched >= 0


def pad_objects(
    per_image: Sequence[tuple], limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (B, K, 4) float32, classes (B, K) int64) from one (boxes, classes) pair per
    image, padded with zero boxes of class -1 to K = the most objects of an image (or
    `limit`, which must hold them all: a batch never drops an object silently).

    >>> b, c = pad_objects([([[0, 0, 4, 4]], [2]), ([], [])])
    >>> b.shape, c.tolist()
    ((2, 1, 4), [[2], [-1]])
    """
    counts = [len(np.asarray(classes).reshape(-1)) for _, classes in per_image]
    k = max(counts, default=0) if limit is None else int(limit)
    if counts and max(counts) > k:
        raise ValueError(f"an image holds {max(counts)} objects, more than the limit {k}")
    boxes = np.zeros((len(per_image), k, 4), np.float32)
    classes = np.full((len(per_image), k), BACKGROUND, np.int64)
    for i, ((image_boxes, image_classes), n) in enumerate(zip(per_image, counts)):
        boxes[i, :n] = as_boxes(image_boxes)
        classes[i, :n] = np.asarray(image_classes, np.int64).reshape(-1)
    return boxes, classes


def assign(head: HeadInfo, boxes, classes, **options) -> Targets:
    """Targets for `head` by the rule it calls for (see the module docstring)."""
    if head.coder == "offsets" and head.activation == "softmax":
        return match_default_boxes(head, boxes, classes, **options)
    if head.coder == "offsets":
        return match_anchors(head, boxes, classes, **options)
    return assign_centres(head, boxes, classes, **options)


def assign_centres(
    head: HeadInfo, boxes, classes, radius: float = RADIUS, ranges: tuple = RANGE
) -> Targets:
    """FCOS' centre sampling (see the module docstring); the "anchor size" torchvision
    scales the radius and the ranges with is the level's stride."""
    boxes, classes = _batch(boxes, classes)
    geometry = head.geometry
    if boxes.shape[1] == 0:  # a batch without objects: all background
        return _gather(boxes, classes, np.full((len(boxes), geometry.count), BACKGROUND))
    centre = points(geometry)  # (P, 2)
    scale = strides(geometry)  # (P,)
    sizes = geometry.level_counts
    lower, upper = scale * ranges[0], scale * ranges[1]
    lower[: sizes[0]] = 0
    upper[len(scale) - sizes[-1] :] = np.inf

    px, py = centre[None, :, None, 0], centre[None, :, None, 1]  # (1, P, 1)
    x0, y0, x1, y1 = (boxes[:, None, :, j] for j in range(4))  # (B, 1, K)
    sides = np.stack([px - x0, py - y0, x1 - px, y1 - py], axis=-1)  # (B, P, K, 4)
    middle = np.stack([(x0 + x1) / 2, (y0 + y1) / 2], axis=-1)  # (B, 1, K, 2)
    near = np.abs(centre[None, :, None, :] - middle).max(-1) < radius * scale[None, :, None]
    reach = sides.max(-1)
    match = (
        near
        & (sides.min(-1) > 0)
        & (reach > lower[None, :, None])
        & (reach < upper[None, :, None])
        & (classes[:, None, :] >= 0)
    )
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # (B, K)
    cost = np.where(match, area[:, None, :], np.inf)
    matched = np.where(match.any(-1), cost.argmin(-1), BACKGROUND)
    targets = _gather(boxes, classes, matched)
    picked = np.take_along_axis(sides, np.maximum(matched, 0)[..., None, None], axis=2)[:, :, 0]
    return targets._replace(centerness=_centerness(picked, matched >= 0))


def _anchor_quality(head: HeadInfo, boxes, classes):
    """(boxes, classes, quality): the padded batch and each object's IoU with each anchor,
    (B, K, P), -1 for padding so that it never matches."""
    boxes, classes = _batch(boxes, classes)
    iou = _batched_iou(boxes, anchor_boxes(head.geometry))
    return boxes, classes, np.where((classes >= 0)[:, :, None], iou, -1.0)


def match_anchors(
    head: HeadInfo, boxes, classes, high: float = 0.5, low: float = 0.4, low_quality: bool = True
) -> Targets:
    """IoU matching with torchvision's Matcher semantics (see the module docstring).
    Padded objects never match; an image without objects is all background."""
    if low > high:
        raise ValueError(f"the low IoU threshold {low} is above the high one {high}")
    boxes, classes, quality = _anchor_quality(head, boxes, classes)
    if quality.shape[1] == 0:  # no objects: all background
        return _gather(boxes, classes, np.full(quality.shape[::2], BACKGROUND, np.int64))
    best, matched = quality.max(1), quality.argmax(1)  # (B, P)
    kept = matched.copy()
    matched = np.where(best < low, BACKGROUND, np.where(best < high, IGNORED, matched))
    if low_quality:
        # Matcher.set_low_quality_matches_: every anchor that ties an object's best IoU gets
        # back its own best object (which may be another one), zero IoU included.
        top = quality.max(2, keepdims=True)  # (B, K, 1)
        ties = ((quality == top) & (classes >= 0)[:, :, None]).any(1)  # (B, P)
        matched = np.where(ties, kept, matched)
    return _gather(boxes, classes, matched)


def match_default_boxes(head: HeadInfo, boxes, classes, threshold: float = 0.5) -> Targets:
    """SSD's matching, as torchvision's SSDMatcher(threshold): each prior takes its best
    object if their IoU reaches `threshold`, else the background; then each object takes
    its own best prior, a later object winning a prior two share, as the index assignment
    in SSDMatcher leaves it. Of priors whose IoUs with an object tie exactly, the first is
    its best (torch's max may pick another of them). Padded objects never match."""
    boxes, classes, quality = _anchor_quality(head, boxes, classes)
    if quality.shape[1] == 0:  # no objects: all background
        return _gather(boxes, classes, np.full(quality.shape[::2], BACKGROUND, np.int64))
    matched = np.where(quality.max(1) >= threshold, quality.argmax(1), BACKGROUND)  # (B, P)
    image, obj = np.nonzero(classes >= 0)
    forced = np.full_like(matched, -1)
    # two objects with the same best prior: the later one keeps it, as SSDMatcher's index
    # assignment (torch, in order) leaves it; a plain numpy assignment leaves that order open
    np.maximum.at(forced, (image, quality.argmax(2)[image, obj]), obj)
    matched = np.where(forced >= 0, forced, matched)
    return _gather(boxes, classes, matched)


def _batch(boxes, classes) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(boxes, np.float64)
    c = np.asarray(classes, np.int64)
    if b.ndim != 3 or b.shape[-1] != 4 or c.shape != b.shape[:2]:
        raise ValueError(
            f"assignment needs boxes (B, K, 4) and classes (B, K), got {b.shape} and {c.shape}"
        )
    return b, c


def _batched_iou(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(B, K, P) IoU of each image's objects with the shared anchors."""
    top_left = np.maximum(boxes[:, :, None, :2], anchors[None, None, :, :2])
    bottom_right = np.minimum(boxes[:, :, None, 2:], anchors[None, None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area(boxes)[:, :, None] + area(anchors)[None, None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _gather(boxes: np.ndarray, classes: np.ndarray, matched: np.ndarray) -> Targets:
    index = np.maximum(matched, 0)
    fg = matched >= 0
    if boxes.shape[1]:
        box = np.take_along_axis(boxes, index[..., None], axis=1)
        cls = np.take_along_axis(classes, index, axis=1)
    else:
        box = np.zeros((*matched.shape, 4))
        cls = np.zeros(matched.shape, np.int64)
    return Targets(
        matched=matched.astype(np.int64),
        boxes=np.where(fg[..., None], box, 0).astype(np.float32),
        classes=np.where(fg, cls, matched).astype(np.int64),
        centerness=np.zeros(matched.shape, np.float32),
    )


def _centerness(sides: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """FCOS' centre-ness of each prior's point in its box, from its (l, t, r, b) sides."""
    lr, tb = sides[..., [0, 2]], sides[..., [1, 3]]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.sqrt(lr.min(-1) / lr.max(-1) * (tb.min(-1) / tb.max(-1)))
    return np.where(fg, value, 0.0).astype(np.float32)
