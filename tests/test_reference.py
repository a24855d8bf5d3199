"""The layer reference (`cnnspec kinds`, README's table) is read from the registry and kept
complete: a new kind without a worked example, or a stale README table, fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

import cnnspec
from cnnspec.cli import main
from cnnspec.layers import KEYWORDS, REGISTRY
from cnnspec.reference import EXAMPLES, readme_with_table, reference, render_entry

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_kind_has_a_worked_example_that_uses_it(kind):
    assert kind in EXAMPLES, f"add a worked example for {kind!r} to cnnspec/reference.EXAMPLES"
    shape, lines = EXAMPLES[kind]
    model = cnnspec.compile_text(f"input {shape}\n{lines}\n")
    node = model.nodes[0] if kind == "input" else model.nodes[-1]
    assert node.kind == kind
    ref = reference(kind)
    assert ref.example_lines and ref.example_lines[0].startswith("-> ")


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_entry_lists_every_argument_with_its_default(kind):
    cls = REGISTRY[kind]
    ref = reference(kind)
    names = [a.name for a in ref.arguments]
    assert names == [n for n in cls.model_fields if n != "kind"]
    for arg in ref.arguments:
        field = cls.model_fields[arg.name]
        assert (arg.default is None) == field.is_required()


def test_conv_entry_shows_the_arithmetic():
    text = render_entry(reference("conv"))
    assert "params: 3*3*3*64 + 64 = 1,792" in text
    assert "padding     same | valid | FxF of int >= 0  (default valid)" in text


def test_readme_table_is_the_registry_s():
    readme = (ROOT / "README.md").read_text()
    assert readme_with_table(readme) == readme, "README's table of kinds is stale: make docs"


def test_command_lists_every_kind_and_finds_keywords(capsys):
    assert main(["kinds"]) == 0
    listed = [
        line.split()[0]
        for line in capsys.readouterr().out.splitlines()
        if line and not line.startswith("`")
    ]
    assert listed == list(REGISTRY)
    for word in ("maxpool", "relu", "fc", "concat"):
        assert main(["kinds", word]) == 0
        cls, _ = KEYWORDS[word]
        assert capsys.readouterr().out.startswith(cls.model_fields["kind"].default + ":")


def test_unknown_kind_is_a_usage_error_with_a_suggestion(capsys):
    assert main(["kinds", "conx"]) == 2
    err = capsys.readouterr().err
    assert "did you mean conv" in err and "Traceback" not in err
