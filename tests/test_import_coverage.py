"""`cnnspec import` across torchvision and keras.applications (issue 16): the bugs found by
importing them, each with a test that failed before its fix, and a representative subset of
bench/import_coverage.py (the full table is in BENCHMARKS.md).

A model that imports must count what the source counts and, given the source's weights (batch
norms randomised so that they matter), compute what it computes; a model that cannot must be
refused with an E-coded error that names the construct, never a tracing step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")  # before TensorFlow (see conftest.py)
keras = pytest.importorskip("keras")

import cnnspec
from cnnspec.errors import SpecError
from cnnspec.importer import from_keras, from_torch, read_source, write

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import import_coverage

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True, scope="module")
def fresh_keras_names():
    yield
    keras.backend.clear_session()  # later modules look Keras layers up by default names


def _torch_equal(module, text, size):
    from random_weights import randomise_torch

    from cnnspec.backends.torch import build, load_torchvision_state_dict

    randomise_torch(module, 3)
    model = cnnspec.compile_text(text)
    net = build(model, logits=True).eval()
    report = load_torchvision_state_dict(net, model, module.state_dict())
    assert report.ok and not report.unexpected, str(report)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = net(x), module(x)
    assert theirs.std() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    return model


# --- the bugs of issue 16 ------------------------------------------------------------------


def test_keras_separable_conv_is_sepconv():
    """keras:Xception failed on SeparableConv2D although `sepconv` computes it."""
    from cnnspec.backends.keras import build
    from cnnspec.convert import load_keras_applications_weights

    inp = keras.Input((16, 16, 3))
    x = keras.layers.SeparableConv2D(
        8, 3, strides=2, padding="same", depth_multiplier=2, activation="relu", name="sep1"
    )(inp)
    x = keras.layers.SeparableConv2D(4, 3, use_bias=False, name="sep2")(x)
    app = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
    text = write(from_keras.read(app, "keras:tiny"))
    assert "sepconv 8 3x3 multiplier=2 stride=2 same relu" in text
    model = cnnspec.compile_text(text)
    kmodel = build(model)
    load_keras_applications_weights(kmodel, model, app)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(kmodel(x)), np.asarray(app(x)), rtol=1e-4, atol=1e-4)


class _CountedPools(torch.nn.Module):
    """Inception v3's pooling: functional avg_pool2d counting its padding, and max_pool2d."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.pool = torch.nn.AvgPool2d(3, stride=2, padding=1)  # counts padding too

    def forward(self, x):
        x = torch.nn.functional.avg_pool2d(self.conv(x), kernel_size=3, stride=1, padding=1)
        x = torch.nn.functional.max_pool2d(x, kernel_size=3, stride=2)
        return self.pool(x).mean((2, 3))  # ShuffleNet's global pool


def test_avg_pool_counting_padding_is_zeropad_then_avgpool():
    """torchvision:inception_v3 refused avg_pool2d without saying why."""
    module = _CountedPools().eval()
    text = write(from_torch.read(module, "torch:pools", (20, 20, 3)))
    assert "zeropad 1; avgpool 3 stride=1" in text and "maxpool 3 stride=2" in text
    assert "zeropad 1; avgpool 3 stride=2" in text and text.rstrip().endswith("gap")
    _torch_equal(module, text, 20)


def test_inception_v3_imports_exactly():
    graph, module = read_source("torchvision:inception_v3", (75, 75, 3))
    _torch_equal(module, write(graph), 75)


class _UnequalSplit(torch.nn.Module):
    """A split of the channels into unequal parts: no cnnspec construct says it."""

    def forward(self, x):
        a, b = x.split([1, 2], dim=1)
        return a * b.sum(1, keepdim=True)


def test_a_missing_construct_is_named():
    """shufflenet and convnext failed with "cannot import 'size'" and "'permute'": an
    unreadable call names the construct it belongs to, not the tracing step."""
    with pytest.raises(SpecError) as info:
        from_torch.read(_UnequalSplit().eval(), "file", (8, 8, 3))
    err = info.value
    assert err.code == "E417"
    assert "(Tensor.split): channel split" in err.message and "does not have yet" in err.message
    assert "only calls of modules" not in err.message


def test_the_cli_names_the_construct_and_the_model(capsys, monkeypatch):
    from cnnspec.cli import main

    monkeypatch.setattr(from_torch, "load_torchvision", lambda name: _UnequalSplit().eval())
    assert main(["import", "torchvision:unequal", "--input", "8x8x3"]) == 1
    err = capsys.readouterr().err
    assert "torchvision:unequal" in err and "error[E417]" in err
    assert "channel split" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v2_x1_5"])
def test_shufflenet_reads_into_split_and_shuffle(name):
    """shufflenet_v2 failed at 'size' (its channel shuffle: size, view, transpose, view) and
    its x.chunk(2, dim=1): they are `shuffle 2` and `split 2 0` / `split 2 1` now."""
    graph, module = read_source(f"torchvision:{name}", (64, 64, 3))
    text = write(graph)
    assert "split 2 0" in text and "split 2 1" in text and "shuffle 2" in text
    _torch_equal(module, text, 64)


def test_regnet_takes_torchvisions_own_weights_by_order():
    """RegNet registers the shortcut (`proj`) before the body: the spec keeps that order, so
    torchvision's state_dict loads by order ('336 tensors matched, 24 mismatched' before)."""
    graph, module = read_source("torchvision:regnet_y_400mf", (64, 64, 3))
    text = write(graph)
    model = _torch_equal(module, text, 64)
    assert (model.trainable, model.non_trainable) == graph.counts
    assert "parallel add relu {" in text  # the shortcut branch first


