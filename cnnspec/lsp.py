"""A language server for .cnn files (`cnnspec lsp`, on stdio), built on pygls.

- diagnostics on open, change and save: every SpecError with its span as an LSP range;
- hover: the output shape, parameters and MACs of the layer under the cursor. A statement inside
  a block or a repeat makes one IR node per use, so the hover lists each of them; on a block
  call, a residual or a parallel it sums the group.

The mapping between the spec and the IR is pure (`diagnostics`, `hover_markdown`) and does not
need pygls; only `serve` imports it, so that `import cnnspec` never does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SpecErrors
from .ir import Model
from .layers import fmt_int, fmt_shape

MAX_HOVER_ROWS = 12


@dataclass(frozen=True)
class Diagnostic:
    """0-based lines, columns in code points, end exclusive (LSP converts to its own units)."""

    line: int
    character: int
    end_line: int
    end_character: int
    code: str
    message: str


def compile_source(text: str, path: str | None = None) -> tuple[Model | None, SpecErrors | None]:
    from .compiler import compile_text

    try:
        return compile_text(text, path), None
    except SpecErrors as errs:
        return None, errs


def diagnostics(errs: SpecErrors | None, text: str) -> list[Diagnostic]:
    if errs is None:
        return []
    lines = text.splitlines() or [""]
    out = []
    for err in errs.errors:
        message = err.message
        if err.expected:
            message += f"\nexpected: {err.expected}"
        if err.hint:
            message += f"\nhint: {err.hint}"
        message += "".join(f"\n{n}" for n in err.notes)
        out.append(Diagnostic(*_range(err.span, lines), code=err.code, message=message))
    return out


def _range(span, lines: list[str]) -> tuple[int, int, int, int]:
    """A 1-based, end-exclusive span -> a 0-based range; a missing end covers the line."""
    if span is None:
        return 0, 0, 0, max(len(lines[0]), 1)
    line, col = max(span.line - 1, 0), max(span.column - 1, 0)
    if span.end_line is not None and span.end_column is not None:
        return line, col, span.end_line - 1, max(span.end_column - 1, 0)
    text = lines[line] if 0 <= line < len(lines) else ""
    return line, col, line, max(len(text.rstrip()), col + 1)


def _contains(span, line: int, col: int) -> bool:
    """Is the 1-based (line, col) inside the span (its end included, for the cursor)?"""
    if span is None or span.end_line is None:
        return False
    return (span.line, span.column) <= (line, col) <= (span.end_line, span.end_column)


def _size(span) -> tuple[int, int]:
    return span.end_line - span.line, span.end_column - span.column


def word_at(text: str, line: int, col: int) -> str | None:
    """The name (letters, digits, '_', '.') under the 1-based (line, col), if any."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    src, i = lines[line - 1], col - 1
    for m in re.finditer(r"[A-Za-z_][A-Za-z0-9_.]*", src):
        if m.start() <= i <= m.end():
            return m.group(0)
    return None


def hover_markdown(model: Model, line: int, col: int, text: str | None = None) -> str | None:
    """Markdown for the 1-based (line, col): a tensor named there (`layer1 = ...`, `from=x`,
    `output a`), else the innermost layer or group whose statement is there, or None."""
    word = word_at(text, line, col) if text is not None else None
    if word:
        named = [g for g in model.groups if g.path == word and g.members]
        if named:
            return _groups_markdown(model, named)
        if word in {n.name for n in model.nodes}:
            return _nodes_markdown([model.node(word)])
    nodes = [n for n in model.nodes if _contains(n.span, line, col)]
    groups = [g for g in model.groups if g.members and _contains(g.span, line, col)]
    spans = [n.span for n in nodes] + [g.span for g in groups]
    if not spans:
        return None
    best = min(_size(s) for s in spans)
    inner_groups = [g for g in groups if _size(g.span) == best]
    if inner_groups:
        return _groups_markdown(model, inner_groups)
    return _nodes_markdown([n for n in nodes if _size(n.span) == best])


def _nodes_markdown(nodes) -> str:
    if len(nodes) == 1:
        n = nodes[0]
        frozen = f" ({fmt_int(n.non_trainable)} non-trainable)" if n.non_trainable else ""
        return (
            f"**{n.kind}** `{n.name}` → **{fmt_shape(n.shape)}**\n\n"
            f"params {fmt_int(n.params)}{frozen} · MACs {fmt_int(n.macs)}"
        )
    rows = [
        f"**{nodes[0].kind}**, {len(nodes)} uses",
        "",
        "| layer | output | params | MACs |",
        "|---|---|---:|---:|",
    ]
    for n in nodes[:MAX_HOVER_ROWS]:
        rows.append(
            f"| `{n.name}` | {fmt_shape(n.shape)} | {fmt_int(n.params)} | {fmt_int(n.macs)} |"
        )
    if len(nodes) > MAX_HOVER_ROWS:
        rows.append(f"| … {len(nodes) - MAX_HOVER_ROWS} more | | | |")
    total_p, total_m = sum(n.params for n in nodes), sum(n.macs for n in nodes)
    rows.append(f"| **total** | | {fmt_int(total_p)} | {fmt_int(total_m)} |")
    return "\n".join(rows)


