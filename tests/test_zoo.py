"""The model zoo in specs/ is exact: each spec against the framework model it follows.

For a torchvision layout the spec must give the same parameters, the same running statistics,
the same weight tensors in state_dict order (the PyTorch backend maps pretrained weights by
that order), the same batch-norm settings, the same feature-map shapes and the same MACs as
forward hooks measure on the framework's own model. Keras layouts are held to count_params()
and to the multiset of their weight shapes (Keras builds a projection shortcut before the
residual body, so its order differs). Small classics are compared with torch models built here
from nn layers. Every framework model is built once per test session.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import cnnspec

SPECS = Path(__file__).resolve().parent.parent / "specs"
ZOO = [
    "alexnet",
    "dcgan_discriminator",
    "dcgan_generator",
    "efficientnet_b0",
    "googlenet",
    "lenet5",
    "mobilenet_v2",
    "resnet18",
    "resnet50",
    "resnet50_keras",
    "unet",
    "vae",
    "vae_decoder",
    "vgg16",
    "yolo_tiny",
]

# spec -> (torchvision builder, its arguments)
TORCHVISION = {
    "alexnet": ("alexnet", {}),
    "vgg16": ("vgg16", {}),
    "resnet18": ("resnet18", {}),
    "resnet50": ("resnet50", {}),
    "mobilenet_v2": ("mobilenet_v2", {}),
    "googlenet": ("googlenet", {"aux_logits": False, "init_weights": False}),
    "efficientnet_b0": ("efficientnet_b0", {}),
}
# MACs at 224x224 measured with forward hooks (shared/REFERENCE.md), asserted on both sides.
REFERENCE_MACS = {"resnet50": 4_089_184_256, "vgg16": 15_470_264_320, "mobilenet_v2": 300_774_272}


@functools.cache
def spec(name: str) -> cnnspec.Model:
    return cnnspec.compile_file(SPECS / f"{name}.cnn")


# --- every spec ------------------------------------------------------------------------------


def test_zoo_is_complete():
    assert set(ZOO) <= {p.stem for p in SPECS.glob("*.cnn")}


def test_every_spec_passes_cli_check():
    files = sorted(str(p) for p in SPECS.glob("*.cnn"))
    run = subprocess.run(
        [sys.executable, "-m", "cnnspec", "check", *files],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count(": ok:") == len(files)


@pytest.mark.parametrize("name", ZOO)
def test_spec_cites_its_paper_and_layout(name):
    text = (SPECS / f"{name}.cnn").read_text()
    header = text[: text.index("\nmodel ")]
    assert header.startswith("# "), "a spec starts with a comment"
    assert re.search(r"\((19|20)\d\d\)", header), "the comment cites authors (year)"
    assert "Layout:" in header, "the comment says which framework layout it follows"
    assert spec(name).name == name


# --- the spec side of the comparisons ----------------------------------------------------------


def torch_layout(model: cnnspec.Model) -> list[tuple[str, tuple]]:
    """The state_dict entries (last key part, shape) a torch module per node would have.

    torch conv weights are OIHW with I = in_channels/groups (depthwise: I = 1); a transposed
    conv's weight is (in, out, kh, kw); a linear weight is (out, in); batch norm has weight,
    bias, running_mean, running_var.
    """
    entries = []
    for node in model.nodes[1:]:
        layer, cin = node.layer, model.node(node.inputs[0]).shape[-1]
        if node.kind == "conv":
            weight = (layer.filters, cin // layer.groups, *layer.kernel)
        elif node.kind == "dwconv":
            weight = (node.shape[-1], 1, *layer.kernel)
        elif node.kind == "deconv":
            weight = (cin, layer.filters, *layer.kernel)
        elif node.kind == "dense":
            weight = (layer.units, cin)
        elif node.kind == "bn":
            c = node.shape[-1]
            entries += [
                ("weight", (c,)),
                ("bias", (c,)),
                ("running_mean", (c,)),
                ("running_var", (c,)),
            ]
            continue
        else:
            assert node.trainable == 0, f"{node.kind} has weights this test does not map"
            continue
        entries.append(("weight", weight))
        if layer.bias:
            entries.append(("bias", (node.shape[-1],)))
    return entries


def keras_shapes(model: cnnspec.Model) -> Counter:
    """The multiset of Keras weight shapes: kernels HWIO, depthwise (kh, kw, in, 1), dense
    (in, out), batch norm gamma, beta, moving mean and variance."""
    shapes = Counter()
    for node in model.nodes[1:]:
        layer, cin = node.layer, model.node(node.inputs[0]).shape[-1]
        if node.kind == "conv":
            shapes[(*layer.kernel, cin // layer.groups, layer.filters)] += 1
        elif node.kind == "dwconv":
            shapes[(*layer.kernel, cin, layer.multiplier)] += 1
        elif node.kind == "dense":
            shapes[(cin, layer.units)] += 1
        elif node.kind == "bn":
            shapes[(cin,)] += 4
            continue
        else:
            continue
        if layer.bias:
            shapes[(node.shape[-1],)] += 1
    return shapes


def weighted(model: cnnspec.Model, kinds=("conv", "dwconv", "dense", "deconv")):
    return [n for n in model.nodes if n.kind in kinds]


# --- torch side --------------------------------------------------------------------------------


@functools.cache
def torchvision_model(name: str):
    torchvision = pytest.importorskip("torchvision")
    builder, kwargs = TORCHVISION[name]
    return getattr(torchvision.models, builder)(weights=None, **kwargs).eval()


def torch_state(module) -> list[tuple[str, tuple]]:
    return [
        (key.rsplit(".", 1)[1], tuple(t.shape))
        for key, t in module.state_dict().items()
        if not key.endswith("num_batches_tracked")
    ]


def torch_counts(module) -> tuple[int, int]:
    stats = sum(
        b.numel()
        for key, b in module.named_buffers()
        if key.endswith(("running_mean", "running_var"))
    )
    return sum(p.numel() for p in module.parameters()), stats


def torch_trace(module, height: int, width: int, channels: int = 3):
    """Forward one sample; per weighted module in registration order: output shape (HWC) and
    MACs (Conv2d: out_h*out_w*out_c*kh*kw*in_c/groups; ConvTranspose2d: in_h*in_w*in_c*kh*kw*
    out_c; Linear: in*out), the definition cnnspec uses (no bias adds)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    seen = {}

    def hook(mod, args, out):
        x = args[0]
        if isinstance(mod, nn.Linear):
            seen[mod] = ((out.shape[-1],), mod.in_features * mod.out_features)
            return
        kh, kw = mod.kernel_size
        _, oc, oh, ow = out.shape
        if isinstance(mod, nn.ConvTranspose2d):
            macs = x.shape[1] * x.shape[2] * x.shape[3] * kh * kw * oc
        else:
            macs = oh * ow * oc * kh * kw * x.shape[1] // mod.groups
        seen[mod] = ((oh, ow, oc), macs)

    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    mods = [m for m in module.modules() if isinstance(m, kinds)]
    handles = [m.register_forward_hook(hook) for m in mods]
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(1, channels, height, width))
    finally:
        for h in handles:
            h.remove()
    return [seen[m] for m in mods]


