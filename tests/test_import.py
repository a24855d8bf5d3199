"""`cnnspec import`: specs written from torchvision and keras.applications models count what the
source counts and, given the source's weights, compute what the source computes.

Batch-norm statistics and scales of each source are randomised first so that they matter, and
features before the classifier are compared as well as the outputs (a softmax over 1000 classes
of a random network is nearly uniform and would hide differences). Each source model is built
once per module; torchvision runs at 64x64 except VGG16, whose adaptive 7x7 pool is the identity
only at 224x224; keras at 96x96.
"""

from __future__ import annotations

import numpy as np
import pytest
from random_weights import randomise_keras_batch_norm, randomise_torch

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")  # before TensorFlow (see conftest.py)
keras = pytest.importorskip("keras")

import cnnspec
from cnnspec.errors import SpecError
from cnnspec.fmt import format_text
from cnnspec.importer import from_keras, from_torch, write

MAX_LINES = 150
# densenet121 too: its concatenation of all earlier features is chained to say it with parallel
TORCH = {"resnet50": 64, "mobilenet_v2": 64, "vgg16": 224, "densenet121": 64}
KERAS = ["ResNet50", "MobileNetV2", "DenseNet121"]
READABLE = {  # what a reader of each imported spec should find
    "resnet50": [
        "block bottleneck(f)",
        "block bottleneck_proj(f, stride=1)",
        "repeat 5 { bottleneck 256 }",
        "bottleneck_proj 512 stride=2",
    ],
    "mobilenet_v2": [
        "block inverted_residual(f, stride=1)",
        "conv in_channels*6 1x1",
        "repeat 3 { residual { inverted_residual 64 } }",
    ],
    "vgg16": ["repeat 3 { conv 512 3x3 padding=1; relu }", "is the identity at this input"],
    "densenet121": ["block dense_layer()", "repeat 24 { dense_layer }"],
    "ResNet50": ["residual relu {", "} shortcut {", "repeat 5 { res_block 256 }"],
    "MobileNetV2": ["conv in_channels*6 1x1", "residual {"],
    "DenseNet121": ["parallel concat {", "branch {}", "repeat 24 { dense_layer }"],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True, scope="module")
def fresh_keras_names():
    yield
    # Keras names layers from process-wide counters ("global_average_pooling2d_1" once one
    # exists); later test modules look layers up by their default names, so reset them.
    keras.backend.clear_session()


@pytest.fixture(scope="module", params=sorted(TORCH))
def torch_case(request):
    name = request.param
    module = torchvision.models.get_model(name, weights=None).eval()
    randomise_torch(module, len(name))
    size = TORCH[name]
    text = write(from_torch.read(module, f"torchvision:{name}", (size, size, 3)))
    return name, module, text, cnnspec.compile_text(text)


@pytest.fixture(scope="module", params=KERAS)
def keras_case(request):
    name = request.param
    app = getattr(keras.applications, name)(weights=None, input_shape=(96, 96, 3))
    randomise_keras_batch_norm(app, np.random.default_rng(len(name)))
    text = write(from_keras.read(app, f"keras:{name}"))
    return name, app, text, cnnspec.compile_text(text)


def test_torchvision_counts_and_size(torch_case):
    name, module, text, model = torch_case
    params = sum(p.numel() for p in module.parameters())
    stats = sum(b.numel() for n, b in module.named_buffers() if n.endswith(("_mean", "_var")))
    assert (model.trainable, model.non_trainable) == (params, stats)
    assert len(text.splitlines()) < MAX_LINES
    for expected in READABLE[name]:
        assert expected in text
    assert format_text(text) == text  # `cnnspec fmt --check` clean


def test_torchvision_outputs_agree(torch_case):
    from cnnspec.backends.torch import build, load_torchvision_state_dict

    name, module, _text, model = torch_case
    net = build(model).eval()
    report = load_torchvision_state_dict(net, model, module.state_dict())
    assert report.ok and len(report.matched) == len(module.state_dict())
    size = TORCH[name]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = net(x), module(x)
    assert theirs.std() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_keras_counts_and_size(keras_case):
    name, app, text, model = keras_case
    assert (model.trainable, model.non_trainable) == from_keras.counts(app)
    assert model.params == app.count_params()
    assert len(text.splitlines()) < MAX_LINES
    for expected in READABLE[name]:
        assert expected in text
    assert format_text(text) == text  # `cnnspec fmt --check` clean


