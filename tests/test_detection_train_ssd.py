"""SSD training (Liu et al., 2016) of softmax anchor heads: the matching against torchvision's
SSDMatcher, the losses against torchvision's SSD.compute_loss on the same head outputs,
anchors and matches (an SSDlite built with weights=None, weights_backbone=None, whose anchors
are the priors of specs/ssdlite320_mobilenet_v3_large.cnn), the located refusals, and
specs/ssd_shapes.cnn trained by `cnnspec train`."""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnspec.detection.assign import BACKGROUND, assign, match_default_boxes, pad_objects
from cnnspec.detection.priors import Geometry, HeadInfo
from cnnspec.train.dense import HARD_NEGATIVES, class_loss_of, object_classes

ROOT = Path(__file__).resolve().parents[1]
SIZE = 320  # SSDlite's
CLASSES = 3  # object classes; the softmax head has one more column, the background


def ssd_head(classes=CLASSES + 1):
    # one level, one 16x16 default box per cell, cells of 16 px on a 32x32 image
    geometry = Geometry(strides=(16,), shapes=((2, 2),), anchors=(((16.0, 16.0),),))
    return HeadInfo("out", classes, geometry, coder="offsets", activation="softmax")


# --- hand-checked ----------------------------------------------------------------------------
def test_default_box_matching_has_no_ignored_band_and_forces_each_objects_best_prior():
    head = ssd_head()
    # anchors centred on the cell corners: [-8, -8, 8, 8], [8, -8, 24, 8], [-8, 8, 8, 24], ...
    boxes, classes = pad_objects([([[-8, -8, 8, 8], [8, 8, 24, 17]], [1, 0])])
    # anchor 3 ([8, 8, 24, 24]) overlaps box 1 by 0.5625: positive at 0.5, background at 0.6
    # where RetinaNet's matcher would ignore it, and forced back as box 1's best prior
    assert match_default_boxes(head, boxes, classes).matched[0].tolist() == [0, -1, -1, 1]
    strict = match_default_boxes(head, boxes, classes, threshold=0.9)
    assert strict.matched[0].tolist() == [0, BACKGROUND, BACKGROUND, 1]
    # a box overlapping nothing well still gets its best prior; of two boxes with the same
    # best prior, the later one keeps it (SSDMatcher's index assignment)
    boxes, classes = pad_objects([([[10, 10, 12, 12], [9, 9, 13, 13]], [2, 0]), ([], [])])
    targets = assign(head, boxes, classes)
    assert targets.matched.tolist() == [[-1, -1, -1, 1], [-1, -1, -1, -1]]
    assert targets.classes[0, 3] == 0 and (targets.boxes[0, 3] == [9, 9, 13, 13]).all()


def test_hard_negatives_are_three_times_the_positives_of_each_image_by_loss():
    torch = pytest.importorskip("torch")
    from cnnspec.train.dense_torch import hard_negatives

    loss = torch.tensor([[5.0, 1.0, 4.0, 3.0, 2.0, 0.5, 9.0, 0.1], [1.0, 2.0, 3.0, 4.0] * 2])
    fg = torch.zeros(2, 8, dtype=torch.bool)
    fg[0, 6] = True  # one positive: the 3 highest negatives 0, 2, 3 (not 6 itself)
    assert hard_negatives(loss, fg).nonzero().tolist() == [[0, 0], [0, 2], [0, 3]]


def test_a_softmax_head_trains_with_hard_negatives_or_says_why_not():
    assert class_loss_of(ssd_head()) == HARD_NEGATIVES and object_classes(ssd_head()) == 3
    free = HeadInfo("out", 4, Geometry((8,), ((4, 4),)), activation="softmax")
    with pytest.raises(ValueError, match="head out: a softmax head trains as SSD does, from"):
        class_loss_of(free)
    with pytest.raises(ValueError, match="Received: classes=1"):
        class_loss_of(ssd_head(classes=1))
    with pytest.raises(ValueError, match="bce classification is for sigmoid scores"):
        class_loss_of(ssd_head(), "bce")


# --- against torchvision's SSD ---------------------------------------------------------------
@functools.cache
def _ssdlite():
    """(torchvision's SSDlite at CLASSES + 1 classes, its anchors, the spec's HeadInfo)."""
    torch = pytest.importorskip("torch")
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.models.detection.image_list import ImageList

    import cnnspec
    from cnnspec.detection.heads import head_infos
    from cnnspec.detection.priors import anchor_boxes

    module = ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=CLASSES + 1
    )
    (info,) = head_infos(cnnspec.compile_file(ROOT / "specs/ssdlite320_mobilenet_v3_large.cnn"))
    info = dataclasses.replace(info, classes=CLASSES + 1)
    # the default boxes depend on the maps' sizes only, not on their values
    maps = [torch.zeros(1, 1, h, w) for h, w in info.geometry.shapes]
    (anchors,) = module.anchor_generator(
        ImageList(torch.zeros(1, 3, SIZE, SIZE), [(SIZE,) * 2]), maps
    )
    np.testing.assert_allclose(anchor_boxes(info.geometry), anchors.numpy(), atol=1e-4)
    return module, anchors, info


def _objects(seed, images=5, most=7):
    rng = np.random.default_rng(seed)
    per_image = []
    for i in range(images):
        n = 0 if i == 1 else int(rng.integers(1, most + 1))  # image 1 has no objects
        # sides of 12 to 200 px, aspect ratios 2/3 to 3/2: a thin box holding several small
        # default boxes whole would tie their IoUs, and torch breaks such ties either way
        side = rng.uniform(12, 160, (n, 1)) * np.exp(rng.uniform(-0.2, 0.2, (n, 2)))
        corner = rng.uniform(0, SIZE - side)
        boxes = np.concatenate([corner, corner + side], 1)
        if n > 1:
            boxes[-1] = boxes[0]  # a twin: two objects with the same best prior
        per_image.append((boxes.astype(np.float32), rng.integers(0, CLASSES, n)))
    return per_image