def _groups_markdown(model: Model, groups) -> str:
    rows = []
    for g in groups[:MAX_HOVER_ROWS]:
        members = [model.node(m) for m in g.members]
        what = f"block {g.block}" if g.kind == "block" else g.kind
        rows.append(
            f"**{what}** `{g.path}` → **{fmt_shape(members[-1].shape)}**: "
            f"{len(members)} layers, params {fmt_int(sum(m.params for m in members))}"
            f" · MACs {fmt_int(sum(m.macs for m in members))}"
        )
    if len(groups) > MAX_HOVER_ROWS:
        rows.append(f"… and {len(groups) - MAX_HOVER_ROWS} more")
    return "\n\n".join(rows)


# --- the server (pygls) ------------------------------------------------------------------------
# Hostile input (issue 14): a request about a document the editor never opened is answered with
# nothing, never read from disk (`file:///dev/zero`); a request whose parameters do not validate
# (a negative position) gets an "Invalid Params" answer instead of silence; an error answer never
# carries a traceback; a broken Content-Length header costs that one message, not the session;
# and checking runs off the protocol's loop, on documents of a bounded size, so a huge document
# neither stalls hovers on the others nor keeps a worker busy for minutes.

# Checking is linear (about 90 us a statement, bench/compile_scaling.py), so these limits keep
# one check as you type near a second on a slow machine; a larger document gets one diagnostic
# pointing to `cnnspec check`, which has no limit.
LIVE_MAX_LINES = 10_000
LIVE_MAX_BYTES = 200_000
HOVER_WAIT_SECONDS = 5.0  # a hover waits this long for a check in progress, then answers null
MAX_MESSAGE_BYTES = 64 * 2**20


def too_large(text: str) -> Diagnostic | None:
    """The diagnostic for a document too large to check as one types, or None."""
    lines = text.count("\n") + 1
    if lines <= LIVE_MAX_LINES and len(text) <= LIVE_MAX_BYTES:
        return None
    return Diagnostic(
        0,
        0,
        0,
        1,
        "E104",
        f"the document is too large to check as you type "
        f"({lines:,} lines, {len(text):,} characters; the limit is "
        f"{LIVE_MAX_LINES:,} lines and {LIVE_MAX_BYTES:,} characters)"
        "\nhint: run 'cnnspec check' on the file",
    )


def checked(text: str, path: str | None) -> tuple[Model | None, list[Diagnostic]]:
    """The model and diagnostics of a document; a compiler bug becomes a diagnostic, not a
    dead server (the traceback goes to the server's stderr, which editors log)."""
    big = too_large(text)
    if big is not None:
        return None, [big]
    try:
        model, errs = compile_source(text, path)
    except Exception as exc:  # one document must not take the server down
        import logging

        logging.getLogger(__name__).exception("cnnspec could not check %s", path)
        return None, [
            Diagnostic(
                0,
                0,
                0,
                1,
                "E000",
                f"internal error: {type(exc).__name__}; please report this with the spec",
            )
        ]
    return model, diagnostics(errs, text)


class FramedInput:
    """The client's byte stream as well-framed messages, for pygls' reader.

    pygls trusts each `Content-Length`; one that is not a number, too short or too long made it
    read the following messages as headers or as this body, and none of them was answered. Here
    a body ends at its declared length or where the next `Content-Length: N` line begins,
    whichever comes first: that line, with a raw line break, cannot occur inside JSON. Bytes
    before a header are skipped. Only what pygls calls is offered: readline() and read(n)."""

    HEADER = re.compile(rb"Content-Length:[ \t]*([0-9]{1,12})[ \t]*\r?\n", re.IGNORECASE)

    def __init__(self, raw):
        self.raw = raw
        self.buf = b""
        self.frame = b""

    def _fill(self) -> bool:
        chunk = self.raw.read1(65536) if hasattr(self.raw, "read1") else self.raw.read(1)
        self.buf += chunk
        return bool(chunk)

    def _next_frame(self) -> bytes:
        while True:
            head = self.HEADER.search(self.buf)
            if head is None:
                self.buf = self.buf[-64:]  # a header may be arriving in pieces
                if not self._fill():
                    return b""
                continue
            end = re.compile(rb"\r?\n\r?\n").search(self.buf, head.start())
            if end is None or end.start() > head.end():
                if end is None and len(self.buf) - head.start() < 65536 and self._fill():
                    continue
                if end is None and len(self.buf) - head.start() < 65536:
                    return b""  # the stream ended inside a header
                self.buf = self.buf[head.end() :]  # no blank line after it: not a header
                continue
            length, start = int(head.group(1)), end.end()
            if length > MAX_MESSAGE_BYTES:
                self.buf = self.buf[start:]
                continue
            while True:
                cut = self.HEADER.search(self.buf, start, start + length)
                if cut is not None or len(self.buf) >= start + length:
                    break
                if not self._fill():
                    return b""
            stop = cut.start() if cut is not None else start + length
            body, self.buf = self.buf[start:stop], self.buf[stop:]
            return b"Content-Length: %d\r\n\r\n" % len(body) + body

    def readline(self) -> bytes:
        if not self.frame:
            self.frame = self._next_frame()
        line, sep, rest = self.frame.partition(b"\n")
        self.frame = rest
        return line + sep

    def read(self, n: int) -> bytes:
        out, self.frame = self.frame[:n], self.frame[n:]
        return out


