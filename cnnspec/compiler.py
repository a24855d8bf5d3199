"""The front door: text or a file -> validated IR, or SpecErrors."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from pathlib import Path

from .elaborate import elaborate
from .errors import Span, SpecError, SpecErrors
from .ir import Model
from .parse import parse_text


def compile_text(text: str, path: str | None = None, scale: str | None = None) -> Model:
    """Compile spec text to IR; raises SpecErrors (each error located, with `path` set).
    `scale` names one of the spec's scales (its first if None)."""
    with collector_paused():
        try:
            tree = parse_text(text)
        except SpecError as err:
            raise SpecErrors([err.located(path)]) from None
        try:
            return elaborate(tree, path, scale)
        except RecursionError:
            raise SpecErrors(
                [SpecError("E106", "the spec is nested too deeply", Span(1, 1), path=path)]
            ) from None


@contextmanager
def collector_paused():
    """Compiling allocates many small objects and frees none until the end, so Python's cyclic
    collector runs over an ever larger heap and checking grows faster than the spec (10,000
    layers: 190 instead of 140 us a layer). Nothing here makes cycles that must go early;
    the collector resumes afterwards, and the layer limit bounds what accumulates.
    Validating an IR document builds as many models, so `validate` pauses it too."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_file(path: str | Path, scale: str | None = None) -> Model:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecErrors(
            [SpecError("E001", f"cannot read the spec: {exc.strerror}", path=str(path))]
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecErrors(
            [
                SpecError(
                    "E107",
                    "the spec is not UTF-8 text",
                    path=str(path),
                    hint="save the file as UTF-8",
                    span=_span(line),
                )
            ]
        ) from None
    model = compile_text(text, str(path), scale)
    if model.name == "model":
        model.name = _text(path.stem)
    return model


def _text(name: str) -> str:
    """An ASCII file-system encoding (LANG=C) hands UTF-8 file names over as surrogates,
    which no JSON or source file can hold: take the bytes back as UTF-8."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _span(line: int):
    return Span(line, 1)
