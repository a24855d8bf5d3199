"""The torch backend against the frameworks themselves: TensorFlow for the spec's (Keras')
semantics where torch differs, torchvision for whole architectures, and a training step."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec.backends import torch as tb

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def net_for(body: str):
    model = cnnspec.compile_text("model case\n" + body + "\n")
    return model, tb.build(model).eval()


def run(net, x):
    with torch.no_grad():
        return net(x)


def nhwc(x):
    return x.permute(0, 2, 3, 1).numpy()


def assert_close_nhwc(torch_out, tf_out, tol=1e-5):
    np.testing.assert_allclose(nhwc(torch_out), np.asarray(tf_out), rtol=tol, atol=tol)


# --- TensorFlow: 'same' padding, pooling, transposed conv, flatten order -----------------


@pytest.fixture(scope="module")
def tf():
    tf = pytest.importorskip("tensorflow")
    return tf


@pytest.mark.parametrize(
    "size,kernel,stride,dilation",
    [
        (8, 3, 2, 1),
        (9, 3, 2, 1),
        (8, 4, 1, 1),
        (7, 4, 2, 1),
        (10, 5, 3, 1),
        (9, 3, 1, 2),
        (8, 1, 2, 1),
    ],
)
def test_conv_same_matches_tensorflow(tf, size, kernel, stride, dilation):
    _, net = net_for(
        f"input {size}x{size + 1}x3\nconv 4 {kernel}x{kernel} stride={stride} "
        f"dilation={dilation} same"
    )
    x = torch.randn(2, 3, size, size + 1)
    w, b = net.conv1.weight.detach(), net.conv1.bias.detach()
    ref = (
        tf.nn.conv2d(
            nhwc(x),
            w.permute(2, 3, 1, 0).numpy(),
            strides=stride,
            padding="SAME",
            dilations=dilation,
        )
        + b.numpy()
    )
    assert_close_nhwc(run(net, x), ref)


@pytest.mark.parametrize("size,stride", [(8, 2), (9, 2), (9, 1)])
def test_depthwise_same_matches_tensorflow(tf, size, stride):
    _, net = net_for(f"input {size}x{size}x3\ndwconv 3x3 stride={stride} same multiplier=2 nobias")
    x = torch.randn(2, 3, size, size)
    w = net.dwconv1.weight.detach()  # (C*m, 1, kh, kw), channel c*m + j
    kernel = w.reshape(3, 2, 3, 3).permute(2, 3, 0, 1).numpy()  # (kh, kw, C, m)
    ref = tf.nn.depthwise_conv2d(nhwc(x), kernel, strides=[1, stride, stride, 1], padding="SAME")
    assert_close_nhwc(run(net, x), ref)


@pytest.mark.parametrize("size,stride", [(8, 2), (7, 2)])
def test_separable_matches_keras(tf, size, stride):
    import keras

    _, net = net_for(f"input {size}x{size}x3\nsepconv 5 3x3 stride={stride} same")
    x = torch.randn(2, 3, size, size)
    dw, pw = net.sepconv1[0].weight.detach(), net.sepconv1[1]
    layer = keras.layers.SeparableConv2D(5, 3, strides=stride, padding="same")
    layer.build((None, size, size, 3))
    layer.set_weights(
        [
            dw.reshape(3, 1, 3, 3).permute(2, 3, 0, 1).numpy(),
            pw.weight.detach().permute(2, 3, 1, 0).numpy(),
            pw.bias.detach().numpy(),
        ]
    )
    assert_close_nhwc(run(net, x), layer(nhwc(x)))


@pytest.mark.parametrize(
    "size,kernel,stride",
    [(5, 3, 2), (4, 3, 2), (5, 4, 2), (5, 1, 2), (4, 2, 2), (5, 5, 3), (6, 3, 1)],
)
def test_transposed_conv_same_matches_keras(tf, size, kernel, stride):
    import keras

    _, net = net_for(f"input {size}x{size}x3\ndeconv 4 {kernel}x{kernel} stride={stride} same")
    x = torch.randn(2, 3, size, size)
    layer = keras.layers.Conv2DTranspose(4, kernel, strides=stride, padding="same")
    layer.build((None, size, size, 3))
    w = net.deconv1.weight.detach()  # (in, out, kh, kw)
    layer.set_weights([w.permute(2, 3, 1, 0).numpy(), net.deconv1.bias.detach().numpy()])
    out = run(net, x)
    assert out.shape[-1] == size * stride
    assert_close_nhwc(out, layer(nhwc(x)))


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize(
    "size,window,stride", [(8, 3, 2), (9, 3, 2), (8, 2, 2), (7, 3, 1), (10, 3, 3)]
)
def test_pool_same_matches_tensorflow(tf, op, size, window, stride):
    _, net = net_for(f"input {size}x{size}x3\n{op}pool {window} stride={stride} same")
    x = torch.randn(2, 3, size, size) - 2.0  # negative: max pool must not see zero padding
    pool = tf.nn.max_pool2d if op == "max" else tf.nn.avg_pool2d
    assert_close_nhwc(run(net, x), pool(nhwc(x), window, stride, "SAME"))


def test_flatten_then_dense_matches_keras(tf):
    import keras

    _, net = net_for("input 3x4x5\nflatten\ndense 6")
    x = torch.randn(2, 5, 3, 4)
    dense = keras.layers.Dense(6)
    dense.build((None, 60))
    dense.set_weights([net.dense1.weight.detach().T.numpy(), net.dense1.bias.detach().numpy()])
    ref = dense(keras.layers.Flatten()(nhwc(x)))
    np.testing.assert_allclose(run(net, x).numpy(), np.asarray(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsample_matches_keras(tf, mode):
    import keras

    _, net = net_for(f"input 3x4x2\nupsample (2, 3) {mode}")
    x = torch.randn(2, 2, 3, 4)
    ref = keras.layers.UpSampling2D((2, 3), interpolation=mode)(nhwc(x))
    assert_close_nhwc(run(net, x), ref)


def test_zeropad_and_batchnorm_inference_match_keras(tf):
    import keras

    _, net = net_for("input 4x5x3\nzeropad (1, 2, 0, 3)\nbn eps=1e-3 momentum=0.99")
    with torch.no_grad():
        for t in (net.bn1.weight, net.bn1.bias, net.bn1.running_mean):
            t.uniform_(-1, 1)
        net.bn1.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 4, 5)
    bn = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99)
    bn.build((None, 5, 10, 3))
    bn.set_weights(
        [
            t.detach().numpy()
            for t in (net.bn1.weight, net.bn1.bias, net.bn1.running_mean, net.bn1.running_var)
        ]
    )
    ref = bn(keras.layers.ZeroPadding2D(((1, 2), (0, 3)))(nhwc(x)), training=False)
    assert_close_nhwc(run(net, x), ref)


def test_batchnorm_running_mean_update_matches_keras(tf):
    import keras

    _, net = net_for("input 4x4x3\nbn momentum=0.8")
    net.train()
    x = torch.randn(8, 3, 4, 4) + 1.5
    net(x)
    bn = keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-5)
    bn(nhwc(x), training=True)
    np.testing.assert_allclose(
        net.bn1.running_mean.numpy(), bn.moving_mean.numpy(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "fn",
    [
        "relu",
        "relu6",
        "sigmoid",
        "tanh",
        "silu",
        "gelu",
        "hard_swish",
        "hard_sigmoid",
        "elu",
        "leaky_relu",
        "softmax",
    ],
)
def test_activations_match_keras(tf, fn):
    import keras

    _, net = net_for(f"input 3x3x4\n{fn}")
    x = torch.randn(2, 4, 3, 3) * 4
    keras_fn = {
        "leaky_relu": lambda v: keras.activations.leaky_relu(v, negative_slope=0.01),
        "softmax": lambda v: keras.activations.softmax(v, axis=-1),
    }.get(fn, getattr(keras.activations, fn))
    assert_close_nhwc(run(net, x), keras_fn(nhwc(x)))


# --- torchvision: the zoo specs are its architectures, weight for weight -----------------


def _torchvision_models():
    tv = pytest.importorskip("torchvision")
    m = tv.models
    return {
        "vgg16": (lambda: m.vgg16(), 224),
        "resnet18": (lambda: m.resnet18(), 64),
        "resnet50": (lambda: m.resnet50(), 64),
        "mobilenet_v2": (lambda: m.mobilenet_v2(), 64),
        "googlenet": (lambda: m.googlenet(weights=None, aux_logits=False, init_weights=True), 64),
        "efficientnet_b0": (lambda: m.efficientnet_b0(), 64),
    }


def with_input(name: str, size: int) -> cnnspec.Model:
    """The zoo spec with its input resized (the specs use global pooling, so any size works)."""
    text = (SPECS / f"{name}.cnn").read_text()
    text = re.sub(
        r"^input \d+x\d+x(\d+)", f"input {size}x{size}x\\1", text, count=1, flags=re.MULTILINE
    )
    return cnnspec.compile_text(text, f"{name}.cnn")


def randomise_batchnorm(module):
    """Non-trivial statistics and affine parameters, so that eval mode tests the mapping."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize(
    "name", ["vgg16", "resnet18", "resnet50", "mobilenet_v2", "googlenet", "efficientnet_b0"]
)
def test_torchvision_weights_give_torchvision_outputs(name):
    make, size = _torchvision_models()[name]
    torch.manual_seed(0)
    ref = make().eval()
    randomise_batchnorm(ref)
    model = with_input(name, size)
    net = tb.build(model, logits=True).eval()  # torchvision returns logits
    report = tb.load_torchvision_state_dict(net, model, ref.state_dict())
    assert report.ok and len(report.matched) == len(ref.state_dict())
    if name == "vgg16":
        assert report.reordered == ["dense1.weight"] or len(report.reordered) == 1
    x = torch.randn(2, 3, size, size)
    torch.testing.assert_close(run(net, x), run(ref, x), rtol=1e-5, atol=1e-5)


# --- Training: a step of every zoo spec --------------------------------------------------


def small_model(path: Path) -> cnnspec.Model:
    """The spec at a small input where its layers allow it, else as written."""
    model = cnnspec.compile_file(path)
    if len(model.input_shape) == 3 and model.input_shape[0] > 64:
        try:
            return with_input(path.stem, 64)
        except cnnspec.SpecErrors:
            return model
    return model


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.cnn")), ids=lambda p: p.stem)
def test_a_training_step_runs(path):
    model = small_model(path)
    torch.manual_seed(0)
    net = tb.build(model, logits=True).train()
    shape = model.input_shape
    x = torch.randn(2, *((shape[2], shape[0], shape[1]) if len(shape) == 3 else shape))
    outs = net(x)
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum(
        torch.nn.functional.cross_entropy(o, torch.tensor([0, 1]) % o.shape[1])
        if o.dim() == 2 and o.shape[1] > 1
        else o.float().pow(2).mean()
        for o in outs
    )
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
