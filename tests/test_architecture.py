"""The shape of the package, checked: no import cycles, a core that imports no backend and no
framework, and a file list for a new layer kind that ARCHITECTURE.md and the code agree on.

The import graph is read with `ast`, not by importing: every `import` / `from` statement,
those inside functions included (a lazy import is still a dependency), resolved to the
cnnspec module it names. `from pkg import name` points at `pkg.name` where that is a module,
else at `pkg` itself; the parent packages a dotted import runs are not edges (every module
would otherwise depend on `cnnspec/__init__.py` and its re-exports).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import cnnspec
from cnnspec.errors import SpecError
from cnnspec.layers import REGISTRY

PACKAGE = Path(cnnspec.__file__).parent
ROOT = PACKAGE.parent

# The core: the language, the IR and everything that reads or prints it without a framework.
# `cnnspec summary`, `check`, `fmt`, `diff`, `graph`, `validate` and the language server run on
# these alone, so they must not reach a backend, the training code or torch / TensorFlow / Keras
# (not even lazily: a tool that embeds the IR validator must not need a framework installed).
# A new framework-free module belongs here; `test_core_list_is_complete` says so when one
# is missing.
CORE = (
    "cnnspec",  # the package's front door (compile_file, validate, ...)
    "cnnspec.compiler",  # text -> IR
    "cnnspec.parse",  # text -> syntax tree
    "cnnspec.elaborate",  # syntax tree -> IR: blocks, repeats, names
    "cnnspec.settings",  # the spec's compile / transfer sections
    "cnnspec.values",  # literals and expressions of the language
    "cnnspec.ir",  # the IR: nodes, shapes, totals, JSON
    "cnnspec.layers",  # the layer registry: arguments and shape / parameter / MAC rules
    "cnnspec.logits",  # a final activation left out of a model trained on logits
    "cnnspec.errors",  # located errors and their rendering
    "cnnspec.validate",  # an IR document from elsewhere, checked
    "cnnspec.summary",  # the table of `cnnspec summary`
    "cnnspec.fmt",  # the canonical printer
    "cnnspec.diff",  # two specs compared
    "cnnspec.graph",  # the graph drawn (DOT / Mermaid)
    "cnnspec.lsp",  # the language server
    "cnnspec.textmate",  # the editor grammar
    "cnnspec.resources",  # where the grammar and templates are
)
FRAMEWORKS = ("torch", "torchvision", "tensorflow", "keras", "onnx", "onnxruntime")
NOT_IN_CORE = ("cnnspec.backends", "cnnspec.train", "cnnspec.torch")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _target(name: str) -> str | None:
    """The cnnspec module `name` names, or its longest existing prefix."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(cnnspec modules, top-level outside packages) that `module` imports anywhere in it."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    inner, outer = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            names = [
                f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem for a in node.names
            ]
        else:
            continue
        for name in names:
            if name == "cnnspec" or name.startswith("cnnspec."):
                target = _target(name)
                if target and target != module:
                    inner.add(target)
            else:
                outer.add(name.split(".")[0])
    return inner, outer


GRAPH = {m: imports_of(m) for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, colouring)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_resolver_reads_relative_and_lazy_imports():
    inner, outer = imports_of("cnnspec.backends.torch.runtime")
    assert "cnnspec.backends.torch.plan" in inner  # `from .plan import ...`
    assert "torch" in outer  # imported inside a function


def all_cycles(graph: dict[str, set[str]], limit: int = 20) -> list[list[str]]:
    """Cycles found one at a time, each broken (its closing edge removed) before the next
    search, so that one failure lists them all."""
    graph = {k: set(v) for k, v in graph.items()}
    found = []
    while len(found) < limit and (cycle := find_cycle(graph)):
        found.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])
    return found


def test_no_import_cycles():
    cycles = all_cycles({m: inner for m, (inner, _) in GRAPH.items()})
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _in_core(module: str) -> bool:
    """`cnnspec` stands for the package's __init__ alone; every other entry for its subtree."""
    return any(module == c or (c != "cnnspec" and module.startswith(c + ".")) for c in CORE)