def build_server():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import unquote

    from lsprotocol import types as lsp
    from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
    from pygls.lsp.server import LanguageServer
    from pygls.protocol import LanguageServerProtocol
    from pygls.workspace.position_codec import ServerTextPosition

    from . import __version__

    answered = object()  # a request already answered while it was being read

    class Protocol(LanguageServerProtocol):
        def structure_message(self, data):
            try:
                return super().structure_message(data)
            except JsonRpcException as exc:
                if isinstance(data, dict) and "id" in data and "method" in data:
                    error = JsonRpcInvalidParams(
                        message=f"invalid parameters for {str(data['method'])[:80]}"
                    )
                    self._send_response(data["id"], error=error.to_response_error())
                    return answered
                raise exc from None

        def handle_message(self, message):
            if message is not answered:
                super().handle_message(message)

        def _send_response(self, msg_id, result=None, error=None):
            if error is not None and isinstance(error.data, dict):
                error.data.pop("traceback", None)  # never a traceback to the editor
            super()._send_response(msg_id, result, error)

    server = LanguageServer(
        "cnnspec",
        __version__,
        protocol_cls=Protocol,
        text_document_sync_kind=lsp.TextDocumentSyncKind.Full,
    )
    workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cnnspec-check")
    cache: dict[str, tuple[int | None, Model | None]] = {}
    running: dict[str, tuple[int | None, asyncio.Future]] = {}

    def opened(ls, uri: str):
        """The document if the editor opened it; never one read from disk."""
        return ls.workspace.text_documents.get(unquote(uri))

    def to_client(doc, line: int, character: int):
        if line >= len(doc.lines):  # a span past the last line (end of file)
            return lsp.Position(line=line, character=character)
        return doc.position_to_client_units(ServerTextPosition(line, character))

    async def model_of(doc) -> tuple[bool, Model | None, list[Diagnostic]]:
        """(fresh, model, diagnostics) of the document's current version, checked on a worker;
        a newer version cancels a check that has not started yet."""
        uri, version = doc.uri, doc.version
        old = running.get(uri)
        if old is not None and old[0] == version:
            fut = old[1]
        else:
            if old is not None:
                old[1].cancel()
            path = doc.path if uri.startswith("file:") and "\x00" not in uri else None
            fut = asyncio.get_running_loop().run_in_executor(workers, checked, doc.source, path)
            running[uri] = (version, fut)
        try:
            model, found = await asyncio.shield(fut)
        except asyncio.CancelledError:
            return False, None, []
        finally:
            if running.get(uri, (None, None))[1] is fut and fut.done():
                running.pop(uri, None)
        if doc.version != version:
            return False, None, []
        cache[uri] = (version, model)
        return True, model, found

    async def check(ls, uri: str) -> None:
        doc = opened(ls, uri)
        if doc is None:
            return
        fresh, _, found = await model_of(doc)
        if not fresh or opened(ls, uri) is not doc:
            return
        ls.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(
                uri=uri,
                version=doc.version,
                diagnostics=[
                    lsp.Diagnostic(
                        range=lsp.Range(
                            start=to_client(doc, d.line, d.character),
                            end=to_client(doc, d.end_line, d.end_character),
                        ),
                        message=d.message,
                        code=d.code,
                        source="cnnspec",
                        severity=lsp.DiagnosticSeverity.Error,
                    )
                    for d in found
                ],
            )
        )

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    async def did_open(ls, params: lsp.DidOpenTextDocumentParams):
        await check(ls, params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    async def did_change(ls, params: lsp.DidChangeTextDocumentParams):
        await check(ls, params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    async def did_save(ls, params: lsp.DidSaveTextDocumentParams):
        await check(ls, params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls, params: lsp.DidCloseTextDocumentParams):
        uri = params.text_document.uri
        cache.pop(uri, None)
        old = running.pop(uri, None)
        if old is not None:
            old[1].cancel()
        ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    async def hover(ls, params: lsp.HoverParams):
        doc = opened(ls, params.text_document.uri)
        if doc is None:
            return None
        try:
            version, model = cache.get(doc.uri, (None, None))
            if version != doc.version or doc.uri not in cache:
                fresh, model, _ = await asyncio.wait_for(model_of(doc), HOVER_WAIT_SECONDS)
                if not fresh:
                    return None
            if model is None:
                return None
            pos = doc.position_from_client_units(params.position)
            text = hover_markdown(model, pos.line + 1, pos.character + 1, doc.source)
        except asyncio.TimeoutError:
            return None
        if text is None:
            return None
        return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text))

    return server


def serve() -> None:
    import sys

    build_server().start_io(FramedInput(sys.stdin.buffer), sys.stdout.buffer)
