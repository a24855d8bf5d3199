"""pydantic's validation errors, worded as the spec's errors: the argument or setting that is
wrong, where it is written, what is expected and what was received (Keras' style).

pydantic decides every error (the layers and sections are its models); this module only says
it in the spec's terms, for layers (`layer_error`) and for compile/transfer settings
(`setting_error`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import Span, SpecError, did_you_mean
from .values import Word, describe

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

_PYDANTIC_WORDS = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "tuple_type": "a size like 3x3, or a whole number",
    "string_type": "a word",
    "finite_number": "a finite number",
}


def explain_validation(err: dict) -> str:
    """A pydantic error as the end of 'X must be ...' (Keras' style: say what is expected)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"at least {ctx['ge']}"
    if kind == "greater_than":
        return f"greater than {ctx['gt']}"
    if kind == "less_than":
        return f"less than {ctx['lt']}"
    if kind == "less_than_equal":
        return f"at most {ctx['le']}"
    if kind == "literal_error":
        return f"one of {ctx['expected']}"
    if kind in ("too_long", "too_short"):
        return (
            f"at most {ctx['max_length']} values"
            if kind == "too_long"
            else f"at least {ctx['min_length']} values"
        )
    if kind in _PYDANTIC_WORDS:
        return _PYDANTIC_WORDS[kind]
    return err["msg"].replace("Value error, ", "")


def layer_error(
    exc: ValidationError, word: str, pos: list, kw: dict, cls, where: Span | None
) -> SpecError:
    """The first error of a layer's arguments, at the argument that caused it: `pos` are the
    bare (value, span) arguments in order, `kw` maps a name to its (value, span)."""
    first = exc.errors()[0]
    key = str(first["loc"][0]) if first["loc"] else None
    span = kw[key][1] if key in kw else None
    if span is None and key in cls.positional:
        idx = cls.positional.index(key)
        nums = [s for v, s in pos if not isinstance(v, Word)]
        span = nums[idx] if idx < len(nums) else None
    if span is None and pos:
        span = pos[0][1]
    span = span or where
    if first["type"] == "missing":
        return SpecError(
            "E209", f"'{word}' needs its {key}", span, expected=key, hint=cls.kind_doc or None
        )
    expected = explain_validation(first)
    if key is None:  # a check across arguments (a model validator)
        given = ", ".join(f"{k}={describe(v)}" for k, (v, _) in kw.items())
        return SpecError(
            "E205", f"'{word}': {expected}", span, received=given or None, hint=cls.kind_doc or None
        )
    value = kw[key][0] if key in kw else first.get("input")
    return SpecError(
        "E205",
        f"'{word}' {key} must be {expected}",
        span,
        expected=expected,
        received=f"{key}={describe(value)}",
        hint=cls.kind_doc or None,
    )


def setting_error(
    exc: ValidationError, cls: type[BaseModel], span, what: str, spans: dict
) -> SpecError:
    """The first error of a compile or transfer setting; `spans` locates each given key."""
    err = exc.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else what
    if err["type"] == "extra_forbidden":
        return SpecError(
            "E502",
            f"{what} has no setting '{key}'",
            spans.get(key, span),
            expected=", ".join(k for k in cls.model_fields if k != "span"),
            hint=did_you_mean(key, cls.model_fields),
        )
    return SpecError(
        "E502",
        f"{what} {key}: {err['msg']}",
        spans.get(key, span),
        received=f"{key}={err.get('input')!r}",
    )
