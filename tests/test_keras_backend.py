"""The Keras backend against the IR: every layer kind builds, with the IR's parameter counts and
shapes, and the layers Keras lacks (LRN, padded / ceil-mode pooling) compute what torch does."""

import numpy as np
import pytest
from keras_specs import LAYER_SPECS

import cnnspec
from cnnspec.errors import SpecError
from cnnspec.layers import REGISTRY

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module", params=sorted(LAYER_SPECS))
def built(request):
    from cnnspec.backends.keras import build

    model = cnnspec.compile_text(LAYER_SPECS[request.param])
    return model, build(model)


def _weights(kmodel, trainable):
    ws = kmodel.trainable_weights if trainable else kmodel.non_trainable_weights
    return sum(int(np.prod(w.shape)) for w in ws)


def test_every_layer_kind_is_covered():
    used = {n.kind for text in LAYER_SPECS.values() for n in cnnspec.compile_text(text).nodes}
    assert used == set(REGISTRY), set(REGISTRY) - used


def test_parameter_counts_match_the_ir(built):
    model, kmodel = built
    assert kmodel.count_params() == model.params
    assert _weights(kmodel, True) == model.trainable
    assert _weights(kmodel, False) == model.non_trainable


def test_every_node_has_the_ir_shape(built):
    from cnnspec.backends.keras import keras_names, recipes

    model, kmodel = built
    names = keras_names(model)
    assert tuple(kmodel.get_layer(names[model.nodes[0].name]).output.shape[1:]) == model.input_shape
    for name, _, recipe in recipes(model):
        last = recipe[-1][1]["name"]
        assert tuple(kmodel.get_layer(last).output.shape[1:]) == model.node(name).shape, name


def test_weights_sit_in_the_layer_named_after_their_node(built):
    from cnnspec.backends.keras import keras_names

    model, kmodel = built
    names = keras_names(model)
    for node in model.nodes:
        if node.params:
            assert kmodel.get_layer(names[node.name]).count_params() == node.params, node.name


def test_outputs_run_and_match_the_ir(built):
    model, kmodel = built
    x = np.random.default_rng(0).normal(size=(2, *model.input_shape)).astype("float32")
    ys = kmodel(x, training=False)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    assert [tuple(y.shape[1:]) for y in ys] == model.output_shapes
    for y in ys:
        y = np.asarray(y)
        assert np.isfinite(y).all() and y.std() > 0


def test_names_are_keras_safe_and_unique():
    from cnnspec.backends.keras import keras_name, keras_names

    assert keras_name("layer1.0.conv1") == "layer1_0_conv1"
    assert keras_name("1x") == "n_1x"
    model = cnnspec.compile_text("input 8\na_b = dense 2\na = identity\nb = dense 2")
    model.nodes[2].name = "a.b"  # a clash made by editing the IR
    with pytest.raises(SpecError, match="both become") as info:
        keras_names(model)
    assert info.value.code == "E421"
    from cnnspec.backends.keras import recipes

    model = cnnspec.compile_text("input 8x8x3\nconv1_pad = identity\nconv 4 3x3 padding=1")
    with pytest.raises(SpecError, match="which another node is called") as info:
        recipes(model)
    assert (info.value.code, info.value.span.line) == ("E421", 3)


# --- Specs that pass `check` but Keras cannot hold (issue 14): located errors, exit 1 -------

COLLISION = """input 16x16x3
block stage(f) {
  conv f 3x3 same
}
stage 4
stage1_conv1 = conv 4 3x3 same
"""


