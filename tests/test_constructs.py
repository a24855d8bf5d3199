"""The modern constructs against the frameworks' own layers: each spec line is built by the
torch and the Keras backend, given the weights of the framework's layer (torch LayerNorm,
GroupNorm, AdaptiveAvgPool2d, AvgPool2d(count_include_pad), ChannelShuffle, torchvision's
StochasticDepth; keras LayerNormalization, GroupNormalization, AdaptiveAveragePooling2D,
Normalization, Rescaling, Dropout(noise_shape)), and must give its output on a random input.

Weights and inputs are random (gammas and betas moved off 1 and 0) and the outputs are checked
to vary, so agreement cannot come from constants."""

from __future__ import annotations

import numpy as np
import pytest

import cnnspec

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")  # before TensorFlow (the other order crashes)
keras = pytest.importorskip("keras")
pytest.importorskip("cnnspec.backends.torch")

from cnnspec.backends import keras as kb
from cnnspec.backends.torch import build as torch_build

RNG = np.random.default_rng(16)


def _nhwc(shape=(2, 9, 7, 8)):
    return RNG.standard_normal(shape).astype("float32")


def _torch_out(model, x_nhwc, train=False):
    net = torch_build(model).train(train)
    with torch.no_grad():
        xt = torch.tensor(x_nhwc)
        y = net(xt.permute(0, 3, 1, 2) if xt.dim() == 4 else xt)
    return net, (y.permute(0, 2, 3, 1) if y.dim() == 4 else y).numpy()


def _keras_model(model):
    return kb.build(model)


def _spec(line: str, shape="9x7x8") -> cnnspec.Model:
    return cnnspec.compile_text(f"input {shape}\n{line}\n")


def _randomise(module):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p + torch.randn(p.shape, generator=g) * 0.3)
    return module


def _same(a, b, tol=1e-5):
    assert a.shape == b.shape
    assert np.abs(a).max() > 1e-3 and a.std() > 1e-3, "outputs too constant to compare"
    np.testing.assert_allclose(a, b, atol=tol, rtol=tol)


# --- layer norm and group norm ---------------------------------------------------------------


