"""One network, two frameworks: weights made in PyTorch, converted to Keras and back, give the
same outputs in both, for every zoo spec and every layer kind; a training step runs in Keras.

The weights are random, batch-norm running statistics included, and so are the inputs (a seed
per spec); outputs are checked to vary, and deliberately wrong conversions are checked to fail,
so that agreement cannot come from constant outputs or from a test that compares nothing.
"""

from __future__ import annotations

import functools
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from framework_checks import check_keras_shapes_and_counts
from keras_specs import LAYER_SPECS

import cnnspec

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
pytest.importorskip("cnnspec.backends.torch")

SPECS = Path(__file__).resolve().parent.parent / "specs"
ZOO = sorted(p.stem for p in SPECS.glob("*.cnn"))


def _small(text: str) -> cnnspec.Model:
    """The spec at the smallest of a few input sizes it accepts (counts and layouts do not
    depend on the size; building and running do)."""
    m = re.search(r"^input (\d+)x(\d+)x(\d+)", text, re.MULTILINE)
    if m is None or int(m.group(1)) <= 64:
        return cnnspec.compile_text(text)
    for size in (64, 96, 128, 160, 192):
        try:
            return cnnspec.compile_text(
                text.replace(m.group(0), f"input {size}x{size}x{m.group(3)}", 1)
            )
        except cnnspec.SpecErrors:
            continue
    return cnnspec.compile_text(text)


@functools.cache
def _ir(name: str) -> cnnspec.Model:
    if name in LAYER_SPECS:
        return cnnspec.compile_text(LAYER_SPECS[name])
    return _small((SPECS / f"{name}.cnn").read_text())


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def _torch_net(model, seed):
    from cnnspec.backends.torch import build

    torch.manual_seed(seed)
    net = build(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                mod.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                if mod.weight is not None:
                    mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(c, generator=g) * 0.2)
            elif getattr(mod, "bias", None) is not None and mod.bias.requires_grad:
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
    return net.eval()


def _nhwc(y):
    y = y.detach().numpy()
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


def _torch_outputs(net, x):
    with torch.no_grad():
        t = torch.from_numpy(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x)
        ys = net(t)
    return [_nhwc(y) for y in (ys if isinstance(ys, tuple) else (ys,))]


def _keras_outputs(kmodel, x):
    return [np.asarray(y) for y in keras.tree.flatten(kmodel(x, training=False))]


def _input(model, seed, batch=2):
    return np.random.default_rng(seed).normal(size=(batch, *model.input_shape)).astype("float32")


def _assert_close(got, want, what):
    """Equal to 1e-4 of each output's scale; the outputs must be finite and not all constant
    (a single sigmoid unit of a random network may barely move, so not each one)."""
    spread = []
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape, what
        scale = float(np.abs(w).max())
        assert np.isfinite(w).all() and scale > 0, f"{what}: output is zero or not finite"
        spread.append(float(w.std()) / scale)
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * scale, err_msg=what)
        # and small beside how much the output varies (measured: below 3e-4 of it), which the
        # tolerance alone is not where a random network's output barely moves
        if spread[-1] > 1e-5:
            assert float(np.abs(g - w).max()) <= 1e-2 * float(w.std()), what
    assert max(spread) > 1e-3, f"{what}: outputs are constant"


@functools.cache
def _pair(name):
    """(IR, torch net, Keras model loaded from the torch weights) for one spec."""
    from cnnspec.backends.keras import build
    from cnnspec.convert import load_torch_into_keras

    model = _ir(name)
    net = _torch_net(model, _seed(name))
    kmodel = build(model)
    load_torch_into_keras(kmodel, model, net.state_dict())
    return model, net, kmodel


CASES = [*ZOO, *sorted(LAYER_SPECS)]


@pytest.mark.parametrize("name", ZOO)
def test_keras_model_has_the_ir_counts_and_shapes(name):
    model, _, kmodel = _pair(name)
    check_keras_shapes_and_counts(model, kmodel)


@pytest.mark.parametrize("name", CASES)
def test_torch_weights_give_the_same_outputs_in_keras(name):
    model, net, kmodel = _pair(name)
    x = _input(model, _seed(name) + 1)
    _assert_close(_keras_outputs(kmodel, x), _torch_outputs(net, x), f"{name} torch->keras")


@pytest.mark.parametrize("name", CASES)
def test_keras_weights_give_the_same_outputs_in_torch(name):
    from cnnspec.backends.torch import build
    from cnnspec.convert import load_keras_into_torch

    model, _, kmodel = _pair(name)
    back = build(model)
    load_keras_into_torch(back, model, kmodel)
    back.eval()
    x = _input(model, _seed(name) + 2)
    _assert_close(_torch_outputs(back, x), _keras_outputs(kmodel, x), f"{name} keras->torch")