def assert_matches_torch(model: cnnspec.Model, module, trace=True):
    assert torch_layout(model) == torch_state(module)
    assert (model.trainable, model.non_trainable) == torch_counts(module)
    if trace:
        h, w, c = model.input_shape
        got = torch_trace(module, h, w, c)
        assert [n.shape for n in weighted(model)] == [shape for shape, _ in got]
        assert model.macs == sum(macs for _, macs in got)


# --- torchvision layouts -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_weights_in_state_dict_order(name):
    model, module = spec(name), torchvision_model(name)
    assert torch_layout(model) == torch_state(module)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_parameter_counts(name):
    trainable, stats = torch_counts(torchvision_model(name))
    assert spec(name).trainable == trainable
    assert spec(name).non_trainable == stats


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_shapes_and_macs_at_224(name):
    model = spec(name)
    got = torch_trace(torchvision_model(name), 224, 224)
    assert [n.shape for n in weighted(model)] == [shape for shape, _ in got]
    assert model.macs == sum(macs for _, macs in got)
    if name in REFERENCE_MACS:
        assert model.macs == REFERENCE_MACS[name]


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_batch_norm_settings(name):
    nn = pytest.importorskip("torch").nn
    bns = [m for m in torchvision_model(name).modules() if isinstance(m, nn.BatchNorm2d)]
    nodes = weighted(spec(name), ("bn",))
    assert [n.layer.eps for n in nodes] == pytest.approx([m.eps for m in bns])
    # Keras momentum keeps that fraction of the old statistics; torch's is the new fraction.
    assert [1 - n.layer.momentum for n in nodes] == pytest.approx([m.momentum for m in bns])


