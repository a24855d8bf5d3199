"""Evaluation of argument expressions: numbers, sizes, words and the arithmetic of block
parameters. A spec is untrusted, so nothing here calls Python's eval: each operator is a table
entry, and sizes are bounded so that `2**...`-style blow-ups cannot happen."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

from .errors import Span, SpecError, did_you_mean
from .parse import Token, Tree

MAX_INT = 10**12


@dataclass(frozen=True)
class Word:
    """A bare word that is not a bound name: a flag (`same`), an activation, a tensor name."""

    text: str

    def __str__(self) -> str:
        return self.text


_ARITH = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
}
_COMPARE = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def span_of(node) -> Span | None:
    meta = getattr(node, "meta", None)
    if meta is not None and not getattr(meta, "empty", True):
        return Span(meta.line, meta.column, meta.end_line, meta.end_column)
    if isinstance(node, Token) and node.line is not None:
        return Span(node.line, node.column, node.end_line, node.end_column)
    return None


def describe(value) -> str:
    if isinstance(value, Word):
        return f"the word '{value.text}'"
    if isinstance(value, tuple):
        return (
            "a size " + "x".join(str(v) for v in value)
            if all(isinstance(v, int) for v in value)
            else f"a tuple {value}"
        )
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def evaluate(tree, env: dict) -> object:
    """Evaluate an expression tree in an environment of block parameters."""
    try:
        return _evaluate(tree, env)
    except RecursionError:
        # `1 + 1 + ... + 1` with thousands of terms nests as deep as it is long; brackets are
        # bounded by the parser, operator chains are not.
        raise SpecError(
            "E106",
            "the expression is too long to evaluate",
            span_of(tree),
            hint="compute the value in fewer steps",
        ) from None


def _evaluate(tree, env: dict) -> object:
    if isinstance(tree, Token):
        raise SpecError("E201", f"unexpected {tree!r}", span_of(tree))
    kind = tree.data
    if kind == "int":
        return _literal(str(tree.children[0]), tree)
    if kind == "float":
        return _bounded(float(tree.children[0]), tree)
    if kind == "dims":
        return tuple(_literal(p, tree) for p in str(tree.children[0]).split("x"))
    if kind == "string":
        raw = str(tree.children[0])[1:-1]
        return raw.replace('\\"', '"').replace("\\\\", "\\")
    if kind == "ref":
        return Word(str(tree.children[0]))
    if kind == "name":
        name = str(tree.children[0])
        if name in env:
            return env[name]
        if name in ("true", "false"):
            return name == "true"
        return Word(name)
    if kind == "tuple":
        return tuple(_evaluate(c, env) for c in tree.children)
    if kind == "call":
        return _call(tree, env)
    if kind == "neg":
        operand = tree.children[-1]
        return -_number(_evaluate(operand, env), operand, env)
    if kind == "binop":
        left, op, right = tree.children
        a = _number(_evaluate(left, env), left, env)
        b = _number(_evaluate(right, env), right, env)
        if op in ("/", "//", "%") and b == 0:
            raise SpecError("E213", "division by zero", span_of(tree))
        result = _ARITH[str(op)](a, b)
        if (
            isinstance(result, float)
            and result.is_integer()
            and str(op) == "/"
            and isinstance(a, int)
            and isinstance(b, int)
        ):
            result = int(result)
        return _bounded(result, tree)
    if kind == "compare":
        left, op, right = tree.children
        a, b = _evaluate(left, env), _evaluate(right, env)
        if str(op) in ("==", "!="):
            return _COMPARE[str(op)](a, b)
        return _COMPARE[str(op)](_number(a, left, env), _number(b, right, env))
    if kind == "and_":
        return all(_truth(_evaluate(c, env), c) for c in tree.children)
    if kind == "or_":
        return any(_truth(_evaluate(c, env), c) for c in tree.children)
    if kind == "not_":
        return not _truth(_evaluate(tree.children[0], env), tree.children[0])
    raise SpecError("E201", f"unexpected expression '{kind}'", span_of(tree))


# Model scaling (EfficientNet, Tan & Le 2019; keras.applications' round_filters and
# round_repeats, torchvision's _make_divisible): the selected scale's width and depth
# multipliers sit in every environment under these keys, which no spec name can shadow.
WIDTH, DEPTH = "#width", "#depth"


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of `divisor`, at least `divisor`, never 10% below `value`.

    >>> make_divisible(32 * 1.1), make_divisible(1280 * 1.4), make_divisible(16 * 0.5)
    (40, 1792, 8)
    """
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * value else new)


def _call(tree, env: dict):
    name = str(tree.children[0])
    args = [_number(_evaluate(c, env), c, env) for c in tree.children[1:] if c is not None]
    arity = {
        "round_filters": (1, 1),
        "round_repeats": (1, 1),
        "make_divisible": (1, 2),
        "ceil": (1, 1),
        "floor": (1, 1),
        "int": (1, 1),
        "min": (2, 8),
        "max": (2, 8),
    }
    if name not in arity:
        raise SpecError(
            "E227",
            f"unknown function '{name}'",
            span_of(tree),
            hint=did_you_mean(name, arity) or f"functions: {', '.join(arity)}",
        )
    low, high = arity[name]
    if not low <= len(args) <= high:
        raise SpecError(
            "E227",
            f"{name}() takes {low if low == high else f'{low} to {high}'} "
            f"argument(s), received {len(args)}",
            span_of(tree),
        )
    if name == "round_filters":
        return _bounded(make_divisible(args[0] * env.get(WIDTH, 1.0)), tree)
    if name == "round_repeats":
        return _bounded(math.ceil(args[0] * env.get(DEPTH, 1.0)), tree)
    if name == "make_divisible":
        if len(args) == 2 and (args[1] < 1 or args[1] != int(args[1])):
            raise SpecError(
                "E227", "make_divisible's divisor is a whole number >= 1", span_of(tree)
            )
        return _bounded(make_divisible(*args[:1], *(int(a) for a in args[1:])), tree)
    fn = {"ceil": math.ceil, "floor": math.floor, "int": int, "min": min, "max": max}[name]
    return _bounded(fn(*args), tree)


def _literal(digits: str, tree) -> int:
    # Python refuses to parse ints of over 4,300 digits (a ValueError); none is needed here.
    if len(digits.lstrip("0")) > len(str(MAX_INT)):
        _too_large(f"{digits[:6]}... ({len(digits)} digits)", tree)
    return _bounded(int(digits), tree)


def _bounded(value, tree):
    if isinstance(value, (int, float)) and not abs(value) <= MAX_INT:  # also inf
        _too_large(f"{float(value):.3g}" if abs(value) < 1e300 else "over 1e300", tree)
    return value


def _too_large(shown: str, tree):
    raise SpecError(
        "E214",
        f"the number {shown} is too large",
        span_of(tree),
        hint=f"sizes and counts are at most {MAX_INT:,}",
    )


def _number(value, tree, env):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, Word):
            hint = (
                did_you_mean(value.text, env)
                or "arithmetic works on numbers and the parameters of the enclosing block"
            )
            raise SpecError("E206", f"unknown name '{value.text}'", span_of(tree), hint=hint)
        raise SpecError("E205", f"expected a number, received {describe(value)}", span_of(tree))
    return value


def _truth(value, tree) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    raise SpecError("E205", f"expected a condition, received {describe(value)}", span_of(tree))


def is_tree(node, name: str) -> bool:
    return isinstance(node, Tree) and node.data == name