@pytest.mark.parametrize(
    "text, code, line, words",
    [
        (COLLISION, "E421", 6, "'stage1.conv1' and 'stage1_conv1'"),
        (
            "input 64x64x3\nconv 4 3x3 stride=1000000000000 same\n",
            "E422",
            2,
            "strides=1000000000000",
        ),
        ("input 64x64x3\nmaxpool 2 stride=(1, 4294967296)\n", "E422", 2, "4294967296"),
    ],
)
def test_what_keras_cannot_hold_is_a_located_error(text, code, line, words, tmp_path, capsys):
    """`cnnspec check` accepts these; `cnnspec build --backend keras` must refuse them at the
    line (no traceback, nothing written), before TensorFlow sees them (it aborts the process
    on a stride beyond 32 bits)."""
    from cnnspec.cli import main

    spec = tmp_path / "net.cnn"
    spec.write_text(text)
    assert main(["check", str(spec)]) == 0
    out = tmp_path / "net.py"
    assert main(["build", str(spec), "--backend", "keras", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"net.cnn:{line}:" in err and f"error[{code}]" in err and words in err, err
    assert "Traceback" not in err and not out.exists()


def test_a_chain_deeper_than_the_recursion_limit_builds():
    """Keras maps the graph recursively (a frame per layer): 1,500 layers passed Python's
    default limit of 1,000 and raised RecursionError (19,000 did in the issue)."""
    import sys

    from cnnspec.backends.keras import build

    n = sys.getrecursionlimit() + 500
    model = cnnspec.compile_text("input 4\n" + "relu\n" * n)
    limit = sys.getrecursionlimit()
    kmodel = build(model)
    assert sys.getrecursionlimit() == limit  # raised for the build only
    assert len(kmodel.layers) == n + 1
    x = np.array([[-1.0, 0.0, 2.0, 3.0]], dtype="float32")
    np.testing.assert_array_equal(np.asarray(kmodel(x)), np.maximum(x, 0))


# --- Semantics of the layers Keras lacks, against torch's own functions ------------------

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _run(text, x):
    from cnnspec.backends.keras import build

    kmodel = build(cnnspec.compile_text(text))
    return np.asarray(kmodel(x.transpose(0, 2, 3, 1), training=False)).transpose(0, 3, 1, 2)


def _x(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize(
    "size, alpha, beta, k", [(5, 1e-4, 0.75, 1.0), (4, 0.5, 0.9, 2.0), (3, 2.0, 0.5, 0.5)]
)
def test_lrn_is_torchs(size, alpha, beta, k):
    x = _x((2, 7, 5, 5), size) * 3
    got = _run(f"input 5x5x7\nlrn {size} alpha={alpha} beta={beta} k={k}", x)
    want = F.local_response_norm(torch.from_numpy(x), size, alpha, beta, k).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "op, size, stride, pad, ceil, hw",
    [
        ("max", 3, 2, 1, False, (13, 12)),
        ("avg", 3, 2, 1, False, (13, 12)),
        ("max", 3, 2, 0, True, (14, 13)),
        ("avg", 3, 2, 0, True, (14, 13)),
        ("max", 3, 2, 1, True, (14, 13)),
        ("avg", 3, 2, 1, True, (12, 11)),
        ("avg", 2, 3, 1, True, (10, 9)),
        ("max", 5, 3, 2, True, (11, 15)),
    ],
)
def test_padded_and_ceil_pooling_is_torchs(op, size, stride, pad, ceil, hw):
    x = _x((2, 3, *hw), size + stride)
    spec = (
        f"input {hw[0]}x{hw[1]}x3\n{op}pool {size} stride={stride} padding={pad} "
        f"ceil={'true' if ceil else 'false'}"
    )
    got = _run(spec, x)
    t = torch.from_numpy(x)
    want = (
        F.max_pool2d(t, size, stride, pad, ceil_mode=ceil)
        if op == "max"
        else F.avg_pool2d(t, size, stride, pad, ceil_mode=ceil, count_include_pad=False)
    )
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_same_average_pooling_ignores_padding():
    x = np.ones((1, 2, 5, 5), "float32")
    got = _run("input 5x5x2\navgpool 2 same", x)
    np.testing.assert_allclose(got, 1.0)  # counting padded zeros would give 0.5 at the edge


def test_bilinear_upsampling_is_torchs():
    x = _x((2, 3, 5, 4), 1)
    got = _run("input 5x4x3\nupsample 2 bilinear", x)
    want = F.interpolate(
        torch.from_numpy(x), scale_factor=2, mode="bilinear", align_corners=False
    ).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "fn, torch_fn",
    [
        ("leaky_relu", lambda t: F.leaky_relu(t, 0.01)),
        ("gelu", F.gelu),
        ("hard_sigmoid", F.hardsigmoid),
        ("hard_swish", F.hardswish),
        ("elu", F.elu),
        ("silu", F.silu),
        ("relu6", F.relu6),
        ("softmax", lambda t: F.softmax(t, dim=1)),
    ],
)
def test_activations_are_torchs(fn, torch_fn):
    x = _x((3, 6, 4, 4), 2) * 4
    np.testing.assert_allclose(
        _run(f"input 4x4x6\n{fn}", x), torch_fn(torch.from_numpy(x)), rtol=1e-5, atol=1e-6
    )


# --- Generated source ----------------------------------------------------------------------


def _load_source(source: str, tmp_path, stem: str):
    import importlib.util

    path = tmp_path / f"{stem}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return path, mod


def test_generated_source_builds_the_same_model(built, tmp_path):
    from cnnspec.backends.keras import source_code

    model, kmodel = built
    source = source_code(model)
    assert source == source_code(model)  # deterministic
    imports = [line for line in source.splitlines() if line.startswith(("import", "from"))]
    assert imports in (
        ["import keras", "from keras import layers"],
        ["import keras", "from keras import layers, ops"],
    )
    _, mod = _load_source(source, tmp_path, f"gen_{model.name}")
    gen = mod.build_model()
    assert [type(la).__name__ for la in gen.layers] == [type(la).__name__ for la in kmodel.layers]
    for a, b in zip(gen.layers, kmodel.layers):
        assert a.get_config() == b.get_config(), a.name
    gen.set_weights(kmodel.get_weights())
    x = np.random.default_rng(3).normal(size=(2, *model.input_shape)).astype("float32")
    for ya, yb in zip(keras.tree.flatten(gen(x)), keras.tree.flatten(kmodel(x))):
        np.testing.assert_array_equal(np.asarray(ya), np.asarray(yb))


_BLOCKS = """
input 32x32x3
block bottleneck(planes, stride=1) {
  residual relu shortcut=auto {
    conv planes 1x1 nobias; bn; relu
    conv planes 3x3 stride=stride padding=1 nobias; bn; relu
    conv planes*4 1x1 nobias; bn
  }
}
block stage(planes, blocks, stride=1) {
  bottleneck planes stride=stride
  repeat blocks - 1 { bottleneck planes }
}
conv 16 3x3 padding=1 nobias; bn; relu
layer1 = stage 8 2
layer2 = stage 16 3 stride=2
gap
dense 10
"""


def test_block_functions_build_the_runtime_model(tmp_path):
    """A block definition becomes one function called per instance (here: with and without a
    projection shortcut); layer names, configs and the .weights.h5 layout are the runtime
    model's, so its saved weights load and give the same outputs."""
    import ast

    from cnnspec.backends.keras import build, source_code

    model = cnnspec.compile_text(_BLOCKS)
    source = source_code(model)
    assert source == source_code(model)
    functions = {
        n.name: [a.arg for a in n.args.args]
        for n in ast.parse(source).body
        if isinstance(n, ast.FunctionDef)
    }
    assert functions == {
        "bottleneck": ["x", "filters", "strides", "conv3_filters", "name"],
        "bottleneck2": ["x", "filters", "conv3_filters", "name"],
        "build_model": [],
    }
    calls = [
        (n.func.id, n.keywords[0].value.value)
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Call) and getattr(n.func, "id", "").startswith("bottleneck")
    ]
    assert sorted(calls) == [
        ("bottleneck", "layer1_bottleneck1"),
        ("bottleneck", "layer2_bottleneck1"),
        ("bottleneck2", "layer1_bottleneck2"),
        ("bottleneck2", "layer2_bottleneck2"),
        ("bottleneck2", "layer2_bottleneck3"),
    ]
    _, mod = _load_source(source, tmp_path, "gen_blocks")
    gen, kmodel = mod.build_model(), build(model)
    assert [la.name for la in gen.layers] == [la.name for la in kmodel.layers]
    for a, b in zip(gen.layers, kmodel.layers):
        assert a.get_config() == b.get_config(), a.name
    kmodel.save_weights(tmp_path / "runtime.weights.h5")
    gen.load_weights(tmp_path / "runtime.weights.h5")
    x = np.random.default_rng(4).normal(size=(2, *model.input_shape)).astype("float32")
    np.testing.assert_array_equal(
        np.asarray(gen(x, training=False)), np.asarray(kmodel(x, training=False))
    )


