"""Torch and Keras agree on a dense head: the same losses from the same outputs and
targets, and the same decoded, NMS-filtered detections from the same weights."""

import numpy as np
import pytest

from cnnspec.detection.assign import assign, pad_objects
from cnnspec.detection.priors import Geometry, HeadInfo, anchor_sizes
from cnnspec.detection.reading import Settings, detect

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")  # before TensorFlow: the other order segfaults here
keras = pytest.importorskip("keras")

from cnnspec.train import dense_keras, dense_torch

SIZE = 64
STRIDES = (8, 16)


def heads():
    shapes = tuple((SIZE // s, SIZE // s) for s in STRIDES)
    free = Geometry(STRIDES, shapes, offset=0.5)
    anchored = Geometry(STRIDES, shapes, anchors=anchor_sizes(((16,), (32,)), ((0.5, 1.0),) * 2))
    return {
        "fcos": HeadInfo("out", 3, free, extra="centerness"),
        "yolo": HeadInfo("out", 3, free, extra="objectness"),
        "retina": HeadInfo("out", 3, anchored, coder="offsets", coder_weights=(1, 1, 1, 1)),
        # SSD: softmax over the background (class 0) and 3 classes, torchvision's SSD weights
        "ssd": HeadInfo(
            "out", 4, anchored, coder="offsets", coder_weights=(10, 10, 5, 5), activation="softmax"
        ),
    }


def objects(seed, images=4):
    rng = np.random.default_rng(seed)
    per_image = []
    for _ in range(images):
        n = int(rng.integers(0, 5))
        corner = rng.uniform(0, SIZE - 10, (n, 2))
        boxes = np.concatenate([corner, np.minimum(corner + rng.uniform(6, 40, (n, 2)), SIZE)], 1)
        per_image.append((boxes, rng.integers(0, 3, n)))
    return per_image


@pytest.mark.parametrize("kind", ["fcos", "yolo", "retina", "ssd"])
def test_torch_and_keras_losses_agree(kind):
    head = heads()[kind]
    targets = assign(head, *pad_objects(objects(1)))
    assert targets.foreground.any()
    out = np.random.default_rng(2).normal(0, 1, (4, head.geometry.count, head.columns))
    out = out.astype(np.float32)
    if head.coder == "distances":
        out[..., :4] = np.abs(out[..., :4]) * 2
    ours = dense_torch.DenseLoss(head)(torch.from_numpy(out), dense_torch.tensors(targets))
    theirs = dense_keras.DenseLoss(head)(keras.ops.convert_to_tensor(out), targets._asdict())
    assert set(ours) == set(theirs)
    assert float(ours["loss_box"]) > 0 and float(ours["loss_cls"]) > 0
    for name in ours:
        np.testing.assert_allclose(
            float(keras.ops.convert_to_numpy(theirs[name])), float(ours[name]), rtol=1e-5
        )


@pytest.mark.parametrize("kind", ["fcos", "ssd"])
def test_keras_gradients_stay_finite_with_degenerate_background_boxes(kind):
    import tensorflow as tf

    head = heads()[kind]
    targets = assign(head, *pad_objects(objects(3)))
    out = tf.Variable(np.full((4, head.geometry.count, head.columns), -3.0, np.float32))
    with tf.GradientTape() as tape:
        loss = dense_keras.DenseLoss(head)(out, targets._asdict())["loss"]
    assert np.isfinite(tape.gradient(loss, out).numpy()).all()


class TorchHead(torch.nn.Module):
    """Two levels of 1x1 predictions over stride-8 and stride-16 patches, in the layout
    of cnnspec.detection.priors: (B, P, 4 + C + E), level, row, column, anchor."""

    def __init__(self, columns, per_cell):
        super().__init__()
        self.per_cell = per_cell
        self.levels = torch.nn.ModuleList(
            torch.nn.Conv2d(3, columns * per_cell, s, stride=s) for s in STRIDES
        )

    def forward(self, x):
        outs = []
        for conv in self.levels:
            y = conv(x).permute(0, 2, 3, 1)
            outs.append(y.reshape(len(x), -1, y.shape[-1] // self.per_cell))
        return torch.cat(outs, 1)


def keras_head(columns, per_cell, torch_net):
    inputs = keras.Input((SIZE, SIZE, 3))
    outs = []
    for s, conv in zip(STRIDES, torch_net.levels):
        layer = keras.layers.Conv2D(columns * per_cell, s, strides=s)
        y = layer(inputs)
        layer.set_weights(
            [conv.weight.detach().numpy().transpose(2, 3, 1, 0), conv.bias.detach().numpy()]
        )
        outs.append(keras.layers.Reshape((-1, columns))(y))
    return keras.Model(inputs, keras.layers.Concatenate(axis=1)(outs))


@pytest.mark.parametrize("kind", ["yolo", "retina"])
def test_torch_and_keras_heads_give_the_same_detections(kind):
    head = heads()[kind]
    per_cell = head.geometry.per_cell(0)
    torch.manual_seed(0)
    net = TorchHead(head.columns, per_cell)
    images = np.random.default_rng(4).uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        raw_torch = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    raw_keras = keras.ops.convert_to_numpy(keras_head(head.columns, per_cell, net)(images))
    np.testing.assert_allclose(raw_keras, raw_torch, atol=1e-5)

    settings = Settings(score_threshold=0.2, iou_threshold=0.5, max_detections=20)
    found_torch = detect(
        head, raw_torch, framework="torch", settings=settings, image_size=(SIZE, SIZE)
    )
    found_keras = detect(
        head, raw_keras, framework="keras", settings=settings, image_size=(SIZE, SIZE)
    )
    assert sum(len(d.boxes) for d in found_torch) > 4
    for a, b in zip(found_torch, found_keras):
        np.testing.assert_array_equal(a.classes, b.classes)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_both_backends_start_class_and_objectness_at_the_prior():
    """RetinaNet's prior (sigmoid 0.01) on the class and objectness predictors of a fresh
    head, in torch and in Keras; centre-ness and the box keep their framework start."""
    import torch

    from cnnspec.compiler import compile_text
    from cnnspec.train.keras_backend import KerasBackend
    from cnnspec.train.plan import make_plan
    from cnnspec.train.torch_backend import TorchBackend

    spec = (
        "input 32x32x3\nconv 8 3x3 same relu\nf = maxpool 4\n"
        "detect f classes=3 strides=4 objectness offset=0.5 tower=1\n"
    )
    model = compile_text(spec)
    plan = make_plan(model)
    head = TorchBackend(model, plan).net.get_submodule("detect1")
    biases = {
        "cls": head.classification_head.cls_logits.bias,
        "extra": head.regression_head.objectness.bias,
    }
    for bias in biases.values():
        np.testing.assert_allclose(torch.sigmoid(bias).detach().numpy(), 0.01, rtol=1e-5)
    assert not torch.allclose(head.regression_head.bbox_reg.bias, torch.tensor(-4.595))

    layer = KerasBackend(model, plan).net.get_layer("detect1")
    found = {}
    for branch in layer.branches:
        for _tower, predictors in branch:
            for p in predictors:
                found[p.name.split("0_")[0]] = np.asarray(p.bias)
    assert set(found) == {"cls", "box", "extra"}
    for part in ("cls", "extra"):
        np.testing.assert_allclose(1 / (1 + np.exp(-found[part])), 0.01, rtol=1e-5)
    assert np.all(found["box"] == 0)
