"""The language server, spoken to over stdio as an editor would (Content-Length framing), and
hostile clients (issue 14): unknown URIs, invalid parameters, broken framing, huge documents."""

from __future__ import annotations

import queue
import time

import pytest
from lsp_process import LspProcess

import cnnspec
from cnnspec.lsp import diagnostics, hover_markdown

pytest.importorskip("pygls")

TIMEOUT = 20.0  # seconds for any one answer; the answers take milliseconds

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


class Client(LspProcess):
    """An editor on the other end of stdio: a request never answered fails the test instead
    of hanging it."""

    def __init__(self):
        super().__init__()
        self.next_id = 0

    def send(self, method: str, params, request: bool = False) -> int | None:
        msg = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            msg["id"] = self.next_id
        self.send_message(msg)
        return msg.get("id")

    def read(self, timeout: float = TIMEOUT) -> dict:
        try:
            msg = self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message from the server in {timeout} s") from None
        assert msg is not None, "the server closed its output"
        assert not self.bad, self.bad[0]
        return msg

    def wait(self, pred, timeout: float = TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.read(max(deadline - time.monotonic(), 0.01))
            if pred(msg):
                return msg

    def close(self):
        try:
            rid = self.send("shutdown", None, request=True)
            self.wait(lambda m: m.get("id") == rid)
            self.send("exit", None)
            self.proc.wait(timeout=10)
        finally:
            self.kill()


@pytest.fixture(scope="module")
def client():
    c = Client()
    rid = c.send(
        "initialize", {"processId": None, "rootUri": None, "capabilities": {}}, request=True
    )
    init = c.wait(lambda m: m.get("id") == rid)
    caps = init["result"]["capabilities"]
    assert caps["hoverProvider"]
    c.send("initialized", {})
    yield c
    c.close()


def _open(client, uri: str, text: str) -> dict:
    client.send(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "cnnspec", "version": 1, "text": text}},
    )
    return client.wait(
        lambda m: m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri
    )["params"]


def test_diagnostics_on_open(client):
    params = _open(client, "file:///tmp/bad.cnn", BAD)
    [diag] = params["diagnostics"]
    assert diag["code"] == "E202"
    assert diag["severity"] == 1
    assert "convv" in diag["message"] and "did you mean 'conv'" in diag["message"]
    assert diag["range"] == {
        "start": {"line": 2, "character": 0},
        "end": {"line": 2, "character": 5},
    }


def test_diagnostics_follow_changes(client):
    uri = "file:///tmp/change.cnn"
    assert _open(client, uri, BAD)["diagnostics"]
    client.send(
        "textDocument/didChange",
        {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": GOOD}]},
    )
    params = client.wait(
        lambda m: m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri
    )["params"]
    assert params["diagnostics"] == []


def _hover(client, uri, line, character):
    rid = client.send(
        "textDocument/hover",
        {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}},
        request=True,
    )
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
    params = _open(client, "file:///tmp/emoji.cnn", 'input 8x8x1\ndropout "\U0001f600" $\n')
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
    text = (
        "input 8x8x3\nblock b(f) { conv f 3x3 same }\nlayer1 = b 4\n"
        "y = conv 4 1x1 from=layer1\nadd layer1\n"
    )
    model = cnnspec.compile_text(text)
    assert "block b" in hover_markdown(model, 3, 2, text)  # `layer1 = b 4`
    assert "`layer1`" in hover_markdown(model, 5, 6, text)  # `add layer1`
    assert "`y`" in hover_markdown(model, 4, 1, text)


# --- hostile clients (issue 14): every request answered, in bounded time, without a traceback ---


def _answer(client, method: str, params) -> dict:
    rid = client.send(method, params, request=True)
    return client.wait(lambda m: m.get("id") == rid)


def _hover_at(client, uri: str, line=0, character=0) -> dict:
    return _answer(
        client,
        "textDocument/hover",
        {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}},
    )


@pytest.mark.parametrize(
    "uri",
    [
        "file:///tmp/never_opened.cnn",
        "file:///dev/zero",
        "file:///tmp/a%00b.cnn",
        "file:///tmp/a\x00b.cnn",
        "untitled:x",
        "",
        "file:///" + "x" * 5000,
    ],
)
def test_hover_on_a_document_never_opened_is_answered_with_nothing(client, uri):
    answer = _hover_at(client, uri)
    assert "error" not in answer and answer["result"] is None


