"""The graph a framework model is read into before it is written as a spec.

An `Op` is one spec statement (`conv 64 3x3 stride=2 padding=1 nobias`) with the names of the
ops it reads and where it came from (module path or Keras layer name, and its type), so that an
error or a note can name the source. Arguments are kept as data, not text: the block finder
(cnnspec.importer.blocks) replaces integers by block parameters where structures repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SpecError

PRIMARY = {"conv", "dwconv", "dense", "maxpool", "avgpool", "gap", "gmp", "flatten", "reshape"}
LEADING = {"zeropad"}
MERGES = {"add", "concat", "multiply"}
# keyword arguments that readers always give, and the writer leaves out at their default
# (a pool's stride defaults to its window, so pools say theirs whenever it differs)
DEFAULTS = {"stride": "1", "dilation": "1", "padding": "0"}
WINDOWED = {"conv", "dwconv"}


@dataclass(frozen=True)
class Square:
    """A square size (3x3): one integer, so a block parameter can stand for it."""

    n: int


@dataclass(frozen=True)
class Dims:
    """A size that is not square (1x7), or an input size: written AxB, never a parameter."""

    values: tuple[int, ...]


@dataclass
class Op:
    name: str  # the source's name for it (module path, Keras layer name)
    source_type: str  # the source's type (Conv2d, DepthwiseConv2D, ...)
    word: str  # the spec keyword
    args: list[tuple] = field(default_factory=list)  # ("pos", v) | ("kw", key, v) | ("flag", w)
    inputs: list[str] = field(default_factory=list)
    path: str | None = None  # torch: the module path, to name blocks after their class

    def slots(self) -> list[int]:
        """The integers a block parameter may stand for, in writing order."""
        out = []
        for arg in self.args:
            v = arg[-1]
            if arg[0] != "flag" and _slot(v):
                out.append(v.n if isinstance(v, Square) else v)
        return out

    def signature(self) -> tuple:
        """The statement with its slots blanked: equal signatures differ only in integers."""
        return (
            self.word,
            tuple(
                a[:-1] + (("#",) if a[0] != "flag" and _slot(a[-1]) else (a[-1],))
                for a in self.args
            ),
        )

    def render(self, texts: list[str] | None = None) -> str:
        """The statement; `texts` replaces the slots in order (block parameters)."""
        texts = list(texts) if texts is not None else [literal(s) for s in self.slots()]
        parts = [self.word]
        for arg in self.args:
            v = arg[-1]
            if arg[0] == "flag":
                parts.append(v)
                continue
            text = _slot_text(v, texts.pop(0)) if _slot(v) else literal(v)
            if arg[0] == "kw" and DEFAULTS.get(arg[1]) == text and self.word in WINDOWED:
                continue  # kept in the signature (so strides 1 and 2 share a block), not said
            parts.append(text if arg[0] == "pos" else f"{arg[1]}={text}")
        return " ".join(parts)


def _slot(v) -> bool:
    return isinstance(v, Square) or (isinstance(v, int) and not isinstance(v, bool))


def _slot_text(v, text: str) -> str:
    if isinstance(v, Square) and text.isdigit():
        return f"{text}x{text}"
    return text


def literal(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Square):
        return f"{v.n}x{v.n}"
    if isinstance(v, Dims):
        return "x".join(str(d) for d in v.values)
    if isinstance(v, tuple):
        return "(" + ", ".join(literal(x) for x in v) + ")"
    if isinstance(v, float):
        text = repr(v)
        return text.replace("e-0", "e-") if "e" in text else text
    return str(v)


def size(v) -> Square | Dims:
    """A kernel / window / stride as the spec writes it: 3x3 or 1x7."""
    values = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return Square(values[0]) if len(set(values)) == 1 else Dims(values)


def window(v) -> int | Dims:
    """A pooling window as the zoo writes it: `maxpool 3`, or 2x3 when it is not square."""
    values = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return values[0] if len(set(values)) == 1 else Dims(values)


def scalar(v):
    """A pair of equal integers as one integer (stride=2), else the tuple."""
    values = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    return values[0] if len(set(values)) == 1 else values


@dataclass
class Graph:
    """Ops in topological order after the input; `outputs` name ops; notes become comments."""

    source: str
    input_shape: tuple[int, ...]
    ops: list[Op] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    input_name: str = "input"
    counts: tuple[int, int] = (0, 0)  # the source's (trainable, non-trainable)
    module_types: dict[str, str] = field(default_factory=dict)  # torch: path -> class name

    def add(self, op: Op) -> Op:
        self.ops.append(op)
        return op


def unsupported(
    name: str, source_type: str, why: str = "", hint: str | None = None, code: str = "E411"
) -> SpecError:
    """The error for something of the source that the language cannot say."""
    what = f"'{name}' ({source_type})"
    msg = (
        f"cannot import {what}: {why}"
        if why
        else f"cannot import {what}: no cnnspec layer does what it does"
    )
    return SpecError(code, msg, hint=hint)


def missing(name: str, source_type: str, construct: str, hint: str | None = None) -> SpecError:
    """The error for a known construct of the source that the language does not have yet
    (layer norm, channel shuffle, ...): it names the construct, not the tracing step."""
    return SpecError(
        "E417",
        f"cannot import '{name}' ({source_type}): {construct} is a "
        "construct cnnspec does not have yet",
        hint=hint or "the language has no layer for it; write that part by hand",
    )
