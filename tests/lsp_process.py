"""`cnnspec lsp` as a subprocess spoken to as an editor would, over stdio with Content-Length
framing. A thread reads the server's framed messages into a queue, so that every wait is
bounded. Shared by the protocol tests (tests/test_lsp.py) and the fuzzer (tests/fuzzing_lsp.py).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class LspProcess:
    """The server process. `inbox` holds each message it sent (a dict, or None once its output
    closed); `bad` holds what it must never send: a message carrying a traceback, a body that
    is not JSON."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cnnspec", "lsp"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.inbox: queue.Queue = queue.Queue()
        self.bad: list[str] = []
        threading.Thread(target=self._read_all, daemon=True).start()

    def _read_all(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    self.inbox.put(None)
                    return
                if not line.strip():
                    break
                key, _, value = line.decode("latin-1").partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value)
            body = out.read(length or 0)
            if b"traceback" in body.lower():
                self.bad.append(body.decode("utf-8", "replace")[:2000])
            try:
                self.inbox.put(json.loads(body))
            except ValueError:
                self.bad.append(f"the server sent a body that is not JSON: {body[:200]!r}")

    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send_message(self, message) -> None:
        """One JSON-RPC message, framed (lone surrogates pass: the fuzzer sends them)."""
        body = json.dumps(message).encode("utf-8", "surrogatepass")
        self.send_raw(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
