"""Transfer learning from the spec: sources found offline, every tensor loaded, features equal to
the framework's own model, freezing counted in the summary exactly as the framework counts it.

The sources are torchvision's resnet18 and keras.applications' VGG16 with random weights
(weights=None), saved in the frameworks' own file formats and cache layout under a tmp dir
(TORCH_HOME / KERAS_HOME). Small inputs: counts do not depend on the image size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import cnnspec
from cnnspec.errors import SpecErrors

try:  # torchvision crashes when imported after TensorFlow: load it first in this process
    import torchvision  # noqa: F401
except ImportError:
    pass

SPECS = Path(__file__).resolve().parent.parent / "specs"
RESNET_FILE = "resnet18-f37072fd.pth"
VGG_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


def spec(name: str, size: str, transfer: str, path: str | None = None):
    text = (SPECS / f"{name}.cnn").read_text().replace("224x224x3", size)
    return cnnspec.compile_text(f"{text}\ntransfer {{\n{transfer}\n}}\n", path)


def resnet_spec(freeze: str = "freeze none", source: str = "torchvision:resnet18", extra=""):
    return spec(
        "resnet18",
        "32x32x3",
        f"  source {source}\n  {freeze}\n{extra}  head {{ gap; dense 10 softmax }}",
    )


def vgg_spec(freeze: str = "freeze none", source: str = "keras:VGG16"):
    return spec(
        "vgg16", "32x32x3", f"  source {source}\n  {freeze}\n  head {{ gap; dense 10 softmax }}"
    )


def backbone_ir(model):
    """The IR up to the cut: the features the head reads."""
    head = set(model.transfer.head)
    return model.model_copy(
        update={
            "nodes": [n for n in model.nodes if n.name not in head],
            "outputs": [model.transfer.head_at],
            "transfer": None,
        }
    )


# --- the framework's own models, saved where the framework keeps them ------------------------


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    home = tmp_path_factory.mktemp("torch_home")
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # statistics that are not 0/1, so loading them is visible
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(ref.state_dict(), home / "hub" / "checkpoints" / RESNET_FILE)
    return home, ref


@pytest.fixture
def torch_env(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home[0]))
    return torch_home


@pytest.fixture(scope="module")
def keras_home(tmp_path_factory):
    keras = pytest.importorskip("keras")
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    home = tmp_path_factory.mktemp("keras_home")
    keras.utils.set_random_seed(0)
    ref = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    (home / "models").mkdir()
    # keras.applications' own .h5 layout (layer_names / weight_names), as it downloads them
    with h5py.File(home / "models" / VGG_FILE, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    return home, ref


@pytest.fixture
def keras_env(keras_home, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(keras_home[0]))
    return keras_home


def torch_features(model, net):

    from cnnspec.backends.torch import build

    feat = build(backbone_ir(model))
    feat.load_state_dict(net.state_dict(), strict=False)
    return feat.eval()


def keras_features(model, net):
    import keras

    from cnnspec.backends.keras import keras_name

    return keras.Model(net.input, net.get_layer(keras_name(model.transfer.head_at)).output)


# --- the IR: freeze strategies decide on names, the summary counts them ----------------------

SMALL = """
input 16x16x3
block stage(f) { conv f 3x3 same nobias; bn; relu }
layer1 = stage 4
layer2 = stage 8
layer3 = stage 8
gap
dense 10 softmax
transfer {
  source "ckpt.safetensors"
  %s
  head { gap; dense 3 softmax }
}
"""


@pytest.mark.parametrize(
    ("freeze", "frozen"),
    [
        ("freeze none", []),
        (
            "freeze all",
            [
                "layer1.conv1",
                "layer1.bn1",
                "layer2.conv1",
                "layer2.bn1",
                "layer3.conv1",
                "layer3.bn1",
            ],
        ),
        ("freeze first 3", ["layer1.conv1", "layer1.bn1", "layer2.conv1"]),
        ("freeze until layer2", ["layer1.conv1", "layer1.bn1", "layer2.conv1", "layer2.bn1"]),
        ('freeze until "layer1.conv1"', ["layer1.conv1"]),
        ('freeze pattern "*.bn*"', ["layer1.bn1", "layer2.bn1", "layer3.bn1"]),
    ],
)
def test_freeze_strategies_mark_nodes_and_move_counts(freeze, frozen):
    plain = cnnspec.compile_text(SMALL % "freeze none")
    model = cnnspec.compile_text(SMALL % freeze)
    assert [n.name for n in model.nodes if n.frozen] == frozen
    moved = sum(plain.node(name).trainable for name in frozen)
    assert model.trainable == plain.trainable - moved
    assert model.non_trainable == plain.non_trainable + moved
    assert model.params == plain.params
    assert "head.dense1" not in frozen and model.node("head.dense1").trainable == 3 * 8 + 3
    # the IR keeps the split through JSON, and validate accepts it
    from cnnspec.validate import check_graph

    again = cnnspec.ir.Model.model_validate_json(model.to_json())
    assert again == model and check_graph(again) == []


def test_summary_shows_frozen_layers_and_counts(capsys, tmp_path):
    from cnnspec.cli import main

    path = tmp_path / "net.cnn"
    path.write_text(SMALL % "freeze until layer2")
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "layer2.bn1" in out
        and "bn (frozen)" in out
        and "frozen layers: 4 (transfer: freeze until" in out
    )
    model = cnnspec.compile_file(path)
    assert f"trainable params: {model.trainable:,}" in out
    assert main(["summary", str(path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["trainable_params"] == model.trainable
    assert [x["name"] for x in data["layers"] if x["frozen"]][-1] == "layer2.bn1"


@pytest.mark.parametrize(
    ("freeze", "message", "line"),
    [
        ("freeze until layer9", "no layer or block is called 'layer9'", 11),
        ("freeze first 7", "the backbone has 6 parameterised layers", 11),
        ('freeze pattern "block*"', "matches no layer", 11),
    ],
)
def test_freeze_errors_point_at_the_freeze_line(freeze, message, line):
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_text(SMALL % freeze)
    err = info.value.errors[0]
    assert err.code == "E506" and message in err.message and err.span.line == line


def test_head_at_takes_a_layer_name():
    model = cnnspec.compile_text(
        (SMALL % "freeze all").replace("head {", 'head at="layer2.relu1" {')
    )
    assert model.transfer.head_at == "layer2.relu1"
    assert "layer3.conv1" not in [n.name for n in model.nodes]
    assert [n.name for n in model.nodes if n.frozen][-1] == "layer2.bn1"


# --- missing files: the error names the file and the folder, nothing is downloaded -----------


def test_missing_torchvision_file_names_it(tmp_path, monkeypatch):
    from cnnspec.backends.torch import build
    from cnnspec.transfer import prepare

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = resnet_spec()
    with pytest.raises(SpecErrors) as info:
        prepare(build(model), model)
    err = info.value.errors[0]
    assert err.code == "E411" and RESNET_FILE in err.message
    assert err.expected == str(tmp_path / "hub" / "checkpoints" / RESNET_FILE)
    assert str(tmp_path / "hub" / "checkpoints") in err.hint
    text = (SPECS / "resnet18.cnn").read_text()
    assert err.span.line == text.count("\n") + 3  # the 'source' line


def test_torchvision_file_name_comes_from_the_weights_enum():
    tvm = pytest.importorskip("torchvision.models")
    from cnnspec.transfer.sources import torchvision_file

    for name in ("resnet18", "vgg16", "mobilenet_v2"):
        url = tvm.get_model_weights(name).DEFAULT.url
        assert torchvision_file(name) == url.rsplit("/", 1)[-1]
    with pytest.raises(Exception, match="no model 'resnet81'") as info:
        torchvision_file("resnet81")
    assert "resnet18" in info.value.hint


def test_keras_file_names_match_keras_applications():
    pytest.importorskip("keras")
    from keras.src.applications import vgg16, vgg19

    from cnnspec.transfer.sources import keras_files

    for module, name in ((vgg16, "VGG16"), (vgg19, "VGG19")):
        assert keras_files(name) == (
            module.WEIGHTS_PATH.rsplit("/", 1)[-1],
            module.WEIGHTS_PATH_NO_TOP.rsplit("/", 1)[-1],
        )


def test_missing_keras_file_names_it(tmp_path, monkeypatch):
    from cnnspec.transfer.sources import resolve

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(Exception) as info:
        resolve("keras:VGG16")
    assert info.value.code == "E411" and VGG_FILE in info.value.message
    assert info.value.expected == str(tmp_path / "models" / VGG_FILE)


def test_missing_file_through_cnnspec_train(tmp_path, monkeypatch, capsys):
    """The CLI reports the missing file as a located error, exit 1, no traceback."""
    from cnnspec.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    path = tmp_path / "net.cnn"
    path.write_text(
        (SMALL % "freeze all")
        .replace('"ckpt.safetensors"', "torchvision:resnet18")
        .replace("input 16x16x3", "input 8x8x3")
        .replace("dense 3 ", "dense 10 ")
    )
    code = main(
        ["train", str(path), "--data", "digits", "--out", str(tmp_path / "run"), "--epochs", "1"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "E411" in err and RESNET_FILE in err and "Traceback" not in err
    assert f"{path}:10:3" in err


# --- torch: torchvision's resnet18 ----------------------------------------------------------


def test_torchvision_resnet18_loads_every_tensor_and_matches(torch_env):
    import torch

    from cnnspec.backends.torch import build
    from cnnspec.transfer import prepare

    _, ref = torch_env
    model = resnet_spec()
    net = build(model)
    state = prepare(net, model)
    report = state.report
    expected = [
        k
        for k in ref.state_dict()
        if not k.endswith("num_batches_tracked") and not k.startswith("fc.")
    ]
    assert len(report.matched) == len(expected) == 100
    assert [s for _, s in report.matched] == expected
    assert report.missing == [] and report.mis_shaped == []
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]  # replaced by the head
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = torch.nn.Sequential(*list(ref.children())[:-2])(x)
        got = torch_features(model, net)(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=0)


FREEZES = [
    "freeze none",
    "freeze all",
    "freeze first 5",
    "freeze until layer2",
    'freeze pattern "layer1.*"',
    "freeze until layer3 bn=train",
]


@pytest.mark.parametrize("freeze", FREEZES)
def test_torch_freeze_counts_and_a_training_step(torch_env, freeze):
    import torch

    from cnnspec.backends.torch import build
    from cnnspec.transfer import prepare

    model = resnet_spec(freeze)
    net = build(model, logits=True)
    state = prepare(net, model)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == model.trainable
    before = {k: v.clone() for k, v in net.state_dict().items()}
    paths = state.adapter.paths
    opt = torch.optim.SGD(state.param_groups(0.1), lr=0.1)
    net.train()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    after = net.state_dict()
    bn_train = "bn=train" in freeze
    for node in model.nodes:
        if node.name not in paths or not (node.trainable or node.frozen):
            continue
        prefix = paths[node.name] + "."
        for key in (k for k in after if k.startswith(prefix)):
            same = torch.equal(before[key], after[key])
            stat = "running" in key or "num_batches" in key
            if node.frozen and not (stat and bn_train):
                assert same, f"{key} of a frozen layer changed"
            elif not stat or not node.frozen:
                assert not same, f"{key} of a trainable layer did not change"
            else:
                assert not same, f"{key}: bn=train updates the statistics"


def test_torch_unfreeze_at_and_backbone_lr(torch_env):
    from cnnspec.backends.torch import build
    from cnnspec.transfer import prepare

    model = resnet_spec("freeze all unfreeze_at=2 backbone_lr=0.001")
    net = build(model)
    state = prepare(net, model)
    groups = state.param_groups(0.1)
    assert [g["lr"] for g in groups] == [0.001, 0.1]
    assert sum(p.numel() for p in groups[1]["params"]) == model.trainable  # the head
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in net.parameters()
    )
    assert state.epoch_end(1) is False
    assert sum(p.requires_grad for p in net.parameters()) == 2
    assert state.epoch_end(2) is True
    assert all(p.requires_grad for p in net.parameters())
    net.train()
    assert all(m.training for m in net.modules())  # BN hooks removed with the freeze
    net(__import__("torch").rand(2, 3, 32, 32))
    assert all(m.training for m in net.modules())


def test_strict_load_refuses_a_different_layout_and_partial_loads_the_rest(torch_env):
    from cnnspec.backends.torch import build
    from cnnspec.transfer import prepare

    text = (SPECS / "resnet18.cnn").read_text().replace("224x224x3", "32x32x3")
    text = text.replace("layer4 = stage 512 2 stride=2", "layer4 = stage 256 2 stride=2")
    head = "  head { gap; dense 10 softmax }\n}\n"
    model = cnnspec.compile_text(text + "transfer {\n  source torchvision:resnet18\n" + head)
    with pytest.raises(SpecErrors) as info:
        prepare(build(model), model)
    err = info.value.errors[0]
    assert err.code == "E413" and "mis-shaped" in err.message
    assert (
        "layer4.basic1.conv1.weight 256x256x3x3 <- layer4.0.conv1.weight 512x256x3x3" in err.message
    )
    partial = cnnspec.compile_text(
        text + "transfer {\n  source torchvision:resnet18\n  partial\n" + head
    )
    state = prepare(build(partial), partial)
    assert len(state.report.matched) == 75 and len(state.report.mis_shaped) == 25


# --- Keras: keras.applications' VGG16 --------------------------------------------------------


def test_keras_vgg16_loads_every_tensor_and_matches(keras_env):
    from cnnspec.backends.keras import build
    from cnnspec.transfer import prepare

    _, ref = keras_env
    model = vgg_spec()
    net = build(model)
    state = prepare(net, model)
    assert len(state.report.matched) == len(ref.weights) == 26
    assert state.report.missing == state.report.unexpected == state.report.mis_shaped == []
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    got = keras_features(model, net)(x).numpy()
    want = ref(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "freeze",
    [
        "freeze none",
        "freeze all",
        "freeze first 4",
        "freeze until stage2",
        'freeze pattern "stage1.*"',
    ],
)
def test_keras_freeze_counts_and_a_training_step(keras_env, freeze):
    import keras
    import tensorflow as tf

    from cnnspec.backends.keras import build, keras_name
    from cnnspec.transfer import prepare

    model = vgg_spec(freeze)
    net = build(model)
    prepare(net, model)
    assert sum(int(np.prod(v.shape)) for v in net.trainable_weights) == model.trainable
    before = {v.path: v.numpy().copy() for v in net.weights}
    opt = keras.optimizers.SGD(0.1)
    x = np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32)
    y = np.array([0, 1, 2, 3])
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, net(x, training=True))
    variables = net.trainable_variables
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    for node in model.nodes:
        if not (node.trainable or node.frozen):
            continue
        for v in net.get_layer(keras_name(node.name)).weights:
            same = np.array_equal(before[v.path], v.numpy())
            assert same == node.frozen, f"{v.path}: frozen={node.frozen}, unchanged={same}"


# --- across frameworks ------------------------------------------------------------------------


def test_torchvision_weights_in_the_keras_backend(torch_env):
    import torch

    from cnnspec.backends.keras import build
    from cnnspec.transfer import prepare

    _, ref = torch_env
    model = resnet_spec("freeze all")
    net = build(model)
    state = prepare(net, model)
    assert len(state.report.matched) == 100 and state.report.mis_shaped == []
    assert sum(int(np.prod(v.shape)) for v in net.trainable_weights) == model.trainable
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    got = keras_features(model, net)(x).numpy()
    with torch.no_grad():
        want = (
            torch.nn.Sequential(*list(ref.children())[:-2])(torch.from_numpy(x).permute(0, 3, 1, 2))
            .permute(0, 2, 3, 1)
            .numpy()
        )
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_keras_applications_weights_in_the_torch_backend(keras_env):
    import torch

    from cnnspec.backends.torch import build
    from cnnspec.transfer import prepare

    _, ref = keras_env
    model = vgg_spec("freeze until stage3")
    net = build(model)
    prepare(net, model)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == model.trainable
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    with torch.no_grad():
        got = torch_features(model, net)(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), ref(x).numpy(), atol=1e-4, rtol=0)


# --- checkpoints written by cnnspec: by name (torch) and by kind (Keras 3 files) --------------

CNN = """
input 12x12x3
conv 8 3x3 same nobias; bn; relu; pool 2
conv 16 3x3 same; relu
flatten
dense 7 softmax
"""


def _source_model(tmp_path):
    return cnnspec.compile_text(CNN)


def _with_source(source: str, freeze: str = "freeze all", path=None):
    return cnnspec.compile_text(
        CNN + f'transfer {{\n  source "{source}"\n  {freeze}\n'
        "  head { gap; dense 3 softmax }\n}\n",
        path,
    )


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_torch_checkpoint_by_name(tmp_path, suffix):
    import torch
    from safetensors.torch import save_file

    from cnnspec.backends.torch import build
    from cnnspec.transfer import prepare

    src = build(_source_model(tmp_path))
    file = tmp_path / f"ckpt{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": src.state_dict()}, file)
    else:
        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(file))
    model = _with_source(str(file))
    net = build(model)
    report = prepare(net, model).report
    assert report.method == "name" and len(report.matched) == 7
    assert sorted(report.unexpected) == ["dense1.bias", "dense1.weight"]
    for key, value in src.state_dict().items():
        if not key.startswith("dense1"):
            assert torch.equal(net.state_dict()[key], value)


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_keras_checkpoint_into_both_backends(tmp_path, suffix):
    import torch

    from cnnspec.backends.keras import build as kbuild
    from cnnspec.backends.torch import build as tbuild
    from cnnspec.transfer import prepare

    src = kbuild(_source_model(tmp_path))
    file = tmp_path / f"ckpt{suffix}"
    (src.save_weights if suffix == ".weights.h5" else src.save)(str(file))
    x = np.random.default_rng(2).random((2, 12, 12, 3), dtype=np.float32)
    import keras

    want = keras.Model(src.input, src.get_layer("relu2").output)(x).numpy()
    model = _with_source(str(file))
    k = kbuild(model)
    assert prepare(k, model).report.method == "kind"
    np.testing.assert_allclose(keras_features(model, k)(x).numpy(), want, atol=1e-5)
    t = tbuild(model)
    assert len(prepare(t, model).report.matched) == 7
    with torch.no_grad():
        got = torch_features(model, t)(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), want, atol=1e-5)


def test_run_folder_source_uses_its_best_checkpoint(tmp_path):
    from safetensors.torch import save_file

    from cnnspec.backends.torch import build
    from cnnspec.transfer import prepare
    from cnnspec.transfer.sources import resolve

    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    src = build(_source_model(tmp_path))
    save_file(
        {k: v.contiguous() for k, v in src.state_dict().items()}, str(run / "best.safetensors")
    )
    (run / "last.safetensors").write_bytes(b"not used")
    (run / "result.json").write_text("{}")
    spec_path = tmp_path / "net.cnn"
    assert resolve("runs/a", None, str(spec_path)).path == run / "best.safetensors"
    model = _with_source("runs/a", path=str(spec_path))
    assert len(prepare(build(model), model).report.matched) == 7
    (run / "best.safetensors").unlink()
    with pytest.raises(Exception, match="holds no checkpoint"):
        resolve(str(run))


def test_no_download_is_attempted(tmp_path, monkeypatch):
    """Resolving a source never touches the network: sockets are refused during it."""
    import socket

    from cnnspec.transfer.sources import resolve

    def refuse(*a, **k):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for source in ("torchvision:resnet18", "keras:VGG16", "keras:ResNet50"):
        with pytest.raises(Exception, match="not on this machine"):
            resolve(source)
    assert not os.listdir(tmp_path)


# --- cnnspec train uses the transfer section ----------------------------------------------------

DIGITS = """
input 8x8x1
conv 8 3x3 same nobias; bn; relu
conv 8 3x3 same; relu
gap
dense 10 softmax
compile { loss sparse_categorical_crossentropy; optimizer sgd lr=0.1; epochs %d
          batch_size 64; seed 0 }
