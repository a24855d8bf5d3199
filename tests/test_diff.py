"""cnnspec diff: layers matched by name then position; changes, totals and deltas."""

from __future__ import annotations

import json
from pathlib import Path

import cnnspec
from cnnspec.cli import main
from cnnspec.diff import diff, match, render_markdown, render_text

ROOT = Path(__file__).resolve().parent.parent
VGG = (ROOT / "specs" / "vgg16.cnn").read_text()

BASE = """input 32x32x3
stem = conv 16 3x3 same relu
pool 2
conv 32 3x3 same relu
dropout 0.5
gap
dense 10 softmax
compile { optimizer sgd lr=0.01 }
"""
CHANGED = """input 32x32x3
stem = conv 16 3x3 same relu
pool 2
conv 64 3x3 same relu
bn
gap
dense 10 softmax
compile { optimizer sgd lr=0.1 }
"""


def _d(a: str, b: str):
    return diff(cnnspec.compile_text(a), cnnspec.compile_text(b), "a", "b")


def test_identical_specs_do_not_differ():
    d = _d(VGG, VGG)
    assert not d.different
    assert all(r.status == "same" for r in d.layers)
    assert all(t["delta"] in (0, None) for t in d.totals.values())


def test_a_default_written_out_is_no_change():
    a = cnnspec.compile_text("input 32x32x3\nconv 8 3x3\npool 2 padding=1\n")
    b = cnnspec.compile_text("input 32x32x3\nconv 8 3x3 padding=0\npool 2 padding=1\n")
    assert not diff(a, b).different
    c = cnnspec.compile_text("input 32x32x3\nconv 8 3x3 padding=1\npool 2 padding=1\n")
    rows = {r.name: r for r in diff(a, c).layers if r.status != "same"}
    assert rows["conv1"].changes[0]["what"] == "padding"


def test_changes_added_and_removed():
    d = _d(BASE, CHANGED)
    rows = {r.name: r for r in d.layers if r.status != "same"}
    assert set(rows) == {"conv1", "dropout1", "bn1", "gap1", "dense1"}
    conv = rows["conv1"]
    assert conv.status == "changed"
    changes = {c["what"]: (c["a"], c["b"]) for c in conv.changes}
    assert changes["filters"] == ("32", "64")
    assert changes["shape"] == ("16x16x32", "16x16x64")
    assert changes["trainable"] == (16 * 9 * 32 + 32, 16 * 9 * 64 + 64)
    assert rows["dropout1"].status == "removed" and rows["bn1"].status == "added"
    assert {c["what"] for c in rows["gap1"].changes} == {"inputs", "shape"}
    # the dense layer reads 64 features instead of 32: its counts change, nothing else
    assert {c["what"] for c in rows["dense1"].changes} == {"trainable", "macs"}
    a, b = cnnspec.compile_text(BASE), cnnspec.compile_text(CHANGED)
    assert d.totals["params"] == {"a": a.params, "b": b.params, "delta": b.params - a.params}
    assert d.totals["macs"]["delta"] == b.macs - a.macs
    assert d.settings == [{"what": "compile.optimizer.lr", "a": "0.01", "b": "0.1"}]


def test_a_renamed_layer_pairs_by_position():
    a = "input 8x8x1\nx = conv 4 3x3\nrelu\ny = conv 8 3x3\n"
    b = "input 8x8x1\nfirst = conv 4 3x3\nrelu\ny = conv 8 3x3\n"
    d = _d(a, b)
    changed = [r for r in d.layers if r.status != "same"]
    assert [(r.a, r.b, r.status) for r in changed] == [("x", "first", "changed")]
    assert changed[0].changes == [{"what": "name", "a": "x", "b": "first"}]
    # relu reads the renamed layer: not reported as an input change
    assert "renamed" in render_text(d)


def test_inserted_layer_does_not_shift_the_rest():
    a = "input 8x8x1\nconv 4 3x3; conv 4 3x3; conv 4 3x3\n"
    b = "input 8x8x1\nconv 4 3x3; bn; conv 4 3x3; conv 4 3x3\n"
    ma, mb = cnnspec.compile_text(a), cnnspec.compile_text(b)
    pairs = match(ma, mb)
    assert [
        (ma.nodes[i].name if i is not None else None, mb.nodes[j].name if j is not None else None)
        for i, j in pairs
    ] == [
        ("input", "input"),
        ("conv1", "conv1"),
        (None, "bn1"),
        ("conv2", "conv2"),
        ("conv3", "conv3"),
    ]


def test_removed_rows_stay_in_place():
    d = _d(BASE, CHANGED)
    order = [r.name for r in d.layers]
    assert order.index("dropout1") == order.index("conv1") + 1


def test_renderers():
    d = _d(BASE, CHANGED)
    text = render_text(d)
    assert "~ conv1" in text and "- dropout1" in text and "+ bn1" in text
    assert "filters 32 -> 64" in text and "compile.optimizer.lr: 0.01 -> 0.1" in text
    md = render_markdown(d)
    assert "| + | `bn1` |" in md and "| total | before | after | delta |" in md
    data = d.to_dict()
    assert data["different"] and data["unchanged"] == len(d.layers) - 5


def test_command_formats_and_exit_codes(tmp_path, capsys):
    a, b = tmp_path / "a.cnn", tmp_path / "b.cnn"
    a.write_text(BASE)
    b.write_text(CHANGED)
    assert main(["diff", str(a), str(b)]) == 0
    assert "~ conv1" in capsys.readouterr().out
    assert main(["diff", str(a), str(b), "--exit-code"]) == 1
    capsys.readouterr()
    assert main(["diff", str(a), str(a), "--exit-code"]) == 0
    capsys.readouterr()
    assert main(["diff", str(a), str(b), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["different"] and data["totals"]["layers"] == {"a": 6, "b": 6, "delta": 0}
    assert main(["diff", str(a), str(b), "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith(f"**{a}** → **{b}**")
    bad = tmp_path / "bad.cnn"
    bad.write_text("input 8x8x1\nconvv 3\n")
    assert main(["diff", str(a), str(bad)]) == 1