def test_cli_build_keras_is_byte_identical_and_passes_ruff(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    spec = tmp_path / "net.cnn"
    spec.write_text(LAYER_SPECS["graph"])  # (it appended a second `model` line: now E218)
    root = Path(__file__).resolve().parents[1]
    outs = []
    for i in range(2):
        out = tmp_path / f"net{i}.py"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "cnnspec",
                "build",
                str(spec),
                "--backend",
                "keras",
                "-o",
                str(out),
            ],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    ruff = Path(sys.executable).with_name("ruff")
    r = subprocess.run(
        [
            str(ruff),
            "check",
            "--isolated",
            "--line-length",
            "100",
            "--select",
            "E,F,W,I,UP,B",
            str(tmp_path / "net0.py"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout


# --- Other Keras backends ------------------------------------------------------------------

_OTHER_BACKEND = """
import sys, numpy as np, keras, cnnspec
sys.path.insert(0, sys.argv[2])
from keras_specs import LAYER_SPECS
from cnnspec.backends.keras import build
assert keras.backend.backend() == sys.argv[1]
data = np.load(sys.argv[3] + "/x.npz")
outs = {}
for name in sorted(LAYER_SPECS):
    kmodel = build(cnnspec.compile_text(LAYER_SPECS[name]))
    kmodel.load_weights(sys.argv[3] + f"/{name}.weights.h5")
    ys = keras.tree.flatten(kmodel(data[name], training=False))
    for i, y in enumerate(ys):
        outs[f"{name}{i}"] = keras.ops.convert_to_numpy(y)
np.savez(sys.argv[3] + "/out.npz", **outs)
"""


@pytest.mark.parametrize("backend", ["torch"])
def test_built_models_run_on_another_keras_backend(backend, tmp_path):
    """The same specs, weights and inputs under KERAS_BACKEND=torch (in a subprocess: the
    backend is chosen at import) give the TensorFlow backend's outputs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from cnnspec.backends.keras import build

    rng = np.random.default_rng(5)
    inputs, want = {}, {}
    for name in sorted(LAYER_SPECS):
        model = cnnspec.compile_text(LAYER_SPECS[name])
        kmodel = build(model)
        kmodel.save_weights(tmp_path / f"{name}.weights.h5")
        inputs[name] = rng.normal(size=(2, *model.input_shape)).astype("float32")
        for i, y in enumerate(keras.tree.flatten(kmodel(inputs[name], training=False))):
            want[f"{name}{i}"] = np.asarray(y)
    np.savez(tmp_path / "x.npz", **inputs)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(root)}
    r = subprocess.run(
        [sys.executable, "-c", _OTHER_BACKEND, backend, str(root / "tests"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    assert sorted(got.files) == sorted(want)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-5, err_msg=key)


def test_every_zoo_spec_generates_clean_keras_source(tmp_path):
    """Generated source for each zoo spec passes ruff and compiles (building them all is the
    cross-framework tests' job, through the same recipes)."""
    import subprocess
    import sys
    from pathlib import Path

    from cnnspec.backends.keras import source_code

    specs = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.cnn"))
    for path in specs:
        source = source_code(cnnspec.compile_file(path))
        compile(source, path.name, "exec")
        (tmp_path / f"{path.stem}.py").write_text(source)
    ruff = Path(sys.executable).with_name("ruff")
    r = subprocess.run(
        [
            str(ruff),
            "check",
            "--isolated",
            "--line-length",
            "100",
            "--select",
            "E,F,W,I,UP,B",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout


def test_adaptive_max_pooling_avoids_the_keras_layer_that_crashes():
    """Keras' AdaptiveMaxPooling2D dies with SIGFPE on 2x2 -> 1x1 (TF 2.21): uniform bins are
    plain pooling instead, and the other sizes it cannot run are a located E422."""
    import subprocess
    import sys

    code = (
        "import torchvision, numpy as np, cnnspec\n"
        "from cnnspec.backends.keras import build\n"
        "m = cnnspec.compile_text('input 2x2x3\\nadaptive_maxpool 1x1\\n')\n"
        "x = np.random.rand(1, 2, 2, 3).astype('float32')\n"
        "print(np.allclose(np.asarray(build(m)(x)), x.max(axis=(1, 2), keepdims=True)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]
    from cnnspec.backends.keras import build

    model = cnnspec.compile_text("input 3x5x3\nadaptive_maxpool 1x2\n")
    with pytest.raises(SpecError) as err:
        build(model)
    assert err.value.code == "E422" and err.value.span.line == 2
