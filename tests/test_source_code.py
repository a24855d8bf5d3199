"""Generated source, both backends: text from the spec never becomes code, and every file is
`ruff check` and `ruff format --check` clean without cnnspec running ruff."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import cnnspec
from cnnspec.backends import keras_source, pysource
from cnnspec.backends import torch as tb

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).with_name("ruff")
SPECS = sorted([*(ROOT / "specs").glob("*.cnn"), *(ROOT / "examples").glob("*.cnn")])
BACKENDS = {"torch": tb.source_code, "keras": keras_source.render}

# File names that became model names: quotes, triple quotes, backslashes (`\N{x}` is a
# SyntaxError in a plain string), newlines, Unicode, Jinja's own delimiters.
HOSTILE = [
    'p"""\n__import__("os").system("touch PWNED")\n"""q',
    "p'''\n__import__('os').system('touch PWNED')\n'''q",
    "x\\N{x}",
    "a\\",
    "tab\there\rcr",
    "caf\u00e9 \u6a21\u578b \U0001f600",
    "{{ 7 * 7 }}{% raw %}",
    "# comment\nimport os",
    "\u2028sep\x00nul",
]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_spec_name_stays_text(backend, name, tmp_path, monkeypatch):
    """The name (the spec's file name where it has no `model` line) reaches the file only
    as text: the file parses, importing it runs nothing, and its docstring reads the name."""
    model = cnnspec.compile_text("input 8x8x3\nconv 4 3x3 relu\n")
    model = (
        model.model_copy(update={"name": name, "source": f"/specs/{name}.cnn"})
        if hasattr(model, "model_copy")
        else _renamed(model, name)
    )
    source = BACKENDS[backend](model)
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree, clean=False)
    assert name in docstring
    # every statement at module level is an import, a definition or the __main__ guard
    assert all(
        isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.If))
        for n in tree.body[1:]
    )
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "generated.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("generated", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated.py"]


def _renamed(model, name):
    model.name, model.source = name, f"/specs/{name}.cnn"
    return model


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_spec_file_without_a_model_line_named_to_run_code(backend, tmp_path, monkeypatch):
    """The case reported: the file name becomes the model name."""
    spec = tmp_path / f"{HOSTILE[0]}.cnn"
    spec.write_text("input 8x8x3\nconv 4 3x3\n")
    model = cnnspec.compile_file(spec)
    assert model.name == HOSTILE[0]
    source = BACKENDS[backend](model)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.py").write_text(source)
    monkeypatch.chdir(out)
    loader = importlib.util.spec_from_file_location("model_py", out / "model.py")
    loader.loader.exec_module(importlib.util.module_from_spec(loader))
    assert not (out / "PWNED").exists()


@pytest.mark.parametrize("text", [*HOSTILE, "", '"', "'", "'\"", "\\x41", "é"])
def test_string_and_text_give_back_the_text(text):
    literal = pysource.string(text)
    assert literal.isascii() and "\n" not in literal
    assert ast.literal_eval(literal) == text
    doc = f'"""{pysource.text(text)}"""'
    assert doc.isascii() and "\n" not in doc
    assert ast.literal_eval(doc) == text


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_every_spec_generates_ruff_clean_source(backend, tmp_path):
    """ruff check and ruff format --check over every spec in specs/ and examples/."""
    for path in SPECS:
        source = BACKENDS[backend](cnnspec.compile_file(path))
        (tmp_path / f"{path.stem}.py").write_text(source)
        assert (
            max(len(line) for line in source.splitlines()) <= pysource.WIDTH or backend == "keras"
        ), path  # Keras' header states counts on one line
    for args in (["check"], ["format", "--check", "--diff"]):
        r = subprocess.run(
            [
                str(RUFF),
                *args,
                "--isolated",
                "--no-cache",
                "--line-length",
                str(pysource.WIDTH),
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_repeated_blocks_become_classes():
    """ResNet-50: one class per bottleneck variant instead of 355 unrolled lines."""
    source = tb.source_code(cnnspec.compile_file(ROOT / "specs" / "resnet50.cnn"))
    tree = ast.parse(source)
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes[-1] == "Resnet50" and all(c.startswith("Bottleneck") for c in classes[:-1])
    assert 1 < len(classes) <= 4
    assert "self.layer1.bottleneck2 = Bottleneck2(256, 64)" in source
    assert len(source.splitlines()) < 200


def test_repeated_blocks_become_keras_functions():
    """ResNet-50 in Keras: one function per bottleneck variant (Keras layers need no input
    width, so the two shortcut kinds are the only variants), called once per instance."""
    source = keras_source.render(cnnspec.compile_file(ROOT / "specs" / "resnet50.cnn"))
    tree = ast.parse(source)
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert functions == ["bottleneck", "bottleneck2", "build_model"]
    calls = [
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "").startswith("bottleneck")
    ]
    assert sorted(calls) == ["bottleneck"] * 4 + ["bottleneck2"] * 12
    assert len(source.splitlines()) < 250


def test_a_block_function_never_shadows_a_builtin_the_file_calls():
    """A block called `tuple` beside PaddedPool2D (whose __init__ calls tuple())."""
    import builtins

    source = keras_source.render(
        cnnspec.compile_text(
            "input 16x16x3\nblock tuple(f) { conv f 3x3 same; relu }\ntuple 4\ntuple 8\n"
            "maxpool 2 padding=1\ntuple 8\n"
        )
    )
    tree = ast.parse(source)
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert "PaddedPool2D" in defined and "tuple_" in defined
    assert not defined & set(dir(builtins))


def test_block_classes_compute_what_the_runtime_module_does(tmp_path):
    """The golden spec (a block used four times, a residual, branches): same state_dict keys,
    bit-identical outputs."""
    torch = pytest.importorskip("torch")
    model = cnnspec.compile_file(ROOT / "tests" / "torch_golden" / "features.cnn")
    path = tmp_path / "features_gen.py"
    path.write_text(tb.source_code(model))
    spec = importlib.util.spec_from_file_location("features_gen", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    gen, net = mod.build_model().eval(), tb.build(model).eval()
    assert "class Unit(nn.Module):" in path.read_text()
    assert list(gen.state_dict()) == list(net.state_dict())
    gen.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gen(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "doc, want",
    [
        (pysource.call("f", "a", "b"), ["x = f(a, b)"]),
        (
            pysource.call(
                pysource.call(
                    "layers.Dense", *[pysource.kwarg(f"k{i}", str(i) * 9) for i in range(9)]
                ),
                "x_in",
            ),
            [
                "x = layers.Dense(",
                "    k0=000000000,",
                "    k1=111111111,",
                "    k2=222222222,",
                "    k3=333333333,",
                "    k4=444444444,",
                "    k5=555555555,",
                "    k6=666666666,",
                "    k7=777777777,",
                "    k8=888888888,",
                ")(x_in)",
            ],
        ),
        (
            pysource.Op("+", ("a" * 40, "b" * 40, "c" * 40)),
            ["x = (", "    " + "a" * 40, "    + " + "b" * 40, "    + " + "c" * 40, ")"],
        ),
    ],
)
def test_layout_follows_the_formatter(doc, want):
    assert pysource.statement("x = ", doc, 0) == want
