"""The detection zoo against torchvision (issue 17, item 6): specs/retinanet_resnet50_fpn.cnn,
specs/fcos_resnet50_fpn.cnn and specs/ssdlite320_mobilenet_v3_large.cnn have torchvision's
parameter and buffer counts, its state_dict order and shapes, and, loaded with torchvision's
(randomised) weights through cnnspec's loader, give its raw head outputs:
`model.head(model.backbone(x))`'s dict, against the spec's one output split by columns (box,
classes, extra; cnnspec.detection.priors). Their priors are torchvision's anchors, their
boxes decode as its box coders, and RetinaNet's post-processing keeps its detections.
Both sides are built with weights=None, weights_backbone=None."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from random_weights import randomise_torch
from test_zoo import torch_counts

import cnnspec

torch = pytest.importorskip("torch")
detection = pytest.importorskip("torchvision.models.detection")

SPECS = Path(__file__).resolve().parent.parent / "specs"

# spec -> (torchvision builder, its keyword arguments, (trainable, statistics), small input)
ZOO = {
    "retinanet_resnet50_fpn": ("retinanet_resnet50_fpn", {}, (34_068_119, 53_120), 128),
    "fcos_resnet50_fpn": ("fcos_resnet50_fpn", {}, (32_322_720, 53_120), 128),
    "ssdlite320_mobilenet_v3_large": (
        "ssdlite320_mobilenet_v3_large",
        {},
        (3_440_060, 32_944),
        320,
    ),
}


@functools.cache
def _spec(name: str, size: int | None = None) -> cnnspec.Model:
    text = (SPECS / f"{name}.cnn").read_text()
    if size is not None:  # counts do not depend on the input size; the outputs' sizes do
        text = re.sub(r"\ninput \d+x\d+x3", f"\ninput {size}x{size}x3", text)
    return cnnspec.compile_text(text, str(SPECS / f"{name}.cnn"))


@functools.cache
def _torchvision(name: str):
    builder, kwargs, _, _ = ZOO[name]
    return getattr(detection, builder)(weights=None, weights_backbone=None, **kwargs).eval()


def _state(module) -> list[tuple[str, torch.Tensor]]:
    return [
        (key, t)
        for key, t in module.state_dict().items()
        if not key.endswith("num_batches_tracked")
    ]


@pytest.mark.parametrize("name", ZOO)
def test_counts_equal_torchvisions(name):
    model, module = _spec(name), _torchvision(name)
    assert (model.trainable, model.non_trainable) == ZOO[name][2] == torch_counts(module)


@pytest.mark.parametrize("name", ZOO)
def test_state_dict_order_and_shapes_equal_torchvisions(name):
    from cnnspec.backends.torch import build

    net = build(_spec(name, ZOO[name][3]))
    ours, theirs = _state(net), _state(_torchvision(name))
    assert [(k.rsplit(".", 1)[1], tuple(t.shape)) for k, t in ours] == [
        (k.rsplit(".", 1)[1], tuple(t.shape)) for k, t in theirs
    ]
    # the head's module paths are torchvision's (FCOS's tower is one flat Sequential there)
    if name == "retinanet_resnet50_fpn":
        head = [k for k, _ in ours if k.startswith("head.")]
        assert head == [k for k, _ in theirs if k.startswith("head.")]


@pytest.mark.parametrize("name", ZOO)
def test_raw_head_outputs_equal_torchvisions(name):
    from cnnspec.backends.torch import build, load_torchvision_state_dict
    from cnnspec.detection.heads import head_infos

    size = ZOO[name][3]
    module = randomise_torch(_torchvision(name), seed=3)
    model = _spec(name, size)
    net = build(model).eval()
    # cnnspec's own loader: the i-th torchvision module's tensors to the i-th weighted node
    load_torchvision_state_dict(net, model, module.state_dict())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = module.head(list(module.backbone(x).values()))
        got = net(x)
    (info,) = head_infos(model)
    assert got.shape == (2, info.geometry.count, info.columns)
    k = info.classes
    parts = {"bbox_regression": got[..., :4], "cls_logits": got[..., 4 : 4 + k]}
    if info.extra == "centerness":
        parts["bbox_ctrness"] = got[..., 4 + k :]
    assert set(parts) == set(want)
    for key, value in parts.items():
        scale = float(want[key].abs().max())
        assert scale > 1e-3
        torch.testing.assert_close(value, want[key], rtol=1e-5, atol=1e-5 * scale, msg=key)


@pytest.mark.parametrize("name", ZOO)
def test_priors_and_box_decoding_equal_torchvisions(name):
    """The HeadInfo of the spec places its priors where torchvision's anchor generator does,
    and cnnspec.detection.postprocess decodes a box as torchvision's box coder does."""
    import numpy as np
    from torchvision.models.detection.image_list import ImageList

    from cnnspec.detection.heads import head_infos
    from cnnspec.detection.postprocess import decode_distances, decode_offsets
    from cnnspec.detection.priors import anchor_boxes, points, strides

    size = ZOO[name][3]
    module, model = _torchvision(name), _spec(name, size)
    (info,) = head_infos(model)
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        features = list(module.backbone(x).values())
    (anchors,) = module.anchor_generator(ImageList(x, [(size, size)]), features)
    gen = torch.Generator().manual_seed(1)
    if info.coder == "offsets":  # RetinaNet: anchors, R-CNN offsets
        np.testing.assert_allclose(anchor_boxes(info.geometry), anchors.numpy(), atol=1e-4)
        codes = torch.randn(len(anchors), 4, generator=gen)
        got = decode_offsets(anchor_boxes(info.geometry), codes.numpy(), info.coder_weights)
    else:  # FCOS: a point per cell (its anchor's centre), distances in the anchor's size
        np.testing.assert_allclose(
            points(info.geometry), ((anchors[:, :2] + anchors[:, 2:]) / 2).numpy()
        )
        codes = torch.rand(len(anchors), 4, generator=gen) * 4
        got = decode_distances(points(info.geometry), codes.numpy(), strides(info.geometry))
    coder = module.box_coder  # BoxCoder (RetinaNet) or BoxLinearCoder (FCOS)
    decode = getattr(coder, "decode_single", coder.decode)
    want = decode(codes, anchors).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_retinanet_detections_equal_torchvisions_postprocessing():
    """From the same raw outputs, cnnspec's decoding (postprocess.decode_offsets, clipped to
    the image) and class-aware NMS (postprocess.select, torchvision's batched_nms) keep
    torchvision's RetinaNet.postprocess_detections' boxes, scores and labels. The score
    threshold is set where at most 1,000 candidates a level pass it, so torchvision's per-level
    top-k (which cnnspec does not apply) keeps them all."""
    import numpy as np

    from cnnspec.backends.torch import build, load_torchvision_state_dict
    from cnnspec.detection.boxes import clip
    from cnnspec.detection.heads import head_infos
    from cnnspec.detection.postprocess import decode_offsets, select
    from cnnspec.detection.priors import anchor_boxes

    name, size = "retinanet_resnet50_fpn", 128
    module = randomise_torch(_torchvision(name), seed=3)
    model = _spec(name, size)
    net = build(model).eval()
    load_torchvision_state_dict(net, model, module.state_dict())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = net(x)
    (info,) = head_infos(model)
    a = len(info.geometry.anchors[0])
    counts = [h * w * a for h, w in info.geometry.shapes]
    scores = torch.sigmoid(raw[..., 4:])
    # (randomised weights score everything near the prior 0.01: no threshold of 0.05 here)
    threshold = max(
        *(float(level.flatten().kthvalue(level.numel() - 1000).values) for level in
          (s for image in scores for s in image.split(counts)) if level.numel() > 1000),
    )  # fmt: skip
    anchors = torch.from_numpy(anchor_boxes(info.geometry)).float()
    module.score_thresh = threshold
    with torch.no_grad():
        want = module.postprocess_detections(
            {"bbox_regression": list(raw[..., :4].split(counts, 1)),
             "cls_logits": list(raw[..., 4:].split(counts, 1))},
            [list(anchors.split(counts))] * 2,
            [(size, size)] * 2,
        )  # fmt: skip
    for image in range(2):
        boxes = clip(
            decode_offsets(anchors.numpy(), raw[image, :, :4].numpy(), info.coder_weights),
            size,
            size,
        )
        (got,) = select(
            boxes[None],
            scores[image][None].numpy(),
            framework="torch",
            iou_threshold=module.nms_thresh,
            score_threshold=threshold,
            max_detections=module.detections_per_img,
        )
        ref = {k: v.numpy() for k, v in want[image].items()}
        assert len(ref["scores"]) > 10, "too few detections to compare"
        ours, theirs = (
            np.lexsort((got.classes, -got.scores)),
            np.lexsort((ref["labels"], -ref["scores"])),
        )
        np.testing.assert_array_equal(got.classes[ours], ref["labels"][theirs])
        np.testing.assert_allclose(got.scores[ours], ref["scores"][theirs], rtol=1e-5)
        np.testing.assert_allclose(got.boxes[ours], ref["boxes"][theirs], rtol=1e-4, atol=1e-3)