def test_imported_resnet_keeps_torchvisions_names():
    """`freeze until layer3` on an imported ResNet failed with E506: the names were lost."""
    from cnnspec.transfer.freeze import frozen_names

    graph, module = read_source("torchvision:resnet18", (64, 64, 3))
    text = write(graph)
    spec = text + "transfer {\n  source torchvision:resnet18\n  freeze until layer3\n}\n"
    model = cnnspec.compile_text(spec)
    frozen = frozen_names(model)
    last = max(i for i, n in enumerate(model.nodes) if n.name.startswith("layer3."))
    assert frozen[-1] == model.nodes[last - 2].name  # layer3's last batch norm
    assert not any(n.startswith("layer4.") for n in frozen)
    assert any(n.startswith("layer3.") for n in frozen)
    for line in (
        "layer1 = layer1",
        "layer3 = layer3",
        "fc = dense 1000",
        "maxpool = maxpool 3 stride=2 padding=1",
    ):
        assert line in text
    _torch_equal(module, text, 64)


def test_stochastic_depth_is_written():
    """It was left out with a note; the language now has `stochastic_depth P`."""
    graph, module = read_source("torchvision:efficientnet_b0", (64, 64, 3))
    text = write(graph)
    assert "stochastic_depth 0.025" in text and "left out" not in text
    _torch_equal(module, text, 64)


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_small"])
def test_convnext_imports_exactly(name):
    """convnext failed at 'permute'; then it read as layernorm, layerscale, stochastic_depth
    with 1x1 convs for its Linear layers, whose torchvision weights did not load by order
    (Linear's (out, in), and `layer_scale` registered before the block's layers). Its Linear
    layers are `dense N per_pixel` now, and the layer scales (randomised off 1e-6, so that
    the blocks matter) load where they are applied."""
    graph, module = read_source(f"torchvision:{name}", (64, 64, 3))
    text = write(graph)
    for word in ("layernorm eps=1e-6", "dense 384 per_pixel", "layerscale", "stochastic_depth"):
        assert word in text
    assert "1x1" not in text
    _torch_equal(module, text, 64)


# --- a representative subset of the coverage bench ------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "torchvision:googlenet",
        "torchvision:mnasnet0_5",
        "keras:MobileNet",
        "keras:Xception",
        "keras:EfficientNetB0",
        "keras:EfficientNetV2B0",  # its preprocessing: a Normalization of constants
    ],
)
def test_coverage_rows(source):
    row = import_coverage.check(source)
    assert row["error"] == "" and row["counts"] is True and row["outputs"] is True, row


def _keras_equal(app, size):
    from cnnspec.backends.keras import build
    from cnnspec.convert import load_keras_applications_weights

    text = write(from_keras.read(app, "keras:tiny"))
    model = cnnspec.compile_text(text)
    assert (model.trainable, model.non_trainable) == from_keras.counts(app)
    kmodel = build(model)
    load_keras_applications_weights(kmodel, model, app)
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(kmodel(x)), np.asarray(app(x)), rtol=1e-4, atol=1e-4)
    return text


def test_keras_ops_on_a_number_are_rescales():
    """keras:MobileNetV3 crashed (KeyError 'add'): its hard sigmoid `relu6(x + 3) * (1/6)` is
    made of keras.ops calls, which are operations but no layers."""
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    gate = keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    x = keras.layers.Multiply()([x, gate])
    app = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
    text = _keras_equal(app, 8)
    assert "rescale offset=3.0; relu6; rescale scale=0.16666666666666666" in text


def test_keras_custom_scale_layer_is_a_rescaled_branch():
    """keras:InceptionResNetV2's CustomScaleLayer: x + scale * branch."""
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 1, name="stem")(inp)
    # x fans out to two branches and to the sum: the body is itself a fan-out of x
    mixed = keras.layers.Concatenate()(
        [keras.layers.Conv2D(2, 1, name="b0")(x), keras.layers.Conv2D(2, 3, padding="same")(x)]
    )
    up = keras.layers.Conv2D(4, 1, name="up")(mixed)
    x = keras.layers.Activation("relu")(CustomScaleLayer(0.17)([x, up]))
    app = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
    text = _keras_equal(app, 8)
    assert "residual relu {" in text and "rescale scale=0.17" in text
    assert "Written flat" not in text


def test_keras_nested_sequential_is_its_chain_of_layers():
    """keras:ConvNeXt* stopped at its stem, a Sequential inside the functional model (E411),
    and then at LayerNormalization and LayerScale (E417): a nested Sequential is the chain
    of its layers (imported, and matched when weights load), and ConvNeXt's layers are
    layernorm, dense per_pixel, layerscale (its gamma randomised off 1e-6)."""
    from keras.src.applications.convnext import LayerScale, StochasticDepth

    inp = keras.Input((16, 16, 3))
    stem = keras.Sequential(
        [keras.layers.Conv2D(8, 4, strides=4), keras.layers.LayerNormalization(epsilon=1e-6)],
        name="stem",
    )
    x = stem(inp)
    y = keras.layers.Conv2D(8, 3, padding="same", groups=8)(x)
    y = keras.layers.LayerNormalization(epsilon=1e-6)(y)
    y = keras.layers.Dense(16, activation="gelu")(y)
    y = keras.layers.Dense(8)(y)
    y = StochasticDepth(0.1)(LayerScale(1e-6, 8)(y))
    x = keras.layers.Add()([x, y])
    app = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
    from random_weights import randomise_keras_batch_norm

    randomise_keras_batch_norm(app, np.random.default_rng(0))
    text = _keras_equal(app, 16)
    for words in (
        "conv 8 4x4 stride=4; layernorm eps=1e-6",
        "dense 16 per_pixel gelu",
        "layerscale 1e-6",
        "stochastic_depth 0.1",
    ):
        assert words in text
