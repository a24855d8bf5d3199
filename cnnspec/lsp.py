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
        return (f"**{n.kind}** `{n.name}` → **{fmt_shape(n.shape)}**\n\n"
                f"params {fmt_int(n.params)}{frozen} · MACs {fmt_int(n.macs)}")
    rows = [f"**{nodes[0].kind}**, {len(nodes)} uses", "",
            "| layer | output | params | MACs |", "|---|---|---:|---:|"]
    for n in nodes[:MAX_HOVER_ROWS]:
        rows.append(f"| `{n.name}` | {fmt_shape(n.shape)} | {fmt_int(n.params)} | "
                    f"{fmt_int(n.macs)} |")
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
        rows.append(f"**{what}** `{g.path}` → **{fmt_shape(members[-1].shape)}**: "
                    f"{len(members)} layers, params {fmt_int(sum(m.params for m in members))}"
                    f" · MACs {fmt_int(sum(m.macs for m in members))}")
    if len(groups) > MAX_HOVER_ROWS:
        rows.append(f"… and {len(groups) - MAX_HOVER_ROWS} more")
    return "\n\n".join(rows)


# --- the server (pygls) ------------------------------------------------------------------------

def build_server():
    from lsprotocol import types as lsp
    from pygls.lsp.server import LanguageServer
    from pygls.workspace.position_codec import ServerTextPosition

    from . import __version__

    server = LanguageServer("cnnspec", __version__,
                            text_document_sync_kind=lsp.TextDocumentSyncKind.Full)
    cache: dict[str, tuple[int | None, Model | None]] = {}

    def to_client(doc, line: int, character: int):
        if line >= len(doc.lines):     # a span past the last line (end of file)
            return lsp.Position(line=line, character=character)
        return doc.position_to_client_units(ServerTextPosition(line, character))

    def check(ls, uri: str) -> None:
        doc = ls.workspace.get_text_document(uri)
        path = doc.path if uri.startswith("file:") else None
        model, errs = compile_source(doc.source, path)
        cache[uri] = (doc.version, model)
        found = [lsp.Diagnostic(
            range=lsp.Range(start=to_client(doc, d.line, d.character),
                            end=to_client(doc, d.end_line, d.end_character)),
            message=d.message, code=d.code, source="cnnspec",
            severity=lsp.DiagnosticSeverity.Error) for d in diagnostics(errs, doc.source)]
        ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(
            uri=uri, version=doc.version, diagnostics=found))

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls, params: lsp.DidOpenTextDocumentParams):
        check(ls, params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls, params: lsp.DidChangeTextDocumentParams):
        check(ls, params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls, params: lsp.DidSaveTextDocumentParams):
        check(ls, params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls, params: lsp.DidCloseTextDocumentParams):
        cache.pop(params.text_document.uri, None)
        ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(
            uri=params.text_document.uri, diagnostics=[]))

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    def hover(ls, params: lsp.HoverParams):
        uri = params.text_document.uri
        doc = ls.workspace.get_text_document(uri)
        version, model = cache.get(uri, (None, None))
        if uri not in cache or version != doc.version:
            model, _ = compile_source(doc.source)
            cache[uri] = (doc.version, model)
        if model is None:
            return None
        pos = doc.position_from_client_units(params.position)
        text = hover_markdown(model, pos.line + 1, pos.character + 1, doc.source)
        if text is None:
            return None
        return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text))

    return server


def serve() -> None:
    build_server().start_io()
