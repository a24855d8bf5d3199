"""The scaled zoo spec against torchvision: specs/efficientnet.cnn at each of its scales b0..b7
has torchvision's efficientnet_bN state-dict layout (order and shapes), parameter and buffer
counts and batch-norm settings; at b0 and b5 (the two batch-norm settings) the network loaded
with torchvision's (randomised) weights gives torchvision's outputs at a small input; at b0
the shapes and MACs of every weighted layer agree at the full 224x224.

The hand-written specs of torchvision's newer CNNs (ConvNeXt-T, RegNetY-400MF, ShuffleNetV2
x1.0): state-dict order and shapes, parameter and buffer counts equal to torchvision's, and
outputs equal to torchvision's with its (randomised) weights at a small input."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from random_weights import randomise_torch
from test_zoo import torch_counts, torch_layout, torch_state, torch_trace, weighted

import cnnspec

torch = pytest.importorskip("torch")
tvm = pytest.importorskip("torchvision.models")

SPEC = Path(__file__).resolve().parent.parent / "specs" / "efficientnet.cnn"
SCALES = [f"b{i}" for i in range(8)]


@functools.cache
def _spec(scale: str, size: int | None = None) -> cnnspec.Model:
    text = SPEC.read_text()
    if size is not None:  # every scale's line at a small resolution (counts do not change)
        text = re.sub(r"input=\d+x\d+x3", f"input={size}x{size}x3", text)
    return cnnspec.compile_text(text, str(SPEC), scale)


@functools.cache
def _torchvision(scale: str):
    return getattr(tvm, f"efficientnet_{scale}")().eval()


@pytest.mark.parametrize("scale", SCALES)
def test_each_scale_has_torchvisions_layout_counts_and_batch_norm(scale):
    model, module = _spec(scale), _torchvision(scale)
    assert model.scale == scale
    assert torch_layout(model) == torch_state(module)
    assert (model.trainable, model.non_trainable) == torch_counts(module)
    bns = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    nodes = weighted(model, ("bn",))
    assert [n.layer.eps for n in nodes] == pytest.approx([m.eps for m in bns])
    assert [1 - n.layer.momentum for n in nodes] == pytest.approx([m.momentum for m in bns])
    # the classifier's dropout and the stochastic depth of the last block, as torchvision's
    drops = [m for m in module.modules() if isinstance(m, torch.nn.Dropout)]
    assert model.node("dropout1").layer.rate == pytest.approx(drops[-1].p)
    # (torchvision gives every block one; only the blocks with a shortcut use it)
    sd = [
        m.stochastic_depth.p
        for m in module.modules()
        if type(m).__name__ == "MBConv" and m.use_res_connect
    ]
    ours = [n.layer.rate for n in model.nodes if n.kind == "stochastic_depth"]
    assert ours == pytest.approx(sd)


def test_b0_shapes_and_macs_at_full_size():
    model = _spec("b0")
    assert model.input_shape == (224, 224, 3)
    got = torch_trace(_torchvision("b0"), 224, 224)
    assert [n.shape for n in weighted(model)] == [shape for shape, _ in got]
    assert model.macs == sum(macs for _, macs in got) == 385_814_752


@pytest.mark.parametrize("scale", ["b0", "b5"])
def test_outputs_equal_torchvisions_with_its_weights(scale):
    from cnnspec.backends.torch import build, load_torchvision_state_dict

    module = randomise_torch(_torchvision(scale), seed=5)
    model = _spec(scale, size=64)
    net = build(model).eval()
    load_torchvision_state_dict(net, model, module.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = module(x), net(x)
    assert want.std() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


# ---- hand-written specs of torchvision's newer CNNs ----------------------------------------

SPECS = SPEC.parent


def _convnext_state(state):
    """torchvision's ConvNeXt state_dict in the spec's layout: a block's layer_scale moved
    from before its layers (where CNBlock registers it) to after them (where it is applied),
    named `gamma`. For the layout comparison only: the weights load as they are."""
    out, held = {}, {}
    for key, value in state.items():
        owner, _, role = key.rpartition(".")
        if role == "layer_scale":
            held[owner] = value
            continue
        out[key] = value
        block = owner.partition(".block.")[0]
        if key.endswith(".block.5.bias") and block in held:
            out[f"{block}.gamma"] = held.pop(block)
    assert not held
    return out


def _same(state):
    return state


# spec file, torchvision builder, the state_dict as the spec lays it out (for the layout
# comparison; loading takes torchvision's own), small input side
MODERN = {
    "convnext_tiny": ("convnext_tiny", _convnext_state, 64),
    "regnety_400mf": ("regnet_y_400mf", _same, 64),
    "shufflenet_v2": ("shufflenet_v2_x1_0", _same, 64),
}
# torchvision's weights enum per spec: its metadata documents parameters and GFLOPs (MACs)
WEIGHTS = {
    "convnext_tiny": "ConvNeXt_Tiny_Weights",
    "regnety_400mf": "RegNet_Y_400MF_Weights",
    "shufflenet_v2": "ShuffleNet_V2_X1_0_Weights",
}


def _randomise(module, seed: int):
    """randomise_torch, and ConvNeXt's layer scales (C, 1, 1) off their 1e-6 start, which
    would make every block's body invisible next to its shortcut."""
    module = randomise_torch(module, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.25)
    return module


