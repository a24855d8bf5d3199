"""The language server, spoken to over stdio as an editor would (Content-Length framing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cnnspec
from cnnspec.lsp import diagnostics, hover_markdown

pytest.importorskip("pygls")

ROOT = Path(__file__).resolve().parent.parent
BAD = "input 32x32x3\nconv 16 3x3 same relu\nconvv 8 3x3\n"
GOOD = """input 32x32x3
block stage(f) {
  conv f 3x3 same relu
  pool 2
}
stage 16
stage 32
x = conv 8 1x1
gap; dense 10 softmax
"""

class Client:
    def __init__(self):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "cnnspec", "lsp"], cwd=ROOT,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.next_id = 0

    def send(self, method: str, params: dict, request: bool = False) -> int | None:
        msg = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            msg["id"] = self.next_id
        body = json.dumps(msg).encode()
        self.proc.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.proc.stdin.flush()
        return msg.get("id")

    def read(self) -> dict:
        length = None
        while True:
            line = self.proc.stdout.readline()
            assert line, "the server closed its output"
            line = line.strip()
            if not line:
                break
            key, _, value = line.decode().partition(":")
            if key.lower() == "content-length":
                length = int(value)
        return json.loads(self.proc.stdout.read(length))

    def wait(self, pred, limit: int = 50) -> dict:
        for _ in range(limit):
            msg = self.read()
            if pred(msg):
                return msg
        raise AssertionError("no such message")

    def close(self):
        try:
            rid = self.send("shutdown", {}, request=True)
            self.wait(lambda m: m.get("id") == rid)
            self.send("exit", {})
            self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

@pytest.fixture(scope="module")
def client():
    c = Client()
    rid = c.send("initialize", {"processId": None, "rootUri": None, "capabilities": {}},
                 request=True)
    init = c.wait(lambda m: m.get("id") == rid)
    caps = init["result"]["capabilities"]
    assert caps["hoverProvider"]
    c.send("initialized", {})
    yield c
    c.close()

def _open(client, uri: str, text: str) -> dict:
    client.send("textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "cnnspec", "version": 1, "text": text}})
    return client.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics"
                       and m["params"]["uri"] == uri)["params"]

def test_diagnostics_on_open(client):
    params = _open(client, "file:///tmp/bad.cnn", BAD)
    [diag] = params["diagnostics"]
    assert diag["code"] == "E202"
    assert diag["severity"] == 1
    assert "convv" in diag["message"] and "did you mean 'conv'" in diag["message"]
    assert diag["range"] == {"start": {"line": 2, "character": 0},
                             "end": {"line": 2, "character": 5}}

def test_diagnostics_follow_changes(client):
    uri = "file:///tmp/change.cnn"
    assert _open(client, uri, BAD)["diagnostics"]
    client.send("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                           "contentChanges": [{"text": GOOD}]})
    params = client.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics"
                         and m["params"]["uri"] == uri)["params"]
    assert params["diagnostics"] == []

def _hover(client, uri, line, character):
    rid = client.send("textDocument/hover", {"textDocument": {"uri": uri},
                                             "position": {"line": line, "character": character}},
                      request=True)
    return client.wait(lambda m: m.get("id") == rid)["result"]

def test_hover_shows_shape_params_and_macs(client):
    uri = "file:///tmp/good.cnn"
    assert _open(client, uri, GOOD)["diagnostics"] == []
    # The dense layer on the last line: 32 -> 10.
    text = _hover(client, uri, 8, 8)["contents"]["value"]
    assert "dense1" in text and "**10**" in text and "params 90" in text and "MACs 80" in text
    # A conv inside a block is one IR node per use: both are listed.
    text = _hover(client, uri, 2, 4)["contents"]["value"]
    assert "stage1.conv1" in text and "stage2.conv1" in text
    assert "32x32x16" in text and "16x16x32" in text
    # On a block call: the instance's totals.
    text = _hover(client, uri, 6, 1)["contents"]["value"]
    assert "block stage" in text and "`stage2`" in text and "8x8x32" in text
    # On the name of a tensor where it is read: that tensor.
    text = _hover(client, uri, 7, 1)["contents"]["value"]
    assert "`x`" in text and "8x8x8" in text
    # Blank space: nothing.
    assert _hover(client, uri, 4, 3) is None

def test_ranges_are_in_utf16_units(client):
    # LSP counts UTF-16 code units: the emoji is one code point but two units.
    params = _open(client, "file:///tmp/emoji.cnn", 'input 8x8x1\ndropout "\U0001F600" $\n')
    [diag] = params["diagnostics"]
    assert diag["code"] == "E102"
    assert diag["range"]["start"] == {"line": 1, "character": 13}

# --- the pure mapping, without the protocol -----------------------------------------------------

def test_diagnostic_ranges_are_zero_based():
    with pytest.raises(cnnspec.SpecErrors) as info:
        cnnspec.compile_text(BAD)
    [d] = diagnostics(info.value, BAD)
    assert (d.line, d.character, d.end_line, d.end_character) == (2, 0, 2, 5)

def test_hover_markdown_outside_everything():
    model = cnnspec.compile_text(GOOD)
    assert hover_markdown(model, 100, 1, GOOD) is None


def test_hover_on_names_of_block_instances_and_references():
    text = ("input 8x8x3\nblock b(f) { conv f 3x3 same }\nlayer1 = b 4\n"
            "y = conv 4 1x1 from=layer1\nadd layer1\n")
    model = cnnspec.compile_text(text)
    assert "block b" in hover_markdown(model, 3, 2, text)           # `layer1 = b 4`
    assert "`layer1`" in hover_markdown(model, 5, 6, text)          # `add layer1`
    assert "`y`" in hover_markdown(model, 4, 1, text)