def test_alexnet_adaptive_pool_is_the_identity_at_224():
    torch = pytest.importorskip("torch")
    module = torchvision_model("alexnet")
    with torch.no_grad():
        features = module.features(torch.zeros(1, 3, 224, 224))
    flatten = next(n for n in spec("alexnet").nodes if n.kind == "flatten")
    before = spec("alexnet").node(flatten.inputs[0]).shape
    assert (features.shape[2], features.shape[3], features.shape[1]) == before
    assert tuple(module.avgpool.output_size) == before[:2]


# --- keras.applications layouts ------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_apps():
    keras = pytest.importorskip("keras")
    apps = keras.applications
    return {
        "vgg16": apps.VGG16(weights=None),
        "resnet50_keras": apps.ResNet50(weights=None),
        "mobilenet_v2": apps.MobileNetV2(weights=None),
    }


def _size(weights) -> int:
    return sum(int(w.numpy().size) for w in weights)


@pytest.mark.parametrize("name", ["vgg16", "resnet50_keras", "mobilenet_v2"])
def test_keras_counts_and_weight_shapes(keras_apps, name):
    net, model = keras_apps[name], spec(name)
    assert model.params == net.count_params()
    assert model.trainable == _size(net.trainable_weights)
    assert model.non_trainable == _size(net.non_trainable_weights)
    assert keras_shapes(model) == Counter(tuple(w.shape) for w in net.weights)


def test_keras_resnet50_batch_norm_eps(keras_apps):
    keras = pytest.importorskip("keras")
    eps = {
        layer.epsilon
        for layer in keras_apps["resnet50_keras"].layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert eps == {n.layer.eps for n in weighted(spec("resnet50_keras"), ("bn",))} == {1.001e-5}


# --- classics built here from nn layers ----------------------------------------------------------


def test_lenet5():
    nn = pytest.importorskip("torch").nn
    net = nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.Tanh(),
        nn.Linear(120, 84),
        nn.Tanh(),
        nn.Linear(84, 10),
    )
    model = spec("lenet5")
    assert_matches_torch(model, net)
    assert model.params == 61_706
    assert [n.params for n in weighted(model)] == [156, 2_416, 48_120, 10_164, 850]


def _torch_unet():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    def double(cin, f):
        return nn.Sequential(
            nn.Conv2d(cin, f, 3, padding=1), nn.ReLU(), nn.Conv2d(f, f, 3, padding=1), nn.ReLU()
        )

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [64, 128, 256, 512]
            self.down = nn.ModuleList(double(c, f) for c, f in zip([1, *widths], widths))
            self.bottom = double(512, 1024)
            self.up = nn.ModuleList()
            for f in reversed(widths):
                self.up.append(nn.ConvTranspose2d(2 * f, f, 2, stride=2))
                self.up.append(double(2 * f, f))
            self.head = nn.Conv2d(64, 2, 1)

        def forward(self, x):
            skips = []
            for block in self.down:
                x = block(x)
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = self.bottom(x)
            for i in range(0, len(self.up), 2):
                x = torch.cat([self.up[i](x), skips.pop()], dim=1)
                x = self.up[i + 1](x)
            return self.head(x).softmax(dim=1)

    return UNet()