@functools.cache
def _modern(name: str, size: int | None = None) -> cnnspec.Model:
    path = SPECS / f"{name}.cnn"
    text = path.read_text()
    if size is not None:
        text = re.sub(r"^input \d+x\d+x3", f"input {size}x{size}x3", text, flags=re.MULTILINE)
    return cnnspec.compile_text(text, str(path))


@pytest.mark.parametrize("name", MODERN)
def test_modern_spec_has_torchvisions_layout_and_counts(name):
    from cnnspec.backends.torch import build

    builder, adapt, _ = MODERN[name]
    model, module = _modern(name), getattr(tvm, builder)().eval()
    assert model.input_shape == (224, 224, 3)
    assert (model.trainable, model.non_trainable) == torch_counts(module)
    ours = [
        (k.rsplit(".", 1)[1], tuple(v.shape))
        for k, v in build(model).state_dict().items()
        if not k.endswith("num_batches_tracked")
    ]
    theirs = [
        (k.rsplit(".", 1)[1], tuple(v.shape))
        for k, v in adapt(module.state_dict()).items()
        if not k.endswith("num_batches_tracked")
    ]
    assert ours == theirs
    # norm settings and stochastic depth rates, which no weight shape shows
    for kind, cls in (("bn", torch.nn.BatchNorm2d), ("layernorm", torch.nn.LayerNorm)):
        mods = [m for m in module.modules() if isinstance(m, cls)]
        assert [n.layer.eps for n in model.nodes if n.kind == kind] == pytest.approx(
            [m.eps for m in mods]
        )
    sd = [m.p for m in module.modules() if type(m).__name__ == "StochasticDepth"]
    assert [n.layer.rate for n in model.nodes if n.kind == "stochastic_depth"] == pytest.approx(sd)


@pytest.mark.parametrize("name", MODERN)
def test_modern_spec_cites_its_paper_and_documented_counts(name):
    text = (SPECS / f"{name}.cnn").read_text()
    header = text[: text.index("\nmodel ")]
    assert header.startswith("# ") and re.search(r"\((19|20)\d\d\)", header)
    assert "Layout: torchvision.models." in header
    model = _modern(name)
    assert model.name == name
    meta = getattr(tvm, WEIGHTS[name]).DEFAULT.meta  # metadata only: nothing downloaded
    assert model.trainable == meta["num_params"]
    assert round(model.macs / 1e9, 3) == meta["_ops"]


@pytest.mark.parametrize("name", ["regnety_400mf", "shufflenet_v2"])
def test_modern_spec_shapes_and_macs_at_full_size(name):
    # (ConvNeXt's Linear layers run on whole maps, which torch_trace counts as one pixel)
    model = _modern(name)
    got = torch_trace(getattr(tvm, MODERN[name][0])().eval(), 224, 224)
    assert [n.shape for n in weighted(model)] == [shape for shape, _ in got]
    assert model.macs == sum(macs for _, macs in got)


@pytest.mark.parametrize("name", MODERN)
def test_modern_spec_outputs_equal_torchvisions_with_its_weights(name):
    from cnnspec.backends.torch import build, load_torchvision_state_dict

    builder, _, size = MODERN[name]
    module = _randomise(getattr(tvm, builder)(), seed=7)
    model = _modern(name, size)
    net = build(model).eval()
    report = load_torchvision_state_dict(net, model, module.state_dict())  # as torchvision has it
    assert report.ok and not report.unexpected
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = module(x), net(x)
    assert want.std() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
