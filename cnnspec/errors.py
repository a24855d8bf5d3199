"""The one error type users see: a coded message, a location in the spec, and a hint.

Codes come in families, stable across releases so that tools can match on them:
    E1xx  syntax          (the text does not parse)
    E2xx  validation      (unknown layer or argument, bad value, block misuse)
    E3xx  shape           (a tensor size that cannot exist, shapes that cannot meet; E320 a
                          network larger than `check --max-memory`)
    E4xx  backend         (a framework cannot express or load something)
    E5xx  compile/transfer settings
Exit codes of the CLI: 0 ok, 1 spec error, 2 usage error.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

MAX_SHOWN = 20
MAX_LINE_SHOWN = 400  # characters of a source line in an error; longer lines are cut


@dataclass(frozen=True)
class Span:
    """A region of the source, 1-based lines and columns, end exclusive."""

    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None

    def to_dict(self) -> dict:
        return {
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
        }


@dataclass
class SpecError(Exception):
    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    path: str | None = None
    expected: str | None = None
    received: str | None = None
    notes: list[str] = field(default_factory=list)
    pointer: str | None = None  # a JSON pointer, for errors in an IR given as JSON

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        where = f"{self.span.line}:{self.span.column}: " if self.span else ""
        return f"{where}error[{self.code}]: {self.message}"

    def located(self, path: str | None) -> SpecError:
        if self.path is None:
            self.path = path
        return self

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "path": self.path,
            "span": self.span.to_dict() if self.span else None,
            "hint": self.hint,
            "expected": self.expected,
            "received": self.received,
            "pointer": self.pointer,
        }

    def render(self, source: str | None = None) -> str:
        """Format as `path:line:col: error[CODE]: message`, the source line, a caret, a hint."""
        head = printable(self.path) if self.path else "<spec>"
        if self.span:
            head += f":{self.span.line}:{self.span.column}"
        elif self.pointer is not None:
            head += f"#{self.pointer}"
        lines = [f"{head}: error[{self.code}]: {self.message}"]
        if self.expected is not None or self.received is not None:
            if self.expected is not None:
                lines.append(f"  expected: {self.expected}")
            if self.received is not None:
                lines.append(f"  received: {self.received}")
        if source is not None and self.span and self.span.line >= 1:
            text = _source_line(source, self.span.line)
            if text is not None:
                gutter = f"{self.span.line:>4} | "
                start = max(self.span.column - 1, 0)
                if self.span.end_line == self.span.line and self.span.end_column:
                    width = max(self.span.end_column - self.span.column, 1)
                else:
                    width = max(len(text.rstrip()) - start, 1)
                text, start, width = _cut(text, start, width)
                lines.append(gutter + text.expandtabs(1))
                lines.append(" " * (len(gutter) - 2) + "| " + " " * start + "^" * width)
        lines.extend(self.notes)
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


def _source_line(source: str, number: int) -> str | None:
    """Line `number` (1-based) of the source, found without splitting all of it (a generated
    spec may have a million lines); lines end at "\\n" only, as the parser counts them."""
    start = 0
    for _ in range(number - 1):
        start = source.find("\n", start) + 1
        if start == 0:
            return None
    end = source.find("\n", start)
    return source[start:] if end < 0 else source[start:end].rstrip("\r")


def _cut(text: str, start: int, width: int) -> tuple[str, int, int]:
    """A window of at most MAX_LINE_SHOWN characters of a long line around the caret, '...'
    marking what is cut; the caret's new start and width."""
    if len(text) <= MAX_LINE_SHOWN:
        return text, start, width
    width = min(width, MAX_LINE_SHOWN // 2)
    left = max(0, min(start - MAX_LINE_SHOWN // 4, len(text) - MAX_LINE_SHOWN))
    right = left + MAX_LINE_SHOWN
    shown = text[left:right]
    if left:
        shown, start = "..." + shown, start - left + 3
    if right < len(text):
        shown += "..."
    return shown, start, width


class SpecErrors(Exception):
    """Several errors found in one pass; the compiler goes on where it can."""

    def __init__(self, errors: list[SpecError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))

    def render(self, source: str | None = None) -> str:
        shown = [e.render(source) for e in self.errors[:MAX_SHOWN]]
        if len(self.errors) > MAX_SHOWN:
            shown.append(f"... and {len(self.errors) - MAX_SHOWN} more")
        return "\n\n".join(shown)

    def to_list(self) -> list[dict]:
        return [e.to_dict() for e in self.errors]


def printable(text: str) -> str:
    """`text` with its unprintable characters escaped (\\n, \\x1b, \\u202e, \\udcff): a
    file name is the user's data, and printed raw a newline in it forges a `file:line:col`
    line and an escape sequence rewrites the terminal."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text
    )


def did_you_mean(word: str, choices) -> str | None:
    """'did you mean' for an unknown name, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
