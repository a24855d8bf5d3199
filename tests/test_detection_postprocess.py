"""Decoding equals torchvision's box coders; class-aware NMS gives the same kept boxes with
torchvision.ops.batched_nms and tf.image.combined_non_max_suppression, also after the top-k
candidates (per level or per class) of reading.candidates."""

import math

import numpy as np
import pytest
import torch
import torchvision  # noqa: F401  (before TensorFlow: the other order segfaults here)
from torchvision.models.detection._utils import BoxCoder, BoxLinearCoder

from cnnspec.detection.postprocess import decode_distances, decode_offsets, select


def random_batch(seed, batch=3, n=400, classes=5, extent=120.0):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, extent, (batch, n, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(4, 40, (batch, n, 2))], axis=-1)
    # Cubed uniform scores: most candidates are weak, as a trained head's are.
    scores = rng.uniform(0, 1, (batch, n, classes)) ** 3
    return boxes.astype(np.float32), scores.astype(np.float32)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_decode_offsets_equals_torchvision_box_coder(weights):
    rng = np.random.default_rng(3)
    corner = rng.uniform(0, 200, (64, 2))
    anchors = np.concatenate([corner, corner + rng.uniform(8, 64, (64, 2))], axis=1)
    deltas = rng.normal(0, 1.5, (64, 4))
    deltas[0, 2] = 50.0  # beyond the clip: exp would overflow without it
    theirs = BoxCoder(weights).decode_single(torch.from_numpy(deltas), torch.from_numpy(anchors))
    np.testing.assert_allclose(decode_offsets(anchors, deltas, weights), theirs.numpy(), rtol=1e-10)


def test_decode_distances_equals_torchvision_linear_coder():
    # torchvision's FCOS: distances in units of the anchor size, from the anchor's centre.
    rng = np.random.default_rng(4)
    centres, sizes = rng.uniform(0, 200, (64, 2)), rng.choice([8.0, 16.0, 32.0], (64, 1))
    anchors = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    distances = rng.uniform(0, 5, (64, 4))
    theirs = BoxLinearCoder(normalize_by_size=True).decode(
        torch.from_numpy(distances), torch.from_numpy(anchors)
    )
    np.testing.assert_allclose(
        decode_distances(centres, distances, sizes[:, 0]), theirs.numpy(), rtol=1e-10
    )


@pytest.mark.parametrize(
    "seed, iou, score, most",
    [
        (0, 0.5, 0.05, 100),
        (1, 0.3, 0.2, 1000),  # more room than survivors: every kept box is compared
        (2, 0.7, 0.01, 10),  # the cut at max_detections
    ],
)
def test_torch_and_keras_keep_the_same_boxes(seed, iou, score, most):
    boxes, scores = random_batch(seed)
    torch_kept = select(
        boxes,
        scores,
        framework="torch",
        iou_threshold=iou,
        score_threshold=score,
        max_detections=most,
    )
    keras_kept = select(
        boxes,
        scores,
        framework="keras",
        iou_threshold=iou,
        score_threshold=score,
        max_detections=most,
    )
    for ours, theirs in zip(torch_kept, keras_kept):
        assert 0 < len(ours.boxes) <= most
        np.testing.assert_array_equal(ours.boxes, theirs.boxes)
        np.testing.assert_array_equal(ours.classes, theirs.classes)
        np.testing.assert_array_equal(ours.scores, theirs.scores)
        assert (ours.scores > score).all() and (np.diff(ours.scores) <= 0).all()


def test_suppression_is_within_a_class_only():
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 11, 10]]], np.float32)
    scores = np.array([[[0.9, 0.0], [0.0, 0.8], [0.7, 0.0]]], np.float32)
    for framework in ("torch", "keras"):
        kept = select(boxes, scores, framework=framework)[0]
        # The third box overlaps the first (IoU 0.82, same class) and goes; the second is
        # the same box as the first but of the other class, and stays.
        assert kept.classes.tolist() == [0, 1]
        assert kept.scores.tolist() == pytest.approx([0.9, 0.8])


def test_bad_arguments_are_refused():
    boxes, scores = random_batch(0, batch=1, n=4)
    with pytest.raises(ValueError, match="unknown framework 'jax'"):
        select(boxes, scores, framework="jax")
    with pytest.raises(ValueError, match="boxes \\(B, N, 4\\)"):
        select(boxes[0], scores, framework="torch")
    with pytest.raises(ValueError, match="max_detections"):
        select(boxes, scores, framework="torch", max_detections=0)
    assert math.isclose(decode_offsets([[0, 0, 2, 2]], [[0, 0, 0, 0]])[0, 2], 2.0)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_an_image_with_no_candidate_keeps_nothing(framework):
    boxes, scores = random_batch(5, batch=2, n=8)
    scores[1] = 0.0  # the second image has nothing above the threshold
    kept = select(boxes, scores, framework=framework, score_threshold=0.5)
    assert len(kept[0].boxes) > 0
    assert kept[1].boxes.shape == (0, 4) and kept[1].scores.shape == (0,)


def _head(activation: str, classes: int = 4):
    from cnnspec.detection.priors import Geometry, HeadInfo

    geometry = Geometry(strides=(8, 16), shapes=((12, 12), (6, 6)), offset=0.5)
    return HeadInfo("head", classes, geometry, activation=activation)


def test_candidates_cut_per_level_for_sigmoid_heads_and_per_class_for_softmax_heads():
    from cnnspec.detection.reading import Settings, candidates

    head = _head("sigmoid", classes=2)
    scores = np.zeros((1, 180, 2), np.float32)
    scores[0, :2] = [[0.9, 0.8], [0.7, 0.6]]  # level 0: four pairs
    scores[0, 144] = [0.5, 0.4]  # level 1: two pairs
    kept = candidates(head, scores, Settings(score_threshold=0.45, top_k=3))
    np.testing.assert_allclose(kept[0, :2], [[0.9, 0.8], [0.7, 0.0]])  # the best 3
    np.testing.assert_allclose(kept[0, 144], [0.5, 0.0])  # 0.4: under the threshold
    # softmax: the best k priors of each class, whatever their level
    kept = candidates(_head("softmax", 3), scores, Settings(score_threshold=0.0, top_k=1))
    np.testing.assert_allclose(kept[0, :2], [[0.9, 0.8], [0.0, 0.0]])
    assert kept.sum() == pytest.approx(1.7)
    with pytest.raises(ValueError, match="top_k=0"):
        Settings(top_k=0)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_torch_and_keras_detect_the_same_under_top_k(activation):
    from dataclasses import replace

    from cnnspec.detection.reading import Settings, detect

    head = _head(activation)
    rng = np.random.default_rng(7)
    raw = rng.normal(0, 1, (2, head.geometry.count, head.columns)).astype(np.float32)
    raw[..., :4] = rng.uniform(0, 3, raw[..., :4].shape)  # distances of 0 to 3 strides
    settings = Settings(score_threshold=0.3, iou_threshold=0.5, max_detections=500, top_k=20)
    found = {
        framework: detect(head, raw, framework=framework, settings=settings, image_size=(96, 96))
        for framework in ("torch", "keras")
    }
    every = detect(head, raw, framework="torch", settings=replace(settings, top_k=None))
    for ours, theirs, all_kept in zip(found["torch"], found["keras"], every):
        assert 0 < len(ours.scores) < len(all_kept.scores)  # the top-k cut some
        np.testing.assert_array_equal(ours.classes, theirs.classes)
        np.testing.assert_allclose(ours.scores, theirs.scores)
        np.testing.assert_allclose(ours.boxes, theirs.boxes)