def test_a_document_with_a_nul_in_its_uri(client):
    uri = "file:///tmp/nul\x00name.cnn"
    assert _open(client, uri, GOOD)["diagnostics"] == []
    assert "dense1" in _hover_at(client, uri, 8, 8)["result"]["contents"]["value"]


def test_a_literal_of_5000_digits_is_a_diagnostic(client):
    uri = "file:///tmp/digits.cnn"
    [diag] = _open(client, uri, "input " + "9" * 5000 + "x3x3\n")["diagnostics"]
    assert diag["code"] == "E214"
    assert _hover_at(client, uri)["result"] is None


@pytest.mark.parametrize(
    "position",
    [
        {"line": -1, "character": 0},
        {"line": 0, "character": -5},
        {"line": 2**40, "character": 0},
        {"line": "x"},
        None,
    ],
)
def test_invalid_positions_get_an_answer(client, position):
    uri = "file:///tmp/positions.cnn"
    _open(client, uri, GOOD)
    answer = _answer(
        client, "textDocument/hover", {"textDocument": {"uri": uri}, "position": position}
    )
    assert answer.get("result") is None or "error" in answer
    if "error" in answer:
        assert answer["error"]["code"] == -32602
    assert "dense1" in _hover_at(client, uri, 8, 8)["result"]["contents"]["value"]


def test_malformed_requests_get_an_answer(client):
    for params in ("text", 5, [1, 2], {"textDocument": None}):
        answer = _answer(client, "textDocument/hover", params)
        assert answer["error"]["code"] == -32602
    answer = _answer(client, "cnnspec/noSuchMethod", {})
    assert answer["error"]["code"] == -32601


@pytest.mark.parametrize(
    "broken",
    [
        b'Content-Length: abc\r\n\r\n{"jsonrpc": "2.0"}',
        b'Content-Length: 5000\r\n\r\n{"jsonrpc": "2.0", "method": "x"}',
        b'Content-Length: 3\r\n\r\n{"jsonrpc": "2.0", "method": "initialized"}',
        b"Content-Length: 99999999999999999999\r\n\r\n{}",
        b"garbage without a header\r\n\r\n",
        b"Content-Length: 10\r\n\r\n\xff\xfe\x00\x01not json!",
    ],
)
def test_a_broken_frame_costs_one_message_not_the_session(broken):
    c = Client()
    try:
        rid = c.send(
            "initialize", {"processId": None, "rootUri": None, "capabilities": {}}, request=True
        )
        c.wait(lambda m: m.get("id") == rid)
        c.send("initialized", {})
        c.send_raw(broken)
        uri = "file:///tmp/after_broken.cnn"
        _open(c, uri, GOOD)
        assert "dense1" in _hover_at(c, uri, 8, 8)["result"]["contents"]["value"]
    finally:
        c.close()


def test_a_huge_document_does_not_stall_the_others():
    c = Client()
    try:
        rid = c.send(
            "initialize", {"processId": None, "rootUri": None, "capabilities": {}}, request=True
        )
        c.wait(lambda m: m.get("id") == rid)
        c.send("initialized", {})
        small = "file:///tmp/small.cnn"
        assert _open(c, small, GOOD)["diagnostics"] == []
        # Under the size limit but seconds to check: the check runs beside the protocol.
        c.send(
            "textDocument/didOpen",
            {
                "textDocument": {
                    "uri": "file:///tmp/slow.cnn",
                    "languageId": "cnnspec",
                    "version": 1,
                    "text": "input 8x8x3\n" + "relu\n" * 9_000,
                }
            },
        )
        start = time.monotonic()
        assert "dense1" in _hover_at(c, small, 8, 8)["result"]["contents"]["value"]
        assert time.monotonic() - start < 1.5
        # 100,000 lines: refused with one diagnostic, at once.
        big = "file:///tmp/huge.cnn"
        start = time.monotonic()
        [diag] = _open(c, big, "input 8x8x3\n" + "relu\n" * 100_000)["diagnostics"]
        assert "too large to check as you type" in diag["message"]
        assert time.monotonic() - start < 5
        assert _hover_at(c, big, 1, 1)["result"] is None
        assert "dense1" in _hover_at(c, small, 8, 8)["result"]["contents"]["value"]
    finally:
        c.close()
