"""The PyTorch backend against the IR: shapes, counts, names, codegen, logits, weights, ONNX."""

from __future__ import annotations

import copy
import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from framework_checks import check_torch_shapes_and_counts, nchw

import cnnspec
from cnnspec.backends import torch as tb
from cnnspec.backends import torch_emit as te
from cnnspec.backends.torch.plan import _MODULE_ATTRS
from cnnspec.layers import REGISTRY

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")
RUFF = Path(sys.executable).with_name("ruff")

# One small network per layer kind and variant: (kind, spec body after the input line).
CASES = [
    ("conv", "input 9x9x3\nconv 4 3x3 stride=2 same relu"),
    ("conv", "input 8x8x3\nconv 4 3x3 stride=2 same"),
    ("conv", "input 8x10x3\nconv 6 (3, 5) stride=(2, 1) same groups=3 nobias"),
    ("conv", "input 12x12x2\nconv 4 3x3 dilation=2 same leaky_relu"),
    ("conv", "input 12x12x2\nconv 4 5x5 stride=2 padding=2 elu"),
    ("dwconv", "input 8x8x4\ndwconv 3x3 stride=2 same multiplier=2 relu6"),
    ("sepconv", "input 8x8x4\nsepconv 6 3x3 same silu"),
    ("sepconv", "input 7x7x4\nsepconv 6 3x3 stride=2 same nobias"),
    ("deconv", "input 5x5x4\ndeconv 3 3x3 stride=2 same"),
    ("deconv", "input 5x5x4\ndeconv 3 4x4 stride=2 same sigmoid"),
    ("deconv", "input 5x5x4\ndeconv 3 1x1 stride=2 same"),
    ("deconv", "input 5x5x4\ndeconv 3 3x3 stride=2 padding=1 output_padding=1 tanh"),
    ("deconv", "input 5x5x4\ndeconv 3 2x2 stride=2"),
    ("dense", "input 7\ndense 5 gelu"),
    ("dense", "input 4x4x2\nflatten\ndense 3 nobias softmax"),
    ("dense", "input 4x5x3\ndense 6 per_pixel gelu"),
    ("flatten", "input 3x4x5\nflatten"),
    ("flatten", "input 1x1x5\nflatten"),
    ("reshape", "input 3x4x5\nreshape 60\nreshape (5, 4, 3)"),
    ("dropout", "input 6\ndropout 0.3"),
    ("activation", "input 4x4x3\nhard_swish\nhard_sigmoid\nsoftmax"),
    ("activation", "input 6\nleaky_relu 0.2\nelu\ntanh\nsigmoid\nrelu6\nsilu\ngelu"),
    ("identity", "input 4x4x3\nskip = identity\nrelu\nadd skip"),
    ("rescale", "input 4x4x3\nrescale 0.5 0.25"),
    ("zeropad", "input 4x4x3\nzeropad (1, 2, 3, 0)"),
    ("crop", "input 6x7x3\ncrop (1, 0, 2, 1)"),
    ("upsample", "input 3x3x2\nupsample 2"),
    ("upsample", "input 3x3x2\nupsample (2, 3) bilinear"),
    ("merge", "input 4x4x3\na = conv 3 1x1\nb = conv 3 1x1 from=input\nmultiply a"),
    (
        "detect",
        (
            "input 16x16x3\np3 = conv 8 3x3 stride=2 same\np4 = conv 8 3x3 stride=2 same\n"
            "detect p3 p4 classes=2 strides=(2, 4) sizes=(4, 8) ratios=(0.5, 1.0) tower=1"
        ),
    ),
    (
        "detect",
        (
            "input 16x16x3\np3 = conv 8 3x3 stride=2 same\np4 = conv 16 3x3 stride=2 same\n"
            "detect p3 p4 classes=2 strides=(2, 4) separate depthwise tower=1 norm=bn relu6 predictor=1"
        ),
    ),
    (
        "detect",
        (
            "input 16x16x3\np3 = conv 8 3x3 stride=2 same\np4 = conv 8 3x3 stride=2 same\n"
            "detect p3 p4 classes=2 strides=(2, 4) tower=2 norm=gn groups=4 centerness box_relu=true"
        ),
    ),
    ("merge", "input 4x4x3\nparallel concat relu {\n  branch { conv 2 1x1 }\n  branch { }\n}"),
    ("merge", "input 4x4x8\ng = gap keepdims\nconv 8 1x1 sigmoid\nmultiply from=(input, g)"),
    ("bn", "input 4x4x3\nbn eps=1e-3 momentum=0.99"),
    ("bn", "input 4x4x3\nbn noscale"),
    ("bn", "input 4x4x3\nbn nocenter"),
    ("bn", "input 4x4x3\nbn noscale nocenter"),
    ("bn", "input 6\nbn"),
    ("lrn", "input 4x4x8\nlrn 5"),
    ("pool", "input 8x8x3\nmaxpool 3 stride=2 same"),
    ("pool", "input 9x9x3\navgpool 3 stride=2 same"),
    ("pool", "input 8x8x3\navgpool 3 stride=2 same"),
    ("pool", "input 8x8x3\navgpool 3 stride=1 same"),
    ("pool", "input 9x9x3\nmaxpool 3 stride=2 ceil=true"),
    ("pool", "input 8x8x3\navgpool 3 stride=2 padding=1"),
    ("pool", "input 8x8x3\nmaxpool 2"),
    ("pool", "input 9x9x3\nmaxpool 3 stride=2 same ceil=true"),
    ("pool", "input 10x10x3\navgpool 3 stride=2 padding=1 ceil=true"),
    ("adaptive_pool", "input 7x9x3\nadaptive_avgpool 3x4\nadaptive_maxpool 2"),
    ("pool", "input 8x8x3\navgpool 3 stride=1 padding=1 count_pad=true"),
    ("pool", "input 8x8x3\navgpool 3 stride=2 same count_pad=true"),
    ("layernorm", "input 4x4x6\nlayernorm eps=1e-6\nlayernorm noscale\nlayernorm nocenter"),
    ("layernorm", "input 6\nlayernorm"),
    ("groupnorm", "input 4x4x6\ngroupnorm 3"),
    ("layerscale", "input 4x4x6\nlayerscale 0.1"),
    ("normalize", "input 4x4x3\nnormalize mean=(0.4, 0.5, 0.6) variance=(1, 2, 3)"),
    ("rescale", "input 4x4x3\nrescale scale=(1, 2, 3) offset=(0, 0.5, 1)"),
    ("stochastic_depth", "input 4x4x6\nstochastic_depth 0.2"),
    ("channel_shuffle", "input 4x4x6\nshuffle 3"),
    ("split", "input 4x4x6\na = split 3 1\nb = split 3 2 from=input\nadd a"),
    ("global_pool", "input 5x5x3\ngap"),
    ("global_pool", "input 5x5x3\ngmp keepdims"),
    ("input", "input 4x4x3\nrelu"),
    ("preprocess", "input 4x4x3 scale=1/255 mean=(0.4, 0.5, 0.6) std=(0.2, 0.3, 0.4)\nrelu"),
    ("preprocess", "input 4x4x2 scale=0.5\nrelu"),
]