def test_the_core_imports_no_backend_and_no_framework():
    """Transitively: a core module may not reach a backend through a helper either."""
    bad = []
    for module in filter(_in_core, MODULES):
        seen, todo = {module}, [module]
        while todo:
            current = todo.pop()
            inner, outer = GRAPH[current]
            for fw in sorted(set(outer) & set(FRAMEWORKS)):
                bad.append(f"{module} -> ... {current} imports {fw}")
            for nxt in inner:
                if any(nxt == n or nxt.startswith(n + ".") for n in NOT_IN_CORE):
                    bad.append(f"{module} -> ... {current} imports {nxt}")
                elif nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
    assert not bad, "\n".join(sorted(set(bad)))


def test_core_list_is_complete():
    """Every module of the core list exists (a rename must update it)."""
    missing = [c for c in CORE if c not in MODULES]
    assert not missing, f"CORE names modules that do not exist: {missing}"


# --- Emitter tables: one per backend, keyed by layer kind -----------------------------------


def _tables() -> dict[str, dict]:
    from cnnspec.backends import keras_emitters
    from cnnspec.backends.torch import emitters as torch_emitters

    return {"torch": torch_emitters.EMITTERS, "keras": keras_emitters.EMITTERS}


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_every_registry_kind_has_an_emitter(backend):
    """Internal kinds (input) included: a new kind needs a row in both tables, and a table
    row for a kind that no longer exists is dead code."""
    table = _tables()[backend]
    assert set(table) == set(REGISTRY), (
        f"{backend} emitters: missing {sorted(set(REGISTRY) - set(table))}, "
        f"unknown {sorted(set(table) - set(REGISTRY))}"
    )


def test_no_layer_class_carries_a_backend_method():
    for kind, cls in REGISTRY.items():
        own = {
            name
            for klass in cls.__mro__
            if klass.__module__.startswith("cnnspec.layers")
            for name in vars(klass)
        }
        leftover = {n for n in own if re.match(r"(torch|keras)_|without_softmax", n)}
        assert not leftover, f"{kind} still has {sorted(leftover)}: move them to an emitter table"


SPEC = "input 8x8x3\nconv 4 3x3 same relu\nflatten\ndense 10 softmax\n"


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_a_missing_emitter_is_a_located_error(backend, monkeypatch):
    """No framework needed: the plan asks the table before anything is built."""
    from cnnspec.backends import keras_plan
    from cnnspec.backends.torch import plan as torch_plan  # the function

    table = _tables()[backend]
    monkeypatch.delitem(table, "dense")
    model = cnnspec.compile_text(SPEC, "net.cnn")
    with pytest.raises(SpecError) as info:
        (torch_plan if backend == "torch" else keras_plan.recipes)(model)
    err = info.value
    assert (err.code, err.span.line, err.path) == ("E420", 4, "net.cnn")
    assert "'dense'" in err.message and "emitters.py" in err.hint


# --- The files a new layer kind touches: ARCHITECTURE.md's list, checked ---------------------

# Each file (or folder) must name every registry kind, by its kind or one of its keywords.
NEW_KIND_FILES = (
    "cnnspec/layers/",
    "cnnspec/backends/torch/emitters.py",
    "cnnspec/backends/keras_emitters.py",
    "cnnspec/reference.py",
    "README.md",
    "editors/cnnspec.tmLanguage.json",
    "tests/test_layers.py",
    "tests/test_torch_backend.py",
    "tests/keras_specs.py",
    "tests/netgen.py",
)


def _documented_files() -> list[str]:
    """The paths ARCHITECTURE.md lists under 'Adding a layer kind' (bullets `- `path` - ...`)."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("### Adding a layer kind", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^- `([^`]+)`", section, flags=re.MULTILINE)


def test_architecture_lists_the_files_a_new_kind_needs():
    assert _documented_files() == list(NEW_KIND_FILES)


def _text(path: str) -> str:
    target = ROOT / path
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


@pytest.mark.parametrize("path", NEW_KIND_FILES)
def test_every_kind_is_in_each_file_a_new_kind_needs(path):
    text = _text(path)
    missing = [
        kind
        for kind, cls in REGISTRY.items()
        # an internal kind written by the input line's arguments (preprocess) has no word
        # of its own for an editor to highlight
        if not (cls.internal and kind != "input" and path.startswith("editors/"))
        and not any(
            re.search(rf"(?<![\w.]){re.escape(word)}(?![\w])", text)
            for word in {kind, *cls.keywords}
        )
    ]
    assert not missing, f"{path} does not name layer kind(s) {missing}"