def test_unet():
    net, model = _torch_unet(), spec("unet")
    assert model.params == 31_030_658
    assert model.output_shapes == [(256, 256, 2)]
    assert_matches_torch(model, net, trace=False)
    # shapes and MACs scale with the input: trace a small one against the same spec at 32x32
    text = (SPECS / "unet.cnn").read_text().replace("input 256x256x1", "input 32x32x1")
    small = cnnspec.compile_text(text)
    assert_matches_torch(small, net)
    assert model.macs == small.macs * 64


def test_dcgan_generator_is_the_pytorch_tutorial_one():
    nn = pytest.importorskip("torch").nn
    nz, ngf = 100, 64
    net = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
        nn.BatchNorm2d(ngf * 8),
        nn.ReLU(),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 4),
        nn.ReLU(),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf * 2),
        nn.ReLU(),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf),
        nn.ReLU(),
        nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False),
        nn.Tanh(),
    )
    model = spec("dcgan_generator")
    assert_matches_torch(model, net)
    assert model.output_shapes == [(64, 64, 3)]
    assert model.nodes[-1].layer.activation == "tanh"


def test_dcgan_discriminator_is_the_pytorch_tutorial_one():
    nn = pytest.importorskip("torch").nn
    ndf = 64
    net = nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 4),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 8),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
        nn.Sigmoid(),
    )
    model = spec("dcgan_discriminator")
    assert_matches_torch(model, net)
    assert model.output_shapes == [(1,)]
    slopes = [n.layer.slope for n in model.nodes if n.kind == "activation"]
    assert slopes == [0.2] * 4


def test_yolo_tiny_heads():
    nn = pytest.importorskip("torch").nn
    layers = []
    for cin, f in zip([3, 16, 32, 64, 128], [16, 32, 64, 128, 256]):
        layers += [
            nn.Conv2d(cin, f, 3, padding=1, bias=False),
            nn.BatchNorm2d(f),
            nn.LeakyReLU(0.1),
        ]
        layers += [nn.MaxPool2d(2)] if f < 256 else []
    net = nn.Sequential(
        *layers, nn.Flatten(), nn.Linear(4 * 4 * 256, 256), nn.LeakyReLU(0.1), nn.Dropout(0.5)
    )
    net.present, net.box = nn.Linear(256, 1), nn.Linear(256, 4)  # registered after the trunk
    model = spec("yolo_tiny")
    assert_matches_torch(model, net, trace=False)
    assert [n.rsplit(".", 1)[-1] for n in model.outputs] == ["present", "box"]
    assert model.output_shapes == [(1,), (4,)]
    assert all(model.node(o).layer.activation == "sigmoid" for o in model.outputs)


def test_vae_encoder_and_decoder_meet_at_the_latent():
    nn = pytest.importorskip("torch").nn
    encoder = nn.Sequential(
        nn.Conv2d(1, 32, 3, 2, 1),
        nn.Conv2d(32, 64, 3, 2, 1),
        nn.Linear(7 * 7 * 64, 16),
        nn.Linear(16, 16),
        nn.Linear(16, 16),
    )
    decoder = nn.Sequential(
        nn.Linear(16, 7 * 7 * 64),
        nn.ConvTranspose2d(64, 64, 3, 2, 1, output_padding=1),
        nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1),
        nn.ConvTranspose2d(32, 1, 3, 1, 1),
    )
    enc, dec = spec("vae"), spec("vae_decoder")
    assert_matches_torch(enc, encoder, trace=False)
    assert_matches_torch(dec, decoder, trace=False)
    assert [n.rsplit(".", 1)[-1] for n in enc.outputs] == ["mean", "logvar"]
    assert enc.output_shapes == [(16,), (16,)] and dec.input_shape == (16,)
    assert dec.output_shapes == [enc.input_shape] == [(28, 28, 1)]