def compile_case(body: str) -> cnnspec.Model:
    return cnnspec.compile_text("model case\n" + body + "\n")


def load_generated(source: str, tmp_path: Path, name: str = "generated"):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_layer_kind_has_a_case_and_an_emitter():
    covered = {kind for kind, _ in CASES}
    assert covered == set(REGISTRY), set(REGISTRY) ^ covered
    missing = set(REGISTRY) - set(tb.EMITTERS)
    assert not missing, f"no torch emitter for {sorted(missing)}"


@pytest.mark.parametrize("kind,body", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_shapes_and_counts_match_the_ir(kind, body):
    check_torch_shapes_and_counts(compile_case(body))


@pytest.mark.parametrize("kind,body", CASES[::3], ids=[k for k, _ in CASES[::3]])
def test_generated_source_equals_runtime_module(kind, body, tmp_path):
    model = compile_case(body)
    net = tb.build(model).eval()
    gen = load_generated(tb.source_code(model), tmp_path).build_model().eval()
    assert list(gen.state_dict()) == list(net.state_dict())
    gen.load_state_dict(net.state_dict())
    x = torch.randn(2, *nchw(model.input_shape))
    torch.testing.assert_close(gen(x), net(x), rtol=0, atol=0)


def test_same_padding_is_symmetric_when_even():
    """No F.pad overhead where torch's own padding gives TensorFlow's 'same'."""
    op = tb.torch_op(compile_case("input 8x8x3\nconv 4 3x3 same").nodes[1].layer, [(8, 8, 3)])
    assert te.render(op.forward, ["x"], "self.c") == "self.c(x)"
    assert dict(op.module.kwargs)["padding"] == 1
    op = tb.torch_op(
        compile_case("input 8x8x3\nconv 4 3x3 stride=2 same").nodes[1].layer, [(8, 8, 3)]
    )
    assert te.render(op.forward, ["x"], "self.c") == "self.c(F.pad(x, (0, 1, 0, 1)))"


def test_emitter_source_and_module():
    op = tb.torch_op(compile_case("input 8x8x3\nconv 64 3x3 same").nodes[1].layer, [(8, 8, 3)])
    assert te.render(op.module, []) == "nn.Conv2d(3, 64, kernel_size=3, padding=1)"
    module = tb.instantiate(op)
    assert isinstance(module, torch.nn.Conv2d) and module.padding == (1, 1)


def test_batchnorm_momentum_is_one_minus_the_spec():
    net = tb.build(compile_case("input 4x4x3\nbn eps=1e-3 momentum=0.99"))
    bn = net.bn1
    assert bn.momentum == pytest.approx(0.01) and bn.eps == 1e-3
    net.train()
    x = torch.randn(8, 3, 4, 4) + 3
    net(x)
    expected = 0.01 * x.mean((0, 2, 3))  # Keras: 0.99 * old (0) + 0.01 * batch mean
    torch.testing.assert_close(bn.running_mean, expected)


def test_offset_only_batchnorm_learns_only_its_offset():
    net = tb.build(compile_case("input 4x4x3\nbn noscale")).eval()
    assert [n for n, _ in net.named_parameters()] == ["bn1.bias"]
    with torch.no_grad():
        net.bn1.bias.fill_(2.0)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(net(x), x / (1 + 1e-5) ** 0.5 + 2.0)


def test_flatten_is_in_hwc_order():
    net = tb.build(compile_case("input 2x3x4\nflatten"))
    x = torch.arange(24.0).reshape(1, 4, 2, 3)  # NCHW
    torch.testing.assert_close(net(x), x.permute(0, 2, 3, 1).reshape(1, -1))


# --- Names -------------------------------------------------------------------------------

NAMES_SPEC = """
model names
input 8x8x3
block unit(f) { conv f 3x3 same; bn; relu }
forward = conv 4 3x3 same
half = bn
training = relu
layer1 = unit 4
layer1 = unit 4
x = conv 4 1x1
inputs = add forward
"""


def test_state_dict_keys_follow_the_spec_names_and_dodge_module_attributes(tmp_path):
    model = cnnspec.compile_text(NAMES_SPEC)
    net = tb.build(model)
    keys = list(net.state_dict())
    assert "forward_.weight" in keys and "half_.weight" in keys
    assert "layer1.conv1.weight" in keys and "layer1.bn1.running_var" in keys
    gen = load_generated(tb.source_code(model), tmp_path).build_model()
    assert list(gen.state_dict()) == keys
    x = torch.randn(1, 3, 8, 8)
    gen.load_state_dict(net.state_dict())
    torch.testing.assert_close(gen.eval()(x), net.eval()(x))


def test_reserved_names_cover_nn_module():
    public = {n for n in dir(torch.nn.Module) if not n.startswith("_")}
    assert public <= _MODULE_ATTRS, public - _MODULE_ATTRS


@pytest.mark.parametrize(
    "raw,safe",
    [
        ("class", "class_"),
        ("a-b", "a_b"),
        ("2x", "n2x"),
        ("__init__", "n__init__"),
        ("match", "match_"),
        ("ok", "ok"),
    ],
)
def test_identifier(raw, safe):
    assert tb.identifier(raw) == safe


def test_names_from_a_json_ir_cannot_inject_code(tmp_path):
    model = compile_case("input 4x4x3\nconv 2 1x1")
    evil = 'conv1"); import os; os.system("echo pwned'
    node = model.nodes[1].model_copy(update={"name": evil})
    model = model.model_copy(
        update={"nodes": [model.nodes[0], node], "outputs": [evil], "name": 'm"""; import os; """'}
    )
    source = tb.source_code(model)
    compile(source, "generated.py", "exec")
    assert "import os" not in source.split('"""')[2]  # nothing outside the docstring
    mod = load_generated(source, tmp_path)
    keys = list(mod.build_model().state_dict())
    assert len(keys) == 2 and all(part.isidentifier() for k in keys for part in k.split("."))


# --- Softmax and logits ------------------------------------------------------------------


def test_logits_skip_only_the_final_softmax(tmp_path):
    model = compile_case("input 6\ndense 8 softmax\ndense 4 softmax")
    net = tb.build(model).eval()
    assert net.softmax_outputs == ("dense2",)
    x = torch.randn(3, 6)
    probs = net(x)
    net.logits = True
    logits = net(x)
    torch.testing.assert_close(torch.softmax(logits, 1), probs)
    assert not torch.allclose(logits.sum(1), torch.ones(3))
    gen = load_generated(tb.source_code(model), tmp_path).build_model(logits=True).eval()
    gen.load_state_dict(net.state_dict())
    torch.testing.assert_close(gen(x), logits)
    assert tb.build(model, logits=True).logits


def test_separate_softmax_layer_becomes_identity_for_logits():
    model = compile_case("input 6\ndense 4\nsoftmax")
    net = tb.build(model, logits=True).eval()
    x = torch.randn(2, 6)
    torch.testing.assert_close(net(x), net.dense1(x))


def test_several_outputs_come_as_a_tuple(tmp_path):
    model = cnnspec.compile_text("input 8x8x3\na = conv 4 3x3 same\nb = gap\noutput a, b\n")
    net = tb.build(model)
    a, b = net(torch.randn(2, 3, 8, 8))
    assert a.shape == (2, 4, 8, 8) and b.shape == (2, 4)
    assert net.output_names == ("a", "b")
    source = tb.source_code(model)
    assert "return a, x" in source or "return a, b" in source


# --- Generated source -------------------------------------------------------------------

ZOO = sorted(p.stem for p in (ROOT / "specs").glob("*.cnn"))


@pytest.mark.parametrize("name", ZOO)
def test_generated_source_is_stable_clean_and_equal(name, tmp_path):
    model = cnnspec.compile_file(ROOT / "specs" / f"{name}.cnn")
    source = tb.source_code(model)
    assert tb.source_code(cnnspec.compile_file(ROOT / "specs" / f"{name}.cnn")) == source
    assert "cnnspec" not in "".join(
        line for line in source.splitlines() if line.startswith(("import", "from"))
    )
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    lint = subprocess.run(
        [str(RUFF), "check", "--no-cache", "--isolated", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout
    net = tb.build(model).eval()
    gen = load_generated(source, tmp_path, name).build_model().eval()
    assert list(gen.state_dict()) == list(net.state_dict())
    gen.load_state_dict(net.state_dict())
    size = model.input_shape
    x = torch.randn(1, *nchw(size))
    with torch.no_grad():
        a, b = gen(x), net(x)
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


def test_generated_source_reads_like_hand_written_code():
    source = tb.source_code(cnnspec.compile_file(ROOT / "specs" / "resnet18.cnn"))
    assert "class Resnet18(nn.Module):" in source and "def build_model(" in source
    # a block definition used several times is a class, its instances built with the
    # constants that differ, as torchvision's `_make_layer` builds its stages
    assert "class Stage2(nn.Module):" in source
    assert "self.layer2 = Stage2(64, 128)" in source and "x = self.layer2(x)" in source
    assert "x = self.conv1(x)" in source
    assert "x = self.fc(x)" in source or "x = self.dense1(x)" in source


def test_cli_build_writes_the_file(tmp_path):
    out = tmp_path / "m.py"
    from cnnspec.cli import main

    assert (
        main(["build", str(ROOT / "specs" / "resnet18.cnn"), "--backend", "torch", "-o", str(out)])
        == 0
    )
    assert out.read_text() == tb.source_code(cnnspec.compile_file(ROOT / "specs" / "resnet18.cnn"))


def test_cli_build_reports_spec_errors(tmp_path, capsys):
    bad = tmp_path / "bad.cnn"
    bad.write_text("input 4x4x3\nconv 4 9x9\n")
    from cnnspec.cli import main

    assert main(["build", str(bad)]) == 1
    assert "bad.cnn:2" in capsys.readouterr().err


def test_template_is_found():
    assert (tb.template_dir() / "torch_model.py.j2").is_file()


# --- Copies, weights files, ONNX ------------------------------------------------------------


def test_pickle_and_deepcopy_keep_the_network():
    model = compile_case("input 6x6x3\nconv 4 3x3 same relu\nbn\ngap\ndense 2 softmax")
    net = tb.build(model).eval()
    x = torch.randn(2, 3, 6, 6)
    for other in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        torch.testing.assert_close(other(x), net(x))
        with torch.no_grad():
            other.conv1.weight.zero_()
        assert not torch.equal(other(x), net(x))


def test_weights_files_round_trip_and_refuse_misfits(tmp_path):
    from safetensors.torch import save_file

    model = compile_case("input 6x6x3\nconv 4 3x3 same\nbn\ngap\ndense 2")
    net = tb.build(model)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        other = tb.build(model)
        tb.load_weights(other, model, tb.read_weights(tmp_path / name))
        assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())
    (tmp_path / "junk.pt").write_bytes(b"not a weights file")
    with pytest.raises(tb.WeightsError, match="junk.pt"):
        tb.read_weights(tmp_path / "junk.pt")
    bigger = tb.build(compile_case("input 6x6x3\nconv 5 3x3 same\nbn\ngap\ndense 2"))
    with pytest.raises(tb.WeightsError, match=r"conv1.weight: 5x3x3x3 in the file, 4x3x3x3"):
        tb.load_weights(net, model, bigger.state_dict())


def test_torchvision_mapping_reports_misfits_by_layer():
    torchvision = pytest.importorskip("torchvision")
    model = cnnspec.compile_file(ROOT / "specs" / "resnet18.cnn")
    net = tb.build(model)
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    with pytest.raises(tb.WeightsError) as info:
        tb.load_torchvision_state_dict(net, model, state)
    text = str(info.value)
    assert "cnnspec 'fc'" in text or "'dense1'" in text
    assert "1000x512 in cnnspec, 10x512 in torchvision" in text
    short = dict(list(state.items())[:-2])
    report = tb.load_torchvision_state_dict(net, model, short, strict=False)
    assert report.missing and not report.unexpected and not report.ok


def test_export_onnx_matches_torch(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    spec = tmp_path / "net.cnn"
    spec.write_text(
        "model net\ninput 9x9x3\nconv 8 3x3 stride=2 same nobias\nbn\nrelu\n"
        "skip = maxpool 3 stride=2 same\nresidual relu { conv 8 3x3 same }\n"
        "avgpool 3 stride=2 same\nflatten\ndense 5 softmax\n"
    )
    model = cnnspec.compile_file(spec)
    net = tb.build(model).eval()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "w.safetensors")
    from cnnspec.cli import main

    out = tmp_path / "net.onnx"
    assert (
        main(
            ["export", str(spec), "--onnx", str(out), "--weights", str(tmp_path / "w.safetensors")]
        )
        == 0
    )
    onnx.checker.check_model(onnx.load(str(out)))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 9, 9)
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), net(x), rtol=1e-4, atol=1e-4)
    assert not list(tmp_path.glob(".net.onnx.*"))  # no temp file left behind


