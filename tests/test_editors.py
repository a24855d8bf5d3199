"""The TextMate grammar: generated from the language, so it must match what is committed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cnnspec.layers import KEYWORDS
from cnnspec.textmate import grammar, grammar_keywords, render

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "editors" / "cnnspec.tmLanguage.json"


def test_committed_grammar_is_up_to_date():
    assert COMMITTED.read_text() == render(), "regenerate: make editors"


def _scopes(line: str) -> dict[str, str]:
    """A minimal TextMate scanner: at each point the earliest match wins, ties go to the first
    pattern; returns text -> scope (the capture's scope for captured groups)."""
    repo = grammar()["repository"]
    pats = [
        (repo[p["include"][1:]], re.compile(repo[p["include"][1:]]["match"]))
        for p in grammar()["patterns"]
    ]
    found, pos = {}, 0
    while pos < len(line):
        best = None
        for rule, rx in pats:
            m = rx.search(line, pos)
            if m and m.end() > m.start() and (best is None or m.start() < best[1].start()):
                best = (rule, m)
        if best is None:
            break
        rule, m = best
        if "captures" in rule:
            for idx, cap in rule["captures"].items():
                found[m.group(int(idx))] = cap["name"]
        else:
            found[m.group(0)] = rule["name"]
        pos = m.end()
    return found


@pytest.mark.parametrize("word", sorted(KEYWORDS))
def test_every_layer_keyword_is_a_layer(word):
    assert _scopes(f"{word} 1")[word] == "support.function.layer.cnnspec"


@pytest.mark.parametrize("word", grammar_keywords())
def test_every_grammar_keyword_is_a_keyword(word):
    assert _scopes(f"{word} x")[word].startswith("keyword.")


def test_a_line_is_scoped_as_expected():
    s = _scopes('y = conv 64 3x3 stride=2 same relu; x = dense 0.5  # note "q"')
    assert s["y"] == "variable.other.tensor.cnnspec"
    assert s["conv"] == "support.function.layer.cnnspec"
    assert s["64"] == "constant.numeric.integer.cnnspec"
    assert s["3x3"] == "constant.numeric.size.cnnspec"
    assert s["stride"] == "variable.parameter.cnnspec"
    assert s["same"] == "constant.language.cnnspec"
    assert s["relu"] == "support.constant.activation.cnnspec"
    assert s["0.5"] == "constant.numeric.float.cnnspec"
    assert s['# note "q"'] == "comment.line.number-sign.cnnspec"
    s = _scopes("block stage(f, n=2) { repeat n { conv f 3x3 } }")
    assert s["stage"] == "entity.name.function.block.cnnspec"
    assert s["repeat"] == "keyword.control.cnnspec"
    s = _scopes('transfer { source torchvision:resnet18; freeze pattern "layer1.*" }')
    assert s["torchvision:resnet18"] == "string.unquoted.source.cnnspec"
    assert s['"layer1.*"'] == "string.quoted.double.cnnspec"


def test_grammar_is_valid_json_with_a_scope():
    data = json.loads(COMMITTED.read_text())
    assert data["scopeName"] == "source.cnnspec" and data["fileTypes"] == ["cnn"]