def test_keras_outputs_agree(keras_case):
    from cnnspec.backends.keras import build, keras_names
    from cnnspec.convert import load_keras_applications_weights

    _name, app, _text, model = keras_case
    kmodel = build(model)
    assert load_keras_applications_weights(kmodel, model, app) == sum(
        1 for layer in app.layers if layer.weights
    )
    feature = next(la for la in app.layers if isinstance(la, keras.layers.GlobalAveragePooling2D))
    node = next(n for n in model.nodes if n.kind == "global_pool")
    ours = keras.Model(
        kmodel.input, [kmodel.get_layer(keras_names(model)[node.name]).output, kmodel.output]
    )
    theirs = keras.Model(app.input, [feature.output, app.output])
    x = np.random.default_rng(2).normal(size=(2, 96, 96, 3)).astype("float32")
    for a, b in zip(ours(x), theirs(x)):
        a, b = np.asarray(a), np.asarray(b)
        assert b.std() > 0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# --- what cannot be said is refused, naming the layer ------------------------------------------


def test_vgg_adaptive_pool_that_is_no_window_is_refused():
    module = torchvision.models.vgg11(weights=None).eval()
    with pytest.raises(SpecError) as err:
        from_torch.read(module, "torchvision:vgg11", (40, 40, 3))
    assert err.value.code == "E411"
    assert "'avgpool' (AdaptiveAvgPool2d)" in err.value.message


def test_unused_weights_are_refused():
    module = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    with pytest.raises(SpecError) as err:
        from_torch.read(module.eval(), "torchvision:googlenet", (64, 64, 3))
    assert err.value.code == "E412" and "'aux1.conv.conv' (Conv2d)" in err.value.message


def _keras_outputs_equal(app, size: int) -> str:
    """The spec imported from `app`, checked to count and compute what `app` does."""
    from cnnspec.backends.keras import build
    from cnnspec.convert import load_keras_applications_weights

    text = write(from_keras.read(app, "file"))
    model = cnnspec.compile_text(text)
    assert (model.trainable, model.non_trainable) == from_keras.counts(app)
    kmodel = build(model)
    load_keras_applications_weights(kmodel, model, app)
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    want = np.asarray(app(x))
    assert want.std() > 1e-3
    np.testing.assert_allclose(np.asarray(kmodel(x)), want, rtol=1e-5, atol=1e-5)
    return text


def test_keras_normalization_given_constants_is_a_rescale():
    # One built from constant mean/variance holds no weights in Keras (112 + 0) where
    # `normalize` counts 2C+1 statistics (refused with E416 before): it is the per-channel
    # affine map x/s - m/s, which `rescale` computes with no parameters
    # (keras:EfficientNetV2B0's and ConvNeXt's preprocessing)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[1.0, 2.0, 3.0], name="norm")(inp)
    x = keras.layers.Conv2D(4, 3)(x)
    text = _keras_outputs_equal(keras.Model(inp, x), 8)
    assert "rescale scale=(1.0, 0.7071067811865475, 0.5773502691896258) offset=(-0.5," in text
    assert "normalize" not in text


def test_keras_per_pixel_dense_is_dense_per_pixel():
    # refused by name before (the spec's dense took vectors only)
    inp = keras.Input((4, 4, 3))
    out = keras.layers.Dense(2, name="pixels")(inp)
    text = _keras_outputs_equal(keras.Model(inp, out), 4)
    assert "dense 2 per_pixel" in text


