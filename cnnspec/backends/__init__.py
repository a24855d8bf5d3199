"""Backends: the IR turned into framework models or source code.

Importing this package imports no framework; each backend module imports its own when used.
Every backend is looked up by name (`cnnspec.backends.<name>`) and offers `source_code(model) -> str`.
Each backend keeps one table from layer kind to emitter (torch/emitters.py, keras_emitters.py);
the layer classes know nothing of the frameworks.
"""

from __future__ import annotations

from ..errors import Span, SpecError

BACKENDS = ("torch", "keras")


def error_span(span) -> Span | None:
    """The error's Span for an IR node's span (a record of the same four numbers)."""
    return None if span is None else Span(span.line, span.column, span.end_line, span.end_column)


def emit(emitters: dict, backend: str, table: str, layer, args: tuple, span=None, path=None):
    """What an emitter table makes of `layer` (`emitters[layer.kind](layer, *args)`), every
    refusal located at the IR node (`span`): E420 where the table lacks the kind, and an
    emitter's own SpecError (a size the framework cannot run) given the node's place."""
    emitter = emitters.get(layer.kind)
    if emitter is None:
        raise missing_emitter(backend, layer.kind, table, span, path)
    try:
        return emitter(layer, *args)
    except SpecError as err:
        if err.span is None:
            err = SpecError(err.code, err.message, error_span(span), hint=err.hint, path=path)
        raise err from None


def missing_emitter(
    backend: str, kind: str, table: str, span=None, path: str | None = None
) -> SpecError:
    """E420: a layer kind the backend's emitter table lacks (a new kind added to the registry
    only), located at the node that uses it (`span`: the IR node's)."""
    return SpecError(
        "E420",
        f"the {backend} backend cannot express layer kind '{kind}': it has no emitter for it",
        error_span(span),
        path=path,
        hint=f"add an entry for '{kind}' to {table} (ARCHITECTURE.md: adding a layer kind)",
    )
