"""The detection zoo against torchvision (issue 17, item 6): specs/retinanet_resnet50_fpn.cnn,
specs/fcos_resnet50_fpn.cnn and specs/ssdlite320_mobilenet_v3_large.cnn have torchvision's
parameter and buffer counts, its state_dict order and shapes, and, loaded with torchvision's
(randomised) weights through cnnspec's loader, give its raw head outputs:
`model.head(model.backbone(x))`'s dict, against the spec's one output split by columns (box,
classes, extra; cnnspec.detection.priors). Their priors are torchvision's anchors, their
boxes decode as its box coders, and detect() keeps the detections of its post-processing
(RetinaNet, FCOS and SSDlite, at torchvision's default settings).
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


def _lively(module, x, spread: float = 2.0):
    """A copy of `module` (randomised) whose scores spread over the priors as a trained
    head's do, so that thresholds, top-k and NMS all have work and no two scores nearly tie
    (a near tie could go either way between numpy's and torch's last bits).
    - Batch-norm statistics measured on `x` (one pass in training mode): with random ones,
      SSDlite's MobileNetV3 features barely vary across the image (a std of 1e-4 between
      cells), so hundreds of its scores tie to 1e-6.
    - Class (and FCOS' centre-ness) weights scaled so that the logits vary with std `spread`
      over the priors: torchvision starts them at std 0.01 with the class bias at the prior
      0.01, so every RetinaNet score sits near 0.01, under its threshold 0.05, and FCOS'
      under its 0.2.
    The thresholds stay torchvision's defaults."""
    import copy

    module = randomise_torch(copy.deepcopy(module), seed=3)
    for norm in module.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            norm.reset_running_stats()
            norm.momentum = None  # a plain average of the pass
    head = module.head.classification_head
    convs = [head.cls_logits] if hasattr(head, "cls_logits") else [m[-1] for m in head.module_list]
    ctrness = getattr(module.head.regression_head, "bbox_ctrness", None)
    responses: dict = {}

    def record(conv, _, output):  # what the weights add to the bias
        responses.setdefault(conv is ctrness, []).append(output - conv.bias[:, None, None])

    hooks = [conv.register_forward_hook(record) for conv in convs + [ctrness] if conv]
    with torch.no_grad():
        module.train()
        module.head(list(module.backbone(x).values()))
        for conv in convs + [ctrness]:
            if conv:
                std = torch.cat([r.flatten() for r in responses[conv is ctrness]]).std()
                conv.weight.mul_(spread / float(std))
    for hook in hooks:
        hook.remove()
    return module.eval()


def _postprocess(module, raw, info, x):
    """torchvision's own postprocess_detections (its default thresholds, top-k and number of
    detections) on `raw`, cnnspec's (B, P, 4 + C + E) output, with its own anchors."""
    from torchvision.models.detection.image_list import ImageList

    size = x.shape[-2:]
    with torch.no_grad():
        features = list(module.backbone(x).values())
        anchors = module.anchor_generator(ImageList(x, [tuple(size)] * len(x)), features)
        k = info.classes
        outputs = {"bbox_regression": raw[..., :4], "cls_logits": raw[..., 4 : 4 + k]}
        if info.extra == "centerness":
            outputs["bbox_ctrness"] = raw[..., 4 + k :]
        if info.activation == "sigmoid":  # RetinaNet and FCOS take their outputs by level
            counts = [f.shape[2] * f.shape[3] * info.geometry.per_cell(0) for f in features]
            outputs = {key: list(v.split(counts, 1)) for key, v in outputs.items()}
            anchors = [list(a.split(counts)) for a in anchors]
        return module.postprocess_detections(outputs, anchors, [tuple(size)] * len(x))


@pytest.mark.parametrize("name", ZOO)
def test_detections_equal_torchvisions_postprocessing(name):
    """From the same raw outputs, cnnspec's detect() (decoding, clipping, per-level or
    per-class top-k, class-aware NMS) keeps the boxes, scores and labels of torchvision's
    postprocess_detections at torchvision's default settings. SSD's labels count the
    background as 0 there; cnnspec drops that column, so its class c is torchvision's c + 1."""
    import numpy as np

    from cnnspec.backends.torch import build, load_torchvision_state_dict
    from cnnspec.detection.heads import head_infos
    from cnnspec.detection.reading import Settings, candidates, detect, scores_of

    size = ZOO[name][3]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    module = _lively(_torchvision(name), x)
    model = _spec(name, size)
    net = build(model).eval()
    load_torchvision_state_dict(net, model, module.state_dict())
    with torch.no_grad():
        raw = net(x)
    (info,) = head_infos(model)
    want = _postprocess(module, raw, info, x)
    settings = Settings(
        score_threshold=module.score_thresh,
        iou_threshold=module.nms_thresh,
        max_detections=module.detections_per_img,
        top_k=module.topk_candidates,
    )
    got = detect(info, raw.numpy(), framework="torch", settings=settings, image_size=(size, size))
    # the top-k cut some candidates: without it, more would reach NMS
    scores = scores_of(info, raw.numpy())
    everything = Settings(settings.score_threshold, top_k=None)
    cut, whole = ((candidates(info, scores, s) > 0).sum() for s in (settings, everything))
    assert cut < whole, "the top-k kept every candidate: nothing tested"
    offset = 1 if info.activation == "softmax" else 0
    for ours, theirs in zip(got, want):
        ref = {k: v.numpy() for k, v in theirs.items()}
        assert len(ref["scores"]) > 10, "too few detections to compare"
        order, ref_order = (
            np.lexsort((ours.classes, -ours.scores)),
            np.lexsort((ref["labels"], -ref["scores"])),
        )
        np.testing.assert_array_equal(ours.classes[order] + offset, ref["labels"][ref_order])
        np.testing.assert_allclose(ours.scores[order], ref["scores"][ref_order], rtol=1e-5)
        np.testing.assert_allclose(ours.boxes[order], ref["boxes"][ref_order], rtol=1e-4, atol=1e-3)
