"""Fuzzing of the language server over its real protocol: a `cnnspec lsp` subprocess gets random
JSON-RPC (known and unknown methods, random ids and parameters, unknown and hostile URIs,
invalid positions, mutated and huge documents) and broken frames (bad Content-Length, garbage,
bodies that are not JSON or not objects). After every few inputs a probe hover on a document it
knows must be answered within HANG_SECONDS, and no message from the server may carry a
traceback. Used by tests/fuzzing.py (`make fuzz`) and tests/test_fuzz.py.
"""

from __future__ import annotations

import queue
import random
import subprocess
import time

from lsp_process import LspProcess

HANG_SECONDS = 10.0
PROBE_EVERY = 25
PROBE_URI = "file:///fuzz/probe.cnn"
PROBE_TEXT = "input 8x8x3\nconv 4 3x3 same relu\nflatten\ndense 10 softmax\n"

METHODS = [
    "textDocument/hover",
    "textDocument/didOpen",
    "textDocument/didChange",
    "textDocument/didClose",
    "textDocument/didSave",
    "textDocument/completion",
    "textDocument/definition",
    "workspace/symbol",
    "$/cancelRequest",
    "$/setTrace",
    "initialized",
    "cnnspec/unknown",
    "",
    "\x00",
    "x" * 300,
]
URIS = [
    "file:///fuzz/a.cnn",
    "file:///fuzz/b.cnn",
    PROBE_URI,
    "file:///dev/zero",
    "file:///dev/stdin",
    "file:///proc/self/mem",
    "file:///fuzz/nul\x00.cnn",
    "file:///fuzz/%00.cnn",
    "untitled:1",
    "",
    "file:///" + "x" * 3000,
    "http://x/y.cnn",
    "file:///fuzz/%zz.cnn",
    "file:///fuzz/\ud800.cnn",
    5,
    None,
]


class Server(LspProcess):
    """The server, initialised, with the probe document open."""

    def __init__(self):
        super().__init__()
        self.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}}, "init")
        self.wait_for("init")
        self.notify("initialized", {})
        self.open(PROBE_URI, PROBE_TEXT)

    send = LspProcess.send_message

    def request(self, method: str, params, rid) -> None:
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})

    def notify(self, method: str, params) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def open(self, uri: str, text: str, version: int = 1) -> None:
        self.notify(
            "textDocument/didOpen",
            {
                "textDocument": {
                    "uri": uri,
                    "languageId": "cnnspec",
                    "version": version,
                    "text": text,
                }
            },
        )

    def wait_for(self, rid, seconds: float = HANG_SECONDS) -> dict | None:
        """The answer to request `rid`, or None if none came within `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                msg = self.inbox.get(timeout=left)
            except queue.Empty:
                return None
            if msg is None:
                return None
            if isinstance(msg, dict) and msg.get("id") == rid and "method" not in msg:
                return msg

    def close(self) -> None:
        try:
            self.request("shutdown", None, "bye")
            self.wait_for("bye", 5)
            self.notify("exit", None)
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            self.kill()


def _position(rng: random.Random):
    return rng.choice(
        [
            {"line": rng.randrange(0, 6), "character": rng.randrange(0, 30)},
            {"line": -1, "character": 0},
            {"line": 0, "character": -7},
            {"line": 2**31, "character": 2**31},
            {"line": 1.5, "character": 0},
            {"line": "1"},
            {},
            None,
        ]
    )


def _document(rng: random.Random, sources: list[str], mutate) -> str:
    roll = rng.random()
    if roll < 0.004:
        return "input 8x8x3\n" + "relu\n" * rng.choice([20_000, 100_000])
    if roll < 0.01:
        return "input " + "9" * 5000 + "x3x3\n"
    return mutate(rng.choice(sources), rng)


def message(rng: random.Random, sources: list[str], mutate, random_json) -> bytes | dict:
    """One hostile input: a JSON-RPC message as a dict, or raw bytes for broken framing."""
    roll = rng.random()
    if roll < 0.06:
        body = rng.choice(
            [
                b"{",
                b"[1, 2]",
                b"5",
                b"null",
                b'"x"',
                b"\xff\xfe\x00",
                b'{"jsonrpc": "2.0", "id": 1}',
                b'{"jsonrpc": "1.0"}',
            ]
        )
        length = rng.choice([len(body), 0, len(body) + 40, max(len(body) - 1, 0)])
        header = rng.choice(
            [
                b"Content-Length: %d\r\n\r\n" % length,
                b"Content-Length: abc\r\n\r\n",
                b"Content-Length: -5\r\n\r\n",
                b"content-length:%d\r\n\r\n" % length,
                b"Content-Length: 99999999999999\r\n\r\n",
                b"\r\n\r\n",
                b"garbage\r\n",
            ]
        )
        return header + body
    method = rng.choice(METHODS)
    uri = rng.choice(URIS)
    if method in ("textDocument/didOpen", "textDocument/didChange") and rng.random() < 0.8:
        uri = rng.choice(URIS[:2])  # mostly documents that then exist
    text = _document(rng, sources, mutate) if "did" in method else None
    params = {
        "textDocument/hover": {"textDocument": {"uri": uri}, "position": _position(rng)},
        "textDocument/didOpen": {
            "textDocument": {
                "uri": uri,
                "languageId": "cnnspec",
                "version": rng.randrange(-2, 100),
                "text": text,
            }
        },
        "textDocument/didChange": {
            "textDocument": {"uri": uri, "version": rng.randrange(100)},
            "contentChanges": [{"text": text}],
        },
    }.get(method, {"textDocument": {"uri": uri}})
    if rng.random() < 0.1:
        params = random_json(rng)
    msg = {"jsonrpc": "2.0", "method": method, "params": params}
    if rng.random() < 0.5:
        msg["id"] = rng.choice([rng.randrange(10**6), "s", -1, None, 1.5, 2**70])
    return msg


def campaign(count: int, seed: int = 0) -> tuple[int, list, float]:
    """`count` inputs to one server (restarted if it dies); (inputs, failures, slowest probe)."""
    from fuzzing import mutate, random_json, specs

    rng = random.Random(seed)
    sources = specs()
    failures, slowest = [], 0.0
    server, recent = Server(), []
    try:
        for i in range(count):
            msg = message(rng, sources, mutate, random_json)
            recent = (recent + [msg])[-PROBE_EVERY:]
            try:
                server.send_raw(msg) if isinstance(msg, bytes) else server.send(msg)
            except OSError:
                pass  # the probe below says whether the server is alive
            if (i + 1) % PROBE_EVERY and i != count - 1:
                continue
            # A probe: the server must still answer, promptly, about a document it knows.
            server.open(PROBE_URI, PROBE_TEXT)
            start = time.perf_counter()
            rid = f"probe-{i}"
            try:
                server.request(
                    "textDocument/hover",
                    {"textDocument": {"uri": PROBE_URI}, "position": {"line": 3, "character": 1}},
                    rid,
                )
                answer = server.wait_for(rid)
            except OSError:
                answer = None
            slowest = max(slowest, time.perf_counter() - start)
            if answer is None or server.bad:
                why = (
                    server.bad[0]
                    if server.bad
                    else (
                        f"no answer to a probe within {HANG_SECONDS} s (server "
                        f"{'alive' if server.proc.poll() is None else 'dead'})"
                    )
                )
                failures.append((recent, why))
                server.close()
                server, recent = Server(), []
    finally:
        server.close()
    return count, failures, slowest