def test_cli_imports_a_saved_keras_file(tmp_path, capsys):
    """A small model with the layers the applications do not use, through the command line."""
    from cnnspec.backends.keras import build
    from cnnspec.cli import main
    from cnnspec.convert import load_keras_applications_weights

    inp = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    a = keras.layers.Conv2D(8, 1)(x)
    b = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Concatenate()([a, b])
    g = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    g = keras.layers.Conv2D(16, 1, activation="sigmoid")(g)
    x = keras.layers.Multiply()([x, g])
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Reshape((8 * 8 * 16,))(x)
    x = keras.layers.Dropout(0.3)(x)
    out = keras.layers.Dense(5, activation="softmax")(x)
    src = keras.Model(inp, out)
    path, spec = tmp_path / "small.keras", tmp_path / "small.cnn"
    src.save(path)
    assert main(["import", str(path), "-o", str(spec)]) == 0
    assert main(["fmt", "--check", str(spec)]) == 0
    model = cnnspec.compile_file(spec)
    assert model.params == src.count_params()
    kmodel = build(model)
    load_keras_applications_weights(kmodel, model, src)
    xin = np.random.default_rng(3).uniform(0, 255, size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(kmodel(xin)), np.asarray(src(xin)), rtol=1e-4, atol=1e-5)


def test_cli_reports_an_unknown_source(capsys):
    from cnnspec.cli import main

    assert main(["import", "torchvision:resnet_nope", "-o", "x.cnn"]) == 1
    assert "E410" in capsys.readouterr().err


def test_a_graph_that_is_not_series_parallel_is_written_with_named_tensors():
    from cnnspec.backends.torch import build, load_torchvision_state_dict

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.c3 = (torch.nn.Conv2d(k, 4, 3, padding=1) for k in (3, 4, 4))
            self.fc = torch.nn.Linear(12, 5)

        def forward(self, x):
            y1 = self.c1(x)
            y2 = self.c2(y1)
            z = torch.cat([y1, y2, torch.relu(self.c3(y2))], 1)  # y2 feeds c3 and the cat
            return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(z, 1), 1))

    net = Net().eval()
    text = write(from_torch.read(net, "net", (8, 8, 3)))
    assert "c1 = conv 4 3x3 padding=1" in text and "concat from=(c1, c2, " in text
    assert format_text(text) == text
    model = cnnspec.compile_text(text)
    ours = build(model).eval()
    load_torchvision_state_dict(ours, model, net.state_dict())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), net(x), rtol=1e-5, atol=1e-5)


def test_tensor_names_dodge_every_word_of_the_grammar():
    """Issue 16: modules called `transfer` or `shortcut` gave a spec that did not parse."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transfer = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.shortcut = torch.nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            a = self.transfer(x)
            b = self.conv(a)
            return torch.cat([a, b, self.shortcut(b)], 1)

    text = write(from_torch.read(Net().eval(), "net", (8, 8, 3)))
    assert "transfer_ = conv" in text and "shortcut_ = conv" in text, text
    assert format_text(text) == text
    cnnspec.compile_text(text)


# --- the block finder ---------------------------------------------------------------------------


def test_block_parameters_are_found_from_the_occurrences():
    from cnnspec.importer.writer import infer

    # slots: filters, stride, filters*4, a constant 1; block inputs of 64, 256, 512 channels
    occ = [[64, 1, 256, 1], [128, 2, 512, 1], [256, 2, 1024, 1]]
    texts, params, values = infer(occ, [64, 256, 512], ["filters", "stride", "filters", "k"])
    assert texts == ["f", "stride", "f*4", "1"]
    assert params == [("f", None), ("stride", 1)]
    assert values == [[64, 1], [128, 2], [256, 2]]


def test_an_expansion_of_the_input_is_written_with_in_channels():
    from cnnspec.importer.writer import infer

    texts, params, _ = infer([[144, 32], [192, 64]], [24, 32], ["filters", "filters"])
    assert texts == ["in_channels*6", "f"] and params == [("f", None)]


def test_calls_that_differ_get_an_argument():
    from cnnspec.importer.writer import infer

    texts, _params, values = infer([[64, 64], [128, 128]], [64, 128], ["filters", "filters"])
    assert texts == ["f", "f"] and values == [[64], [128]]