@pytest.mark.parametrize("name", ZOO)
def test_a_training_step_runs_in_keras(name):
    model, _, kmodel = _pair(name)
    kmodel.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    x = _input(model, _seed(name) + 3)
    ys = [np.zeros((2, *s), "float32") for s in model.output_shapes]
    before = [w.copy() for w in kmodel.get_weights()]
    loss = kmodel.train_on_batch(x, ys if len(ys) > 1 else ys[0])
    loss = loss[0] if isinstance(loss, (list, tuple)) else loss
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, kmodel.get_weights()))
    kmodel.set_weights(before)  # leave the cached model as the other tests expect it


# --- The conversion itself is what makes the outputs agree --------------------------------


def _flip(w):
    return w[:, :, ::-1, ::-1]


WRONG = {  # kind -> a plausible mistake in torch -> keras (weight, layer) -> keras kernel
    "conv": lambda w, la: w.transpose(3, 2, 1, 0),  # kh and kw swapped
    "deconv": lambda w, la: _flip(w).transpose(2, 3, 1, 0),  # a spatial flip
    "dwconv": lambda w, la: w.reshape(la.multiplier, -1, *w.shape[2:]).transpose(2, 3, 1, 0),
    # ^ channel c*m + j read as j*C + c
    "dense": lambda w, la: w.reshape(w.shape[::-1]),  # reshape for a transpose
}


WRONG_SPECS = {
    "conv": "input 7x6x3\nconv 5 3x3 same",
    "deconv": "input 5x4x3\ndeconv 4 3x3 stride=2 padding=1",
    "dwconv": "input 7x6x3\ndwconv 3x3 multiplier=2 same",
    "dense": "input 3x2x4\nflatten\ndense 5",
}


@pytest.mark.parametrize("kind", sorted(WRONG))
def test_a_wrong_conversion_is_caught(kind, monkeypatch):
    from cnnspec import convert
    from cnnspec.backends.keras import build

    model = cnnspec.compile_text(WRONG_SPECS[kind])
    net = _torch_net(model, 11)
    x = _input(model, 12)
    right = convert.to_keras
    layer = next(n.layer for n in model.nodes if n.kind == kind)

    def wrong(t, w):  # the kind's kernel (or dense matrix) turned the wrong way
        return WRONG[kind](w, layer) if t.torch == "weight" else right(t, w)

    kmodel = build(model)
    convert.load_torch_into_keras(kmodel, model, net.state_dict())
    _assert_close(_keras_outputs(kmodel, x), _torch_outputs(net, x), "right")
    monkeypatch.setattr(convert, "to_keras", wrong)
    convert.load_torch_into_keras(kmodel, model, net.state_dict())
    with pytest.raises(AssertionError):
        _assert_close(_keras_outputs(kmodel, x), _torch_outputs(net, x), "wrong")


# --- The convert command --------------------------------------------------------------------


def test_cli_converts_both_ways(tmp_path):
    import subprocess
    import sys

    from safetensors.numpy import load_file, save_file

    from cnnspec.backends.keras import build

    spec = tmp_path / "graph.cnn"
    spec.write_text(LAYER_SPECS["graph"])
    model, net, _ = _pair("graph")
    save_file({k: v.numpy() for k, v in net.state_dict().items()}, tmp_path / "w.safetensors")
    root = Path(__file__).resolve().parents[1]

    def cli(*args):
        r = subprocess.run(
            [sys.executable, "-m", "cnnspec", "convert", str(spec), *args],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        assert "Traceback" not in r.stderr
        return r.returncode, "cnnspec convert: error" in r.stderr

    assert cli(
        "--from",
        "torch",
        "--weights",
        str(tmp_path / "w.safetensors"),
        "-o",
        str(tmp_path / "k.weights.h5"),
    ) == (0, False)
    loaded = build(model)
    loaded.load_weights(tmp_path / "k.weights.h5")
    x = _input(model, 21)
    _assert_close(_keras_outputs(loaded, x), _torch_outputs(net, x), "cli torch->keras")

    assert cli(
        "--from",
        "keras",
        "--weights",
        str(tmp_path / "k.weights.h5"),
        "-o",
        str(tmp_path / "back.safetensors"),
    ) == (0, False)
    back = load_file(tmp_path / "back.safetensors")
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)

    assert cli(
        "--from",
        "torch",
        "--weights",
        str(tmp_path / "missing.pt"),
        "-o",
        str(tmp_path / "x.weights.h5"),
    ) == (1, True)
    wrong = tmp_path / "wrong.cnn"
    wrong.write_text(
        LAYER_SPECS["graph"].replace("conv 24 1x1 sigmoid", "conv 24 3x3 same sigmoid")
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnspec",
            "convert",
            str(wrong),
            "--from",
            "torch",
            "--weights",
            str(tmp_path / "w.safetensors"),
            "-o",
            str(tmp_path / "y.weights.h5"),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr and "conv4" in r.stderr