@pytest.mark.parametrize(
    "line", ["layernorm eps=1e-6", "layernorm", "layernorm noscale", "layernorm nocenter"]
)
def test_layernorm_is_torch_layernorm_on_nhwc_and_keras_layernormalization(line):
    model = _spec(line)
    layer = model.nodes[-1].layer
    ref = torch.nn.LayerNorm(8, eps=layer.eps)
    _randomise(ref).eval()
    with torch.no_grad():  # what the spec leaves out is 1 (gamma) or 0 (beta)
        ref.weight.fill_(1) if not layer.scale else ref.bias.zero_() if not layer.center else None
    net = torch_build(model).eval()
    state = {
        k: v
        for k, v in ref.state_dict().items()
        if (k == "weight" and layer.scale) or (k == "bias" and layer.center)
    }
    net.get_submodule(model.nodes[-1].name).load_state_dict(state)
    x = _nhwc()
    with torch.no_grad():
        expected = ref(torch.tensor(x)).numpy()
        got = net(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    _same(got, expected)
    kref = keras.layers.LayerNormalization(
        axis=-1, epsilon=layer.eps, scale=layer.scale, center=layer.center
    )
    kref.build((None, 9, 7, 8))
    kref.set_weights([v.numpy() for v in state.values()])
    kmodel = _keras_model(model)
    kmodel.get_layer(model.nodes[-1].name).set_weights([v.numpy() for v in state.values()])
    _same(np.asarray(kmodel(x)), np.asarray(kref(x)), 1e-4)
    _same(np.asarray(kmodel(x)), expected, 1e-4)


def test_layernorm_on_a_vector():
    model = _spec("layernorm eps=1e-6", "10")
    x = _nhwc((3, 10))
    _, got = _torch_out(model, x)
    with torch.no_grad():
        expected = torch.nn.LayerNorm(10, eps=1e-6)(torch.tensor(x)).numpy()
    _same(got, expected)
    _same(np.asarray(_keras_model(model)(x)), expected, 1e-4)


def test_groupnorm_is_torch_groupnorm_and_keras_groupnormalization():
    model = _spec("groupnorm 4 eps=1e-6")
    ref = _randomise(torch.nn.GroupNorm(4, 8, eps=1e-6)).eval()
    net = torch_build(model).eval()
    net.get_submodule(model.nodes[-1].name).load_state_dict(ref.state_dict())
    x = _nhwc()
    with torch.no_grad():
        expected = ref(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        got = net(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    _same(got, expected)
    kref = keras.layers.GroupNormalization(groups=4, axis=-1, epsilon=1e-6)
    kref.build((None, 9, 7, 8))
    weights = [ref.weight.detach().numpy(), ref.bias.detach().numpy()]
    kref.set_weights(weights)
    kmodel = _keras_model(model)
    kmodel.get_layer(model.nodes[-1].name).set_weights(weights)
    _same(np.asarray(kmodel(x)), np.asarray(kref(x)), 1e-4)
    _same(np.asarray(kmodel(x)), expected, 1e-4)


def test_groupnorm_refuses_channels_its_groups_do_not_divide():
    with pytest.raises(cnnspec.SpecErrors) as info:
        _spec("groupnorm 3")
    assert info.value.errors[0].code == "E313"
    assert info.value.errors[0].span.line == 2


# --- pooling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["avg", "max"])
@pytest.mark.parametrize("size", ["3x4", "2x2", "5x3", "9x7", "4x6"])
def test_adaptive_pooling_is_torchs_for_divisible_and_other_sizes(op, size):
    model = _spec(f"adaptive_{op}pool {size}")
    x = _nhwc()
    _, got = _torch_out(model, x)
    h, w = map(int, size.split("x"))
    ref = {"avg": torch.nn.AdaptiveAvgPool2d, "max": torch.nn.AdaptiveMaxPool2d}[op]((h, w))
    with torch.no_grad():
        expected = ref(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    _same(got, expected)
    assert model.nodes[-1].shape == (h, w, 8)
    _same(np.asarray(_keras_model(model)(x)), expected, 1e-5)


@pytest.mark.parametrize(
    "args,torch_args",
    [
        ("3 stride=1 padding=1", {"kernel_size": 3, "stride": 1, "padding": 1}),
        ("3 stride=2 padding=1", {"kernel_size": 3, "stride": 2, "padding": 1}),
        (
            "3 stride=2 padding=1 ceil=true",
            {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
        ),
        ("2 stride=2 ceil=true", {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
    ],
)
def test_avgpool_count_pad_is_torchs_count_include_pad(args, torch_args):
    model = _spec(f"avgpool {args} count_pad=true")
    x = _nhwc()
    _, got = _torch_out(model, x)
    ref = torch.nn.AvgPool2d(**torch_args, count_include_pad=True)
    with torch.no_grad():
        expected = ref(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    _same(got, expected)
    _same(np.asarray(_keras_model(model)(x)), expected, 1e-5)
    # and without it the border differs: the option is not a no-op
    _, plain = _torch_out(_spec(f"avgpool {args}"), x)
    if "padding" in args:
        assert np.abs(plain - expected).max() > 1e-3


def test_avgpool_count_pad_with_same_padding_divides_by_the_window():
    model = _spec("avgpool 3 stride=2 same count_pad=true", "8x8x4")
    x = _nhwc((2, 8, 8, 4))
    _, got = _torch_out(model, x)
    padded = torch.nn.functional.pad(torch.tensor(x).permute(0, 3, 1, 2), (0, 1, 0, 1))
    expected = torch.nn.functional.avg_pool2d(padded, 3, 2).permute(0, 2, 3, 1).numpy()
    _same(got, expected)
    _same(np.asarray(_keras_model(model)(x)), expected, 1e-5)


def test_count_pad_on_max_pooling_is_refused():
    with pytest.raises(cnnspec.SpecErrors) as info:
        _spec("maxpool 3 stride=1 padding=1 count_pad=true")
    assert (info.value.errors[0].code, info.value.errors[0].span.line) == ("E304", 2)


# --- channel shuffle, split, layer scale, stochastic depth -----------------------------------


def test_channel_shuffle_is_torchs_and_torchvisions():
    from torchvision.models.shufflenetv2 import channel_shuffle

    model = _spec("shuffle 2")
    x = _nhwc()
    _, got = _torch_out(model, x)
    xt = torch.tensor(x).permute(0, 3, 1, 2)
    expected = channel_shuffle(xt, 2).permute(0, 2, 3, 1).numpy()
    _same(got, expected)
    assert not np.allclose(got, x)
    _same(np.asarray(_keras_model(model)(x)), expected, 0)


def test_split_gives_torchs_chunks_by_name():
    model = cnnspec.compile_text(
        "input 9x7x8\nleft = split 2 0\nright = split 2 1 from=input\n"
        "conv 4 1x1 from=right\nconcat left\n"
    )
    assert [n.shape for n in model.nodes[1:3]] == [(9, 7, 4), (9, 7, 4)]
    x = _nhwc()
    net, got = _torch_out(model, x)
    xt = torch.tensor(x).permute(0, 3, 1, 2)
    left, right = xt.chunk(2, dim=1)
    with torch.no_grad():
        expected = torch.cat([net.conv1(right), left], 1).permute(0, 2, 3, 1).numpy()
    _same(got, expected)
    kmodel = _keras_model(model)
    from cnnspec.convert import load_torch_into_keras

    load_torch_into_keras(kmodel, model, net.state_dict())
    _same(np.asarray(kmodel(x)), expected, 1e-5)


def test_layer_scale_is_a_trainable_gamma_per_channel_in_both_frameworks():
    model = _spec("layerscale 0.5")
    assert (model.trainable, model.non_trainable) == (8, 0)
    net = torch_build(model)
    assert net.state_dict()["layerscale1.gamma"].shape == (8, 1, 1)  # torchvision's ConvNeXt
    gamma = RNG.standard_normal(8).astype("float32")
    with torch.no_grad():
        net.layerscale1.gamma.copy_(torch.tensor(gamma).view(8, 1, 1))
    x = _nhwc()
    with torch.no_grad():
        got = net(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    _same(got, x * gamma)
    kmodel = _keras_model(model)
    assert [w.shape for w in kmodel.trainable_weights] == [(8,)]
    np.testing.assert_allclose(kmodel.trainable_weights[0].numpy(), 0.5)
    from cnnspec.convert import load_torch_into_keras

    load_torch_into_keras(kmodel, model, net.state_dict())
    _same(np.asarray(kmodel(x)), x * gamma, 1e-6)


def test_stochastic_depth_is_torchvisions_in_eval_and_drops_samples_in_training():
    from torchvision.ops import StochasticDepth

    model = _spec("stochastic_depth 0.5", "3x3x2")
    assert model.params == 0
    x = _nhwc((64, 3, 3, 2))
    _, got = _torch_out(model, x)
    with torch.no_grad():
        expected = StochasticDepth(0.5, "row").eval()(torch.tensor(x)).numpy()
    _same(got, expected)
    torch.manual_seed(0)
    _, trained = _torch_out(model, x, train=True)
    kept = [np.allclose(t, 2 * s) for t, s in zip(trained, x)]
    dropped = [not np.any(t) for t in trained]
    assert all(k or d for k, d in zip(kept, dropped)) and 10 < sum(kept) < 54
    kmodel = _keras_model(model)
    _same(np.asarray(kmodel(x)), x)
    ktrained = np.asarray(kmodel(x, training=True))
    kept = [np.allclose(t, 2 * s, rtol=1e-5) for t, s in zip(ktrained, x)]
    dropped = [not np.any(t) for t in ktrained]
    assert all(k or d for k, d in zip(kept, dropped)) and 10 < sum(kept) < 54


# --- per-channel normalisation and rescale ---------------------------------------------------


def test_normalize_is_keras_normalization_with_its_seven_statistics():
    mean, var = (0.485, 0.456, 0.406), (0.229**2, 0.224**2, 0.225**2)
    model = _spec(f"normalize mean={mean} variance={var}", "6x5x3")
    assert (model.trainable, model.non_trainable) == (0, 7)
    x = _nhwc((2, 6, 5, 3))
    ref = keras.layers.Normalization(axis=-1, mean=list(mean), variance=list(var))
    expected = np.asarray(ref(x))
    kmodel = _keras_model(model)
    assert kmodel.count_params() == 7
    _same(np.asarray(kmodel(x)), expected, 1e-5)
    net, got = _torch_out(model, x)
    _same(got, expected, 1e-5)
    assert sorted(net.state_dict()) == [
        "normalize1.count",
        "normalize1.mean",
        "normalize1.variance",
    ]
    # statistics loaded after building reach the output in both frameworks
    new_mean = np.array([1.0, -2.0, 0.5], "float32")
    kmodel.get_layer("normalize1").set_weights([new_mean, np.array(var, "float32"), np.array(5)])
    _same(np.asarray(kmodel(x)), (x - new_mean) / np.sqrt(var), 1e-5)
    with torch.no_grad():
        net.normalize1.mean.copy_(torch.tensor(new_mean))
        y = net(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    _same(y, (x - new_mean) / np.sqrt(var), 1e-5)


def test_normalize_refuses_a_wrong_number_of_values():
    with pytest.raises(cnnspec.SpecErrors) as info:
        _spec("normalize mean=(1, 2)", "6x5x3")
    assert (info.value.errors[0].code, info.value.errors[0].span.line) == ("E314", 2)


def test_rescale_per_channel_is_keras_rescaling_with_a_list():
    scale = (1 / 0.229, 1 / 0.224, 1 / 0.225)
    model = _spec(f"rescale scale={scale} offset=(0.1, 0.2, 0.3)", "6x5x3")
    x = _nhwc((2, 6, 5, 3))
    expected = np.asarray(keras.layers.Rescaling(list(scale), [0.1, 0.2, 0.3])(x))
    _, got = _torch_out(model, x)
    _same(got, expected, 1e-5)
    _same(np.asarray(_keras_model(model)(x)), expected, 1e-5)


# --- activations as values of block parameters -----------------------------------------------

ACT_BLOCK = """input 8x8x3
block unit(act=relu) {
  conv 4 3x3 same act
  act
}
"""


@pytest.mark.parametrize(
    "value,inline,line",
    [
        ("", "relu", "relu"),
        ("act=silu", "silu", "silu"),
        ("act=swish", "silu", "silu"),
        ("act=leaky_relu", "leaky_relu", "leaky_relu"),
        ("act=none", None, None),
    ],
)
def test_an_activation_is_a_value_a_block_parameter_carries(value, inline, line):
    model = cnnspec.compile_text(ACT_BLOCK + f"unit {value}\n")
    kinds = [n.kind for n in model.nodes[1:]]
    assert model.nodes[1].layer.activation == inline
    assert kinds == (["conv", "activation"] if line else ["conv"])
    if line:
        assert model.nodes[2].layer.fn == line
        _, got = _torch_out(model, _nhwc((1, 8, 8, 3)))
        assert got.shape == (1, 8, 8, 4)


def test_a_parameter_that_is_not_an_activation_is_refused_where_it_is_used():
    with pytest.raises(cnnspec.SpecErrors) as info:
        cnnspec.compile_text(ACT_BLOCK.replace("  conv 4 3x3 same act\n", "") + "unit act=relux\n")
    err = info.value.errors[0]
    assert (err.code, err.span.line) == ("E202", 3)
    assert "not an activation" in err.message and "relu" in (err.hint or "")
