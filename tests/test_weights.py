"""cnnspec.weights: one home for tensor layouts, the flatten rule and matching.

Every loader answers alike: a torch model's dense layer after `flatten; rescale`, `flatten;
bn` or `reshape` gets its columns in the same order whether it arrives through the torch
backend's torchvision loader, a `transfer` section (torch or Keras), or convert."""

import numpy as np
import pytest

import cnnspec
from cnnspec.layers.base import REGISTRY, Layer
from cnnspec.weights import LAYOUTS, flat_sources
from cnnspec.weights.flatten import chw_to_hwc, hwc_order

torch = pytest.importorskip("torch")


def test_every_kind_with_parameters_has_a_layout():
    """A new layer kind that can hold parameters needs a row in cnnspec.weights.LAYOUTS."""
    with_params = sorted(
        kind for kind, cls in REGISTRY.items() if cls.count_params is not Layer.count_params
    )
    assert with_params, "no layer kind overrides count_params: the check would be empty"
    for kind in with_params:
        assert kind in LAYOUTS, f"layer kind {kind!r} has parameters but no weight layout"


def test_the_weights_home_imports_no_framework():
    import subprocess
    import sys

    code = (
        "import sys, cnnspec.weights, cnnspec.weights.fingerprint;"
        "print([m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_hwc_order_takes_each_value_from_its_chw_place():
    h, w, c = 2, 3, 4
    chw = np.arange(h * w * c).reshape(c, h, w)  # value = its C,H,W index
    expected = chw.transpose(1, 2, 0).reshape(-1)  # the same values laid out H,W,C
    assert hwc_order((h, w, c)) == expected.tolist()
    dense = np.stack([np.arange(24), -np.arange(24)])  # (out, in): columns indexed C,H,W
    assert chw_to_hwc(dense, (h, w, c), 1)[0].tolist() == expected.tolist()
    assert chw_to_hwc(dense, (1, 1, 24), 1) is None  # after a global pool: nothing moves


# (spec tail after a 4x4x8 map, the torch model's layers after its C,H,W flatten)
SPECS = {
    "rescale": ("flatten\nrescale 2\ndense 10", lambda: [_Scale(2.0)]),
    "bn": ("flatten\nbn\ndense 10", lambda: [torch.nn.BatchNorm1d(128)]),
    "reshape": ("reshape 128\ndense 10", list),
}
HEAD = "input 8x8x3\nconv 8 3x3 same\nmaxpool 2\n"


class _Scale(torch.nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x * self.k


@pytest.mark.parametrize("case", sorted(SPECS))
def test_the_flatten_rule_finds_the_map(case):
    model = cnnspec.compile_text(HEAD + SPECS[case][0])
    dense = model.nodes[-1]
    assert flat_sources(model)[dense.inputs[0]] == (4, 4, 8)


def _reference(case, seed=0):
    """A torch model as torchvision writes one: NCHW, torch.flatten (C, H, W order)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        *SPECS[case][1](),
        torch.nn.Linear(128, 10),
    )
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):  # statistics that are not the identity
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-1, 1)
    return net.eval()


def _outputs(case):
    ref = _reference(case)
    x = np.random.default_rng(1).standard_normal((2, 8, 8, 3)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    return ref, x, want


def _torch_out(net, x):
    with torch.no_grad():
        return net.eval()(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()


def _keras_out(kmodel, x):
    return np.asarray(kmodel(x, training=False))


@pytest.mark.parametrize("case", sorted(SPECS))
def test_torchvision_order_loads_as_the_torch_model_computes(case):
    from cnnspec.backends.torch import build, load_torchvision_state_dict

    ref, x, want = _outputs(case)
    model = cnnspec.compile_text(HEAD + SPECS[case][0])
    net = build(model, logits=True)
    report = load_torchvision_state_dict(net, model, ref.state_dict())
    assert report.ok and report.reordered  # the dense columns (and bn) were turned
    np.testing.assert_allclose(_torch_out(net, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "keras"])
@pytest.mark.parametrize("case", sorted(SPECS))
def test_a_transfer_source_loads_the_same_columns(case, backend, tmp_path):
    from cnnspec.transfer import prepare

    ref, x, want = _outputs(case)
    torch.save(ref.state_dict(), tmp_path / "ref.pth")
    model = cnnspec.compile_text(
        HEAD + SPECS[case][0] + '\ntransfer {\n  source "ref.pth"\n}\n', str(tmp_path / "net.cnn")
    )
    if backend == "torch":
        from cnnspec.backends.torch import build

        net = build(model, logits=True)
        state = prepare(net, model, "torch")
        got = _torch_out(net, x)
    else:
        from cnnspec.backends.keras import build

        net = build(model)
        state = prepare(net, model, "keras")
        got = _keras_out(net, x)
    assert state.report.ok and state.report.method == "order" and state.report.reordered
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", sorted(SPECS))
def test_convert_torch_keras_torch_keeps_the_outputs(case):
    from cnnspec import convert
    from cnnspec.backends import keras as kb
    from cnnspec.backends.torch import build, load_torchvision_state_dict

    ref, x, want = _outputs(case)
    model = cnnspec.compile_text(HEAD + SPECS[case][0])
    net = build(model, logits=True)
    load_torchvision_state_dict(net, model, ref.state_dict())
    kmodel = kb.build(model)
    convert.load_torch_into_keras(kmodel, model, net.state_dict())
    np.testing.assert_allclose(_keras_out(kmodel, x), want, rtol=1e-4, atol=1e-4)
    back = build(model, logits=True)
    convert.load_keras_into_torch(back, model, kmodel)
    np.testing.assert_allclose(_torch_out(back, x), want, rtol=1e-5, atol=1e-5)
