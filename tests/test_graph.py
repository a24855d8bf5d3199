"""cnnspec graph: DOT from the IR, rendered by Graphviz; one SVG node per IR node."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import cnnspec
from cnnspec import graph
from cnnspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SPECS = sorted((ROOT / "specs").glob("*.cnn")) + [DATA / "every_construct.cnn"]
SVG = "{http://www.w3.org/2000/svg}"
DOT = shutil.which("dot")
# Without Graphviz the rendering tests skip, unless CI says it must be there (then they fail).
REQUIRED = bool(os.environ.get("CNNSPEC_REQUIRE_GRAPHVIZ"))
needs_dot = pytest.mark.skipif(
    DOT is None and not REQUIRED,
    reason="Graphviz 'dot' is not installed (apt-get install graphviz)",
)


def _svg_classes(svg: bytes) -> dict[str, list]:
    root = ET.fromstring(svg)
    found: dict[str, list] = {}
    for g in root.iter(f"{SVG}g"):
        found.setdefault(g.get("class"), []).append(g)
    return found


@needs_dot
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_spec_renders_one_svg_node_per_layer(path):
    model = cnnspec.compile_file(path)
    svg = graph.render(graph.to_dot(model, params=True), "svg")
    classes = _svg_classes(svg)
    assert len(classes["node"]) == len(model.nodes)
    assert len(classes.get("cluster", [])) == sum(1 for g in model.groups if g.members)
    assert len(classes["edge"]) == sum(len(n.inputs) for n in model.nodes)
    titles = {g.find(f"{SVG}title").text for g in classes["node"]}
    assert titles == {n.name for n in model.nodes}


RESIDUAL = """input 8x8x4
stem = conv 4 3x3 same
r = residual relu { conv 4 3x3 same; bn }
parallel concat { branch a { conv 2 1x1 }; branch b { conv 2 1x1 } }
concat stem
"""


def test_skip_connections_are_the_identity_shortcut_and_references():
    model = cnnspec.compile_text(RESIDUAL)
    skips = graph.skip_edges(model)
    # the identity shortcut into the residual's add, and 'concat stem' reading far back
    assert skips == {("stem", "r.add"), ("stem", "concat2")}
    dot = graph.to_dot(model)
    assert '"stem" -> "r.add" [style=dashed' in dot
    assert '"a.conv1" -> "concat1";' in dot  # a branch end is no skip


def test_clusters_nest_like_the_groups():
    model = cnnspec.compile_file(DATA / "every_construct.cnn")
    dot = graph.to_dot(model)
    outer = dot.index('label="block bottleneck1 (bottleneck)"')
    inner = dot.index('label="residual bottleneck1.residual1"')
    innermost = dot.index('label="block bottleneck1.conv_bn1 (conv_bn)"')
    assert outer < inner < innermost
    depth = dot[:innermost].count("{") - dot[:innermost].count("}")
    assert depth == 4  # digraph, bottleneck1, residual1, conv_bn1


def test_labels_show_shape_and_params_on_request():
    model = cnnspec.compile_text("input 8x8x3\nconv 16 3x3 same relu\n")
    plain, full = graph.to_dot(model), graph.to_dot(model, params=True)
    assert "8x8x16" in plain and "params" not in plain
    assert "params 448  MACs 27,648" in full  # 3*3*3*16 + 16; 8*8*16*27


def test_quote_escapes_for_dot():
    assert graph.quote('a "b" \\ c\nd') == '"a \\"b\\" \\\\ c\\nd"'


@needs_dot
def test_escaped_labels_survive_graphviz():
    nasty = 'say "hi" \\ {x} <y> & z'
    dot = f"digraph g {{ {graph.quote('n')} [label={graph.quote(nasty)}]; }}"
    svg = graph.render(dot, "svg")
    texts = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]
    assert nasty in texts


# --- the command -------------------------------------------------------------------------------


def test_command_writes_dot_without_graphviz(tmp_path):
    out = tmp_path / "net.dot"
    assert main(["graph", str(DATA / "every_construct.cnn"), "-o", str(out)]) == 0
    assert out.read_text().startswith('digraph "everything" {')


@needs_dot
def test_command_renders_svg_and_png(tmp_path):
    spec = str(ROOT / "specs" / "vgg16.cnn")
    assert main(["graph", spec, "-o", str(tmp_path / "v.svg"), "--params"]) == 0
    assert ET.parse(tmp_path / "v.svg").getroot().tag == f"{SVG}svg"
    assert main(["graph", spec, "-o", str(tmp_path / "v.png")]) == 0
    assert (tmp_path / "v.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_graphviz_writes_dot_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(graph.shutil, "which", lambda name: None)
    out = tmp_path / "net.svg"
    assert main(["graph", str(ROOT / "specs" / "vgg16.cnn"), "-o", str(out)]) == 1
    assert not out.exists()
    assert (tmp_path / "net.dot").read_text().startswith("digraph")
    err = capsys.readouterr().err
    assert "not installed" in err and "net.dot" in err


def test_stdout_and_usage_errors(tmp_path, capsys):
    assert main(["graph", str(ROOT / "specs" / "vgg16.cnn")]) == 0
    assert capsys.readouterr().out.startswith('digraph "vgg16"')
    assert main(["graph", str(ROOT / "specs" / "vgg16.cnn"), "-o", str(tmp_path / "x.jpg")]) == 2
    bad = tmp_path / "bad.cnn"
    bad.write_text("input 8x8x1\nconvv 3\n")
    assert main(["graph", str(bad), "-o", str(tmp_path / "x.svg")]) == 1


@needs_dot
def test_dot_binary_agrees_with_the_text():
    model = cnnspec.compile_text(RESIDUAL)
    proc = subprocess.run(
        [DOT, "-Tplain"], input=graph.to_dot(model).encode(), capture_output=True, check=True
    )
    nodes = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("node ")]
    assert len(nodes) == len(model.nodes)
