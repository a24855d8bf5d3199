"""The constructs added for `cnnspec import` (issue 16), each against the framework layer it
stands for: `dense N per_pixel` is torch's nn.Linear on a channels-last map (ConvNeXt's
pointwise layers) and Keras' Dense on an HxWxC tensor; `crop` is Keras' Cropping2D (NASNet).
The weights are the framework layer's own (random), loaded through the weight layouts;
outputs vary, so agreement means something. (tests/keras_specs.py uses both in its "modern"
spec, so the cross-framework and generated-code tests cover them too.)
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnspec
from cnnspec.errors import SpecErrors

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")  # before TensorFlow (see conftest.py)
keras = pytest.importorskip("keras")

PER_PIXEL = "model t\ninput 5x6x3\ndense 4 per_pixel\n"


def test_per_pixel_dense_rules():
    model = cnnspec.compile_text(PER_PIXEL)
    node = model.nodes[-1]
    assert node.shape == (5, 6, 4)
    assert node.params == 3 * 4 + 4 and model.trainable == 16
    assert node.macs == 5 * 6 * 3 * 4


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("model t\ninput 5x6x3\ndense 4\n", 3, "needs a vector"),
        ("model t\ninput 5x6x3\nflatten\ndense 4 per_pixel\n", 4, "needs a feature map"),
    ],
)
def test_dense_and_per_pixel_dense_refuse_the_other_shape(text, line, message):
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_text(text)
    err = info.value.errors[0]
    assert err.code == "E305" and message in err.message and err.span.line == line


def test_per_pixel_dense_is_torchs_linear_on_channels_last():
    from cnnspec.backends.torch import build, load_torchvision_state_dict

    torch.manual_seed(0)
    linear = torch.nn.Linear(3, 4)
    model = cnnspec.compile_text(PER_PIXEL)
    net = build(model).eval()
    report = load_torchvision_state_dict(net, model, linear.state_dict())
    assert report.ok and not report.unexpected
    x = torch.randn(2, 3, 5, 6)
    with torch.no_grad():
        want = linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        got = net(x)
    assert want.std() > 0.1
    torch.testing.assert_close(got, want)


def test_per_pixel_dense_is_keras_dense_on_a_map():
    from cnnspec.backends.keras import build
    from cnnspec.convert import load_keras_applications_weights

    inp = keras.Input((5, 6, 3))
    app = keras.Model(inp, keras.layers.Dense(4, name="d")(inp))
    model = cnnspec.compile_text(PER_PIXEL)
    kmodel = build(model)
    load_keras_applications_weights(kmodel, model, app)
    x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype("float32")
    want = np.asarray(app(x))
    assert want.std() > 0.1
    np.testing.assert_allclose(np.asarray(kmodel(x)), want, rtol=1e-5, atol=1e-5)


def test_per_pixel_dense_generated_torch_source_runs(tmp_path):
    import importlib.util

    from cnnspec.backends.torch import build, source_code

    model = cnnspec.compile_text("model t\ninput 5x6x3\ndense 4 per_pixel gelu\n")
    code = source_code(model)
    assert "movedim(1, -1)" in code
    path = tmp_path / "generated_t.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("generated_t", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(1)
    net = build(model).eval()
    gen = next(v for k, v in vars(mod).items() if isinstance(v, type) and k.lower() == "t")()
    gen.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(gen.eval()(x), net(x))


CROP = "model t\ninput 7x9x3\ncrop (1, 0, 2, 3)\n"


def test_crop_is_keras_cropping2d_in_both_backends():
    from cnnspec.backends.keras import build as keras_build
    from cnnspec.backends.torch import build as torch_build

    model = cnnspec.compile_text(CROP)
    assert model.nodes[-1].shape == (6, 4, 3) and model.trainable == 0
    x = np.random.default_rng(0).normal(size=(2, 7, 9, 3)).astype("float32")
    want = np.asarray(keras.layers.Cropping2D(((1, 0), (2, 3)))(x))
    np.testing.assert_array_equal(np.asarray(keras_build(model)(x)), want)
    with torch.no_grad():
        got = torch_build(model)(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(got.permute(0, 2, 3, 1).numpy(), want)


def test_crop_that_leaves_nothing_is_a_located_error():
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_text("model t\ninput 4x9x3\ncrop (2, 2, 0, 0)\n")
    err = info.value.errors[0]
    assert err.code == "E301" and "leaves 0x9" in err.message and err.span.line == 3


def test_keras_cropping_imports_as_crop():
    """keras:NASNet* stopped at Cropping2D (E417): its shifted path, zeropad then crop."""
    from cnnspec.backends.keras import build
    from cnnspec.convert import load_keras_applications_weights
    from cnnspec.importer import from_keras, write

    inp = keras.Input((8, 8, 3))
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(inp)
    x = keras.layers.Cropping2D(((1, 0), (1, 0)))(x)
    x = keras.layers.AveragePooling2D(1, strides=2)(x)
    app = keras.Model(inp, keras.layers.Conv2D(4, 1)(x))
    text = write(from_keras.read(app, "file"))
    assert "zeropad 0x1x0x1; crop 1x0x1x0" in text
    model = cnnspec.compile_text(text)
    kmodel = build(model)
    load_keras_applications_weights(kmodel, model, app)
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(kmodel(x)), np.asarray(app(x)), rtol=1e-5, atol=1e-5)