"""


@pytest.mark.parametrize("backend", ["torch", "keras"])
@pytest.mark.parametrize("mode", ["frozen", "unfreeze", "backbone_lr"])
def test_cnnspec_train_loads_freezes_and_unfreezes(tmp_path, backend, mode):
    from cnnspec.train.session import train

    src = tmp_path / "src"
    train(cnnspec.compile_text(DIGITS % 1), "digits", backend, src, log=lambda *a: None)
    suffix = ".safetensors" if backend == "torch" else ".weights.h5"
    freeze = {
        "frozen": "freeze all",
        "unfreeze": "freeze all unfreeze_at=1",
        "backbone_lr": "freeze none backbone_lr=1e-5",
    }[mode]
    model = cnnspec.compile_text(
        DIGITS % (1 if mode == "frozen" else 2) + f"transfer {{ "
        f'source "{src}"; {freeze}; head {{ gap; dense 10 softmax }} }}'
    )
    result = train(model, "digits", backend, tmp_path / "dst", log=lambda *a: None)
    info = result["transfer"]
    assert info["matched"] == 7 and info["mis_shaped"] == [] and info["missing"] == []
    if mode != "backbone_lr":
        assert info["trainable_params"] == 90 and info["frozen_layers"] == 3
    from cnnspec.transfer.sources import Source
    from cnnspec.transfer.tensors import read

    before = {x.name: x.tensors for x in read(Source("", src / f"best{suffix}", "run")).layers}
    after = {
        x.name: x.tensors
        for x in read(Source("", tmp_path / "dst" / f"best{suffix}", "run")).layers
    }
    # Keras 3 files name layers by class (conv2d, conv2d_1, ...), torch ones by node
    names = (
        ["conv2d", "batch_normalization", "conv2d_1"]
        if backend == "keras"
        else ["conv1", "bn1", "conv2"]
    )
    for name in names:
        for role, value in before[name].items():
            moved = float(np.abs(value - after[name][role]).max())
            if mode == "frozen":
                assert moved == 0, (name, role)
            elif mode == "unfreeze" or "running" in role:
                assert moved > 0, (name, role)
            else:  # backbone_lr=1e-5 (lr 0.1): the pretrained weights barely move
                assert 0 < moved < 1e-3, (name, role, moved)