def _torchvision_targets(torch, per_image):
    return [
        {"boxes": torch.from_numpy(b).reshape(-1, 4), "labels": torch.from_numpy(c + 1)}
        for b, c in per_image
    ]


def test_default_box_matching_equals_torchvisions_ssd_matcher():
    torch = pytest.importorskip("torch")
    from torchvision.ops import box_iou

    from cnnspec.detection.priors import anchor_boxes

    module, _, info = _ssdlite()  # its anchors equal these priors to 1e-4 (float32)
    # in float64 on both sides: two default boxes whose IoUs with an object differ by 1e-7
    # would otherwise be ordered by float32 rounding, not by the rule
    priors = torch.from_numpy(anchor_boxes(info.geometry))
    per_image = _objects(3, images=8)
    ours = assign(info, *pad_objects(per_image))
    for i, (boxes, _) in enumerate(per_image):
        if not len(boxes):  # SSD.forward: an image without objects is all background
            assert (ours.matched[i] == BACKGROUND).all()
            continue
        quality = box_iou(torch.from_numpy(boxes).double(), priors)
        np.testing.assert_array_equal(ours.matched[i], module.proposal_matcher(quality).numpy())
    assert (ours.matched >= 0).sum() > 30


def test_losses_equal_torchvisions_ssd_compute_loss():
    torch = pytest.importorskip("torch")
    from cnnspec.train.dense_torch import DenseLoss, tensors

    module, anchors, info = _ssdlite()
    per_image = _objects(5)
    targets = assign(info, *pad_objects(per_image))
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(len(per_image), info.geometry.count, info.columns, generator=gen)
    out.requires_grad_(True)
    ours = DenseLoss(info)(out, tensors(targets))
    expected = module.compute_loss(
        _torchvision_targets(torch, per_image),
        {"bbox_regression": out[..., :4], "cls_logits": out[..., 4:]},
        [anchors] * len(per_image),
        list(torch.from_numpy(targets.matched)),
    )
    torch.testing.assert_close(ours["loss_box"], expected["bbox_regression"])
    torch.testing.assert_close(ours["loss_cls"], expected["classification"])
    assert set(ours) == {"loss", "loss_box", "loss_cls"}
    (grad,) = torch.autograd.grad(ours["loss"], out)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# --- the plan and the CLI --------------------------------------------------------------------
def test_the_plan_counts_a_softmax_heads_background_apart(tmp_path):
    from cnnspec.compiler import compile_file
    from cnnspec.errors import SpecErrors
    from cnnspec.train.session import index_data

    spec = ROOT / "specs/ssd_shapes.cnn"
    index_data(compile_file(spec), "shapes_multi", options={"n": 4})  # 4 columns, 3 classes
    wrong = tmp_path / "ssd3.cnn"
    wrong.write_text(spec.read_text().replace("classes=4", "classes=3"))
    with pytest.raises(SpecErrors) as caught:
        index_data(compile_file(wrong), "shapes_multi", options={"n": 4})
    (error,) = caught.value.errors
    assert error.code == "E515" and "predicts 2 classes but the data has 3" in error.message
    assert "declare 4 classes in the head (the background included)" in error.hint


TINY = """model tiny_ssd
input 32x32x3
conv 8 3x3 same relu
f = maxpool 4
detect f classes=4 strides=4 scores=softmax sizes=(0.3, 0.6) anchors=ssd offset=0.5 tower=0
compile { epochs 1 }
"""


@pytest.mark.parametrize(
    "old, new, line, says",
    [
        ("", "", None, None),  # as written, the plan is made
        (" sizes=(0.3, 0.6) anchors=ssd", "", 5, "a softmax head trains as SSD does, from anchors"),
        ("classes=4", "classes=1", 5, "Received: classes=1"),
        ("{ epochs", "{ loss binary_crossentropy; epochs", 6, "bce classification is for sigm"),
    ],
)
def test_a_softmax_head_it_cannot_train_is_refused_at_its_line(old, new, line, says, tmp_path):
    from cnnspec.compiler import compile_file
    from cnnspec.errors import SpecErrors
    from cnnspec.train.plan import make_plan

    path = tmp_path / "tiny_ssd.cnn"  # on disk, so errors point at their own line
    path.write_text(TINY.replace(old, new) if old else TINY)
    if line is None:
        assert make_plan(compile_file(path)).heads[0].losses == [HARD_NEGATIVES]
        return
    with pytest.raises(SpecErrors) as caught:
        make_plan(compile_file(path))
    (error,) = caught.value.errors
    assert (error.code, error.span.line) == ("E512", line) and says in error.message


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "cnnspec", *map(str, args)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_the_ssd_spec_checks_summarises_and_trains(tmp_path):
    spec = ROOT / "specs/ssd_shapes.cnn"
    assert ": ok:" in _cli("check", spec)
    summary = _cli("summary", spec)
    assert "3024x8" in summary  # (24x24 + 12x12 + 6x6) cells x 4 default boxes; 4 + 4 columns
    out = tmp_path / "run"
    data = ["--data", "shapes_multi", "--data-option", "n=240"]
    _cli("train", spec, *data, "--epochs", "3", "--out", out, "--progress", "off")
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    losses = [float(r["train_loss"]) for r in rows]
    assert len(rows) == 3 and losses[-1] < 0.85 * losses[0], losses
    assert {"val_map", "train_loss_box", "train_loss_cls"} <= set(rows[0])