def test_export_refuses_weights_that_do_not_fit(tmp_path, capsys):
    spec = tmp_path / "net.cnn"
    spec.write_text("input 4x4x3\nconv 2 1x1\n")
    torch.save({"conv1.weight": torch.zeros(3, 3, 1, 1)}, tmp_path / "w.pt")
    from cnnspec.cli import main

    assert (
        main(
            [
                "export",
                str(spec),
                "--onnx",
                str(tmp_path / "o.onnx"),
                "--weights",
                str(tmp_path / "w.pt"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "conv1.bias" in err and "Traceback" not in err
    assert not (tmp_path / "o.onnx").exists()


def test_activations_overwrite_only_fresh_tensors_read_once():
    model = compile_case("input 4x4x3\na = conv 3 1x1\nrelu\nadd a\nrelu\nsigmoid\nrelu")
    lines = [line.split("  #")[0].strip() for line in tb.source_code(model).splitlines()]
    assert "x = F.relu(a)" in lines  # a is read again by add
    assert "x = F.relu(x, inplace=True)" in lines  # the add's fresh sum
    assert lines.count("x = F.relu(x)") == 1  # sigmoid's backward needs its output
    net = tb.build(model).train()
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    a = net.a(x)
    expected = torch.relu(torch.sigmoid(torch.relu(torch.relu(a) + a)))
    out = net(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()  # autograd accepts the in-place ops
    assert x.grad is not None


def test_generating_source_imports_no_framework():
    code = (
        "import sys, cnnspec, cnnspec.torch\n"
        "from cnnspec.backends import torch as tb\n"
        "tb.source_code(cnnspec.compile_text('input 8x8x3\\nconv 4 3x3 same relu\\n'))\n"
        "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_add_overwrites_its_first_input_only_when_safe():
    model = compile_case(
        "input 4x4x3\nconv 3 1x1\nb = bn\nconv 3 1x1\nadd b\ng = gap keepdims\nadd from=(g, b)"
    )
    body = tb.source_code(model).split("def forward")[1]
    assert ".add_(b)" in body  # fresh conv output, read once: `out += identity`
    assert "x = x + b" in body  # a 1x1 gate cannot hold the broadcast sum
    net = tb.build(model).eval()
    x = torch.randn(2, 3, 4, 4)
    b = net.b(net.conv1(x))
    s = net.conv2(b) + b
    torch.testing.assert_close(net(x), s.mean((2, 3), keepdim=True) + b)


def test_torch_compile_sees_one_graph_and_channels_last_agrees():
    model = compile_case(
        "input 9x9x3\nconv 8 3x3 stride=2 same\nbn\nrelu\n"
        "residual relu { conv 8 3x3 same; bn }\nmaxpool 3 stride=2 same\n"
        "flatten\ndense 4 softmax"
    )
    net = tb.build(model).eval()
    x = torch.randn(2, 3, 9, 9)
    explained = torch._dynamo.explain(net)(x)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(last(x.contiguous(memory_format=torch.channels_last)), net(x))


def test_generated_source_matches_the_golden_file():
    """Review changes to the generated code as diffs of tests/torch_golden/features_torch.py."""
    import os

    golden = ROOT / "tests" / "torch_golden" / "features_torch.py"
    source = tb.source_code(cnnspec.compile_file(ROOT / "tests" / "torch_golden" / "features.cnn"))
    if os.environ.get("CNNSPEC_UPDATE_GOLDEN"):
        golden.write_text(source)
    assert source == golden.read_text()


def _allocations(net, x) -> list[int]:
    """The sizes of the tensor buffers a forward allocates (+) and frees (-), in order, as
    torch's profiler records them; buffers under 64 KiB (shapes, scalars) left out."""
    import json

    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        net(x)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            net(x)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    return [e["args"]["Bytes"] for e in memory if abs(e["args"]["Bytes"]) >= 64 * 1024]


@pytest.mark.parametrize("form", ["runtime", "generated"])
def test_resnet50_allocates_and_frees_as_torchvision_does(form, tmp_path):
    # Same kernels are not enough for the same speed: on CPU a freed buffer may go back to the
    # system and the next one fault its pages in again, so the forward must also release its
    # tensors in torchvision's order (a stage's input lives until the stage ends, as the
    # caller's variable keeps it). The generated file does it with `del`.
    import torch
    import torchvision

    ref = torchvision.models.resnet50().eval()
    model = cnnspec.compile_text(
        (ROOT / "specs" / "resnet50.cnn").read_text().replace("input 224x224x3", "input 64x64x3")
    )
    if form == "runtime":
        ours = tb.build(model, logits=True).eval()
    else:
        path = tmp_path / "resnet50_64.py"
        path.write_text(tb.source_code(model))
        spec = importlib.util.spec_from_file_location("resnet50_64", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        ours = module.build_model().eval()
        ours.logits = True
    x = torch.randn(2, 3, 64, 64)
    theirs, mine = _allocations(ref, x), _allocations(ours, x)
    assert len(theirs) > 200
    assert mine == theirs


def test_a_value_is_released_at_the_end_of_the_groups_it_enters():
    model = cnnspec.compile_file(ROOT / "specs" / "resnet50.cnn")
    net = tb.build(model)
    names = {0: model.input.name}
    names.update({ins.out: s.node for ins, s in zip(net._prog, tb.plan(model).steps)})
    released = {names[i]: names[ins.out] for ins in net._prog for i in ins.free}
    assert released["conv1"] == "bn1"  # a chain: at once
    assert released["maxpool1"] == "layer1.bottleneck3.relu3"  # the stage's input
    # a block's input: when the block ends (its residual reads it at the add, before relu3)
    assert released["layer1.bottleneck1.relu3"] == "layer1.bottleneck2.relu3"
    assert released["layer1.bottleneck1.bn3"] == "layer1.bottleneck1.add1"  # inside: at once
