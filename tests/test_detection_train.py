"""Target assignment and the dense-head losses, against hand-checked cases and against
torchvision's own FCOS and RetinaNet (matching and losses on the same inputs)."""

import types

import numpy as np
import pytest

from cnnspec.detection.assign import (
    BACKGROUND,
    IGNORED,
    assign,
    assign_centres,
    match_anchors,
    pad_objects,
)
from cnnspec.detection.priors import Geometry, HeadInfo, anchor_sizes


def free_head(classes=3, extra="centerness", strides=(8, 16, 32), size=(64, 64), offset=0.0):
    shapes = tuple((size[0] // s, size[1] // s) for s in strides)
    return HeadInfo("out", classes, Geometry(strides, shapes, offset=offset), extra=extra)


def anchor_head(classes=3, size=(64, 64)):
    sizes = ((16, 24), (32, 48))
    geometry = Geometry(
        strides=(8, 16),
        shapes=tuple((size[0] // s, size[1] // s) for s in (8, 16)),
        anchors=anchor_sizes(sizes, ((0.5, 1.0, 2.0),) * 2),
    )
    return HeadInfo("out", classes, geometry, coder="offsets")


def random_objects(rng, images, size=64, most=6):
    per_image = []
    for _ in range(images):
        n = int(rng.integers(0, most + 1))
        corner = rng.uniform(0, size - 12, (n, 2))
        extent = rng.uniform(6, 40, (n, 2))
        boxes = np.concatenate([corner, np.minimum(corner + extent, size)], 1)
        per_image.append((boxes.round(1), rng.integers(0, 3, n)))
    return per_image


# --- hand-checked ----------------------------------------------------------------------------
def test_a_box_is_learnt_by_the_points_near_its_centre_on_its_level():
    # One level of stride 8 on a 32x32 image: points at 0, 8, 16, 24 (corners, torchvision's).
    head = free_head(classes=2, strides=(8,), size=(32, 32))
    boxes, classes = pad_objects([([[4, 4, 20, 20]], [1])])
    targets = assign_centres(head, boxes, classes, radius=1.0)
    # centre (12, 12): within 8 px on both axes and strictly inside are x, y in {8, 16}
    grid = targets.matched.reshape(4, 4)
    assert np.argwhere(grid == 0).tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]]
    assert set(targets.classes[0].tolist()) == {1, BACKGROUND}
    # point (8, 8): l=4, t=4, r=12, b=12 -> sqrt(4/12 * 4/12) = 1/3
    assert targets.centerness[0, 1 * 4 + 1] == pytest.approx(1 / 3)


def test_the_smaller_box_wins_a_point_two_boxes_share():
    head = free_head(classes=2, strides=(8,), size=(32, 32))
    boxes, classes = pad_objects([([[0, 0, 30, 30], [6, 6, 18, 18]], [0, 1])])
    targets = assign_centres(head, boxes, classes, radius=2.0)
    assert targets.matched[0, 1 * 4 + 1] == 1 and targets.classes[0, 1 * 4 + 1] == 1


def test_a_box_goes_to_the_level_whose_range_holds_it():
    # levels 8 and 16: level 0 takes reaches below 64 px, level 1 from 64 px (4 x 16)
    head = free_head(classes=1, strides=(8, 16), size=(160, 160))
    boxes, classes = pad_objects([([[10, 10, 30, 30]], [0]), ([[0, 0, 150, 150]], [0])])
    targets = assign_centres(head, boxes, classes)
    level0 = 20 * 20
    assert targets.foreground[0, :level0].any() and not targets.foreground[0, level0:].any()
    assert targets.foreground[1, level0:].any() and not targets.foreground[1, :level0].any()


def test_padding_and_images_without_objects_are_background():
    head = free_head()
    boxes, classes = pad_objects([([], []), ([[8, 8, 40, 40]], [2])])
    assert boxes.shape == (2, 1, 4) and classes[0, 0] == -1
    targets = assign(head, boxes, classes)
    assert not targets.foreground[0].any() and targets.foreground[1].any()
    empty = assign(head, *pad_objects([([], []), ([], [])]))
    assert (empty.matched == BACKGROUND).all()
    with pytest.raises(ValueError, match="more than the limit 1"):
        pad_objects([([[0, 0, 4, 4], [1, 1, 5, 5]], [0, 0])], limit=1)


def test_anchor_matching_thresholds():
    # one level, one 16x16 anchor per cell, cells of 16 px on a 32x32 image
    geometry = Geometry(strides=(16,), shapes=((2, 2),), anchors=(((16.0, 16.0),),))
    head = HeadInfo("out", 2, geometry, coder="offsets")
    # anchors are centred on the cell corners: [-8, -8, 8, 8], [8, -8, 24, 8], ...
    boxes, classes = pad_objects([([[-8, -8, 8, 8], [8, 8, 24, 17]], [1, 0])])
    targets = match_anchors(head, boxes, classes, low_quality=False)
    # anchor 0 equals box 0; anchor 3 ([8, 8, 24, 24]) overlaps box 1 by 9/16 = 0.5625
    assert targets.matched[0].tolist() == [0, BACKGROUND, BACKGROUND, 1]
    strict = match_anchors(head, boxes, classes, high=0.6, low=0.5, low_quality=False)
    assert strict.matched[0].tolist() == [0, BACKGROUND, BACKGROUND, IGNORED]
    # allow_low_quality_matches gives box 1 its best anchor back
    assert match_anchors(head, boxes, classes, high=0.6, low=0.5).matched[0, 3] == 1


# --- against torchvision ---------------------------------------------------------------------
def test_centre_sampling_equals_torchvisions_fcos():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOS
    from torchvision.models.detection.image_list import ImageList

    head = free_head(classes=3, strides=(8, 16, 32), size=(128, 128))
    generator = AnchorGenerator(((8,), (16,), (32,)), ((1.0,),) * 3)
    maps = [torch.zeros(1, 1, 128 // s, 128 // s) for s in (8, 16, 32)]
    anchors = generator(ImageList(torch.zeros(1, 3, 128, 128), [(128, 128)]), maps)[0]
    counts = [m.shape[2] * m.shape[3] for m in maps]
    rng = np.random.default_rng(3)
    per_image = random_objects(rng, 6, size=128, most=8)
    captured = []
    fake = types.SimpleNamespace(
        center_sampling_radius=1.5,
        head=types.SimpleNamespace(compute_loss=lambda t, o, a, m: captured.extend(m)),
    )
    targets_tv = [
        {"boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(c)}
        for b, c in per_image
    ]
    FCOS.compute_loss(fake, targets_tv, {}, [anchors] * len(per_image), counts)
    ours = assign(head, *pad_objects(per_image))
    expected = np.stack([m.numpy() for m in captured])
    assert (expected >= 0).sum() > 20  # the case is not all background
    np.testing.assert_array_equal(ours.matched, expected)


def test_anchor_matching_equals_torchvisions_matcher():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection._utils import Matcher
    from torchvision.ops import box_iou

    from cnnspec.detection.priors import anchor_boxes

    head = anchor_head()
    anchors = torch.tensor(anchor_boxes(head.geometry), dtype=torch.float32)
    rng = np.random.default_rng(5)
    per_image = [o for o in random_objects(rng, 8) if len(o[1])]
    ours = match_anchors(head, *pad_objects(per_image))
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)
    for i, (boxes, _) in enumerate(per_image):
        quality = box_iou(torch.tensor(boxes, dtype=torch.float32), anchors)
        np.testing.assert_array_equal(ours.matched[i], matcher(quality).numpy())
    assert (ours.matched == IGNORED).any() and (ours.matched >= 0).any()


def _fcos_outputs(torch, head, batch, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, head.geometry.count, head.columns, generator=generator)


def test_losses_equal_torchvisions_fcos_head():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.fcos import FCOSHead

    from cnnspec.train.dense_torch import DenseLoss, tensors

    head = free_head(classes=3, strides=(8, 16, 32), size=(128, 128))
    rng = np.random.default_rng(7)
    per_image = random_objects(rng, 4, size=128, most=6)
    targets = assign(head, *pad_objects(per_image))
    out = _fcos_outputs(torch, head, 4)
    # positive distances, as FCOS' regression head ends in a ReLU
    out[..., :4] = out[..., :4].abs() * 2
    ours = DenseLoss(head)(out, tensors(targets))

    tv_head = FCOSHead(in_channels=32, num_anchors=1, num_classes=3, num_convs=0)
    # torchvision's FCOS anchors: a box of one stride around each point
    centre = torch.tensor(
        np.concatenate([_points(head) - _half(head), _points(head) + _half(head)], 1),
        dtype=torch.float32,
    )
    expected = tv_head.compute_loss(
        [
            {
                "boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(c),
            }
            for b, c in per_image
        ],
        {
            "cls_logits": out[..., 4:7],
            "bbox_regression": out[..., :4],
            "bbox_ctrness": out[..., 7:],
        },
        [centre] * 4,
        list(torch.from_numpy(targets.matched)),
    )
    torch.testing.assert_close(ours["loss_cls"], expected["classification"])
    torch.testing.assert_close(ours["loss_box"], expected["bbox_regression"])
    torch.testing.assert_close(ours["loss_extra"], expected["bbox_ctrness"])


def _points(head):
    from cnnspec.detection.priors import points

    return points(head.geometry)


def _half(head):
    from cnnspec.detection.priors import strides

    return strides(head.geometry)[:, None] / 2


def test_losses_equal_torchvisions_retinanet_head_with_giou():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.retinanet import RetinaNetHead

    from cnnspec.detection.priors import anchor_boxes
    from cnnspec.train.dense_torch import DenseLoss, tensors

    head = anchor_head()
    anchors = torch.tensor(anchor_boxes(head.geometry), dtype=torch.float32)
    loss = DenseLoss(head)
    tv_head = RetinaNetHead(4, 6, 3)
    tv_head.regression_head._loss_type = "giou"
    rng = np.random.default_rng(11)
    # RetinaNet normalises per image, then averages images: compare one image at a time
    for boxes, classes in [o for o in random_objects(rng, 4) if len(o[1])]:
        targets = match_anchors(head, *pad_objects([(boxes, classes)]))
        out = _fcos_outputs(torch, head, 1, seed=len(boxes)) * 0.3
        ours = loss(out, tensors(targets))
        expected = tv_head.compute_loss(
            [{"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(classes)}],
            {"cls_logits": out[..., 4:], "bbox_regression": out[..., :4]},
            [anchors],
            list(torch.from_numpy(targets.matched)),
        )
        torch.testing.assert_close(ours["loss_cls"], expected["classification"])
        torch.testing.assert_close(ours["loss_box"], expected["bbox_regression"])


def test_detections_equal_torchvisions_fcos_postprocessing():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection._utils import BoxLinearCoder
    from torchvision.models.detection.fcos import FCOS

    from cnnspec.detection.priors import points, strides
    from cnnspec.detection.reading import Settings, detect

    head = free_head(classes=5, strides=(8, 16, 32), size=(128, 128))
    geometry = head.geometry
    raw = np.random.default_rng(4).normal(-3.0, 1.5, (3, geometry.count, head.columns))
    raw = raw.astype(np.float32)
    raw[..., :4] = np.abs(raw[..., :4]) * 3
    settings = Settings(score_threshold=0.2, iou_threshold=0.6, max_detections=30)
    ours = detect(head, raw, framework="torch", settings=settings, image_size=(128, 128))

    half = strides(geometry)[:, None] / 2
    anchors = torch.from_numpy(
        np.concatenate([points(geometry) - half, points(geometry) + half], 1).astype(np.float32)
    )
    counts = [h * w for h, w in geometry.shapes]
    fake = types.SimpleNamespace(
        box_coder=BoxLinearCoder(normalize_by_size=True),
        score_thresh=0.2,
        nms_thresh=0.6,
        detections_per_img=30,
        topk_candidates=10_000,
    )
    t = torch.from_numpy(raw)
    outputs = {
        "cls_logits": list(t[..., 4:9].split(counts, 1)),
        "bbox_regression": list(t[..., :4].split(counts, 1)),
        "bbox_ctrness": list(t[..., 9:].split(counts, 1)),
    }
    theirs = FCOS.postprocess_detections(
        fake, outputs, [list(anchors.split(counts))] * 3, [(128, 128)] * 3
    )
    assert sum(len(d.scores) for d in ours) > 20
    for mine, expected in zip(ours, theirs):
        np.testing.assert_allclose(mine.scores, expected["scores"].numpy(), atol=1e-5)
        np.testing.assert_array_equal(mine.classes, expected["labels"].numpy())
        np.testing.assert_allclose(mine.boxes, expected["boxes"].numpy(), atol=1e-3)
