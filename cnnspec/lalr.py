"""The LALR(1) runtime: runs the parse tables that lark builds from grammar/cnnspec.lark.

lark builds the tables (`build_tables`, run when the grammar changes; the result is stored as
JSON beside the grammar) and stays the reference: tests parse every spec and every fuzz input
with both and require equal trees and equal errors. At run time this module replaces lark,
because importing lark and compiling its per-state lexer regexes cost ~45 ms on every start,
a quarter of a `cnnspec summary`.

What it reproduces, from lark 1.x with parser="lalr", lexer="contextual",
propagate_positions=True, maybe_placeholders=False:
- the contextual lexer: in each parser state only the terminals that state accepts (and the
  ignored ones) are tried, in lark's order (priority, then longest pattern); the first that
  matches wins, as in lark's single alternation regex. A keyword that a regex terminal also
  matches (`model` and NAME) is retyped after the match ("unless"). When nothing matches,
  the terminals of every state are tried, to report an unexpected token rather than an
  unexpected character. Candidates are looked up by the first character (the first-character
  sets are computed with `re._parser` when the tables are built), so a token costs one or two
  regex matches instead of lark's per-state alternations, which take ~1 ms each to compile;
- the parser: shift/reduce on the tables, `$END` borrowing the last token's position;
- the tree: tokens of filtered terminals dropped, `_rule` children inlined, `?rule` with one
  child replaced by it, aliases as tree names, positions (line, column, end) propagated from
  the first and last child, filtered tokens included, as lark's PropagatePositions does.
"""

from __future__ import annotations

import re

FORMAT = "cnnspec-lalr-1"
SHIFT, REDUCE = 0, 1


class Token(str):
    """A terminal's text, with its type and position (the attributes of lark.Token)."""

    def __new__(cls, type_: str, value: str, start_pos=None, line=None, column=None,
                end_line=None, end_column=None, end_pos=None):
        self = super().__new__(cls, value)
        self.type, self.value = type_, value
        self.start_pos, self.line, self.column = start_pos, line, column
        self.end_line, self.end_column, self.end_pos = end_line, end_column, end_pos
        return self

    def __repr__(self) -> str:
        return f"Token({self.type!r}, {self.value!r})"

    def __eq__(self, other) -> bool:
        if isinstance(other, Token) and self.type != other.type:
            return False
        return str.__eq__(self, other)

    __hash__ = str.__hash__

    def __reduce__(self):
        return (Token, (self.type, self.value, self.start_pos, self.line, self.column,
                        self.end_line, self.end_column, self.end_pos))


class Meta:
    """Where a tree starts and ends; `empty` while it covers no text."""

    def __init__(self):
        self.empty = True


class Tree:
    """A rule's node: its name (`data`), its children (trees and tokens) and `meta`."""

    __slots__ = ("children", "data", "meta")

    def __init__(self, data: str, children: list, meta: Meta | None = None):
        self.data, self.children = data, children
        self.meta = meta or Meta()

    def __eq__(self, other) -> bool:
        return isinstance(other, Tree) and self.data == other.data \
            and self.children == other.children

    __hash__ = None   # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Tree({self.data!r}, {self.children!r})"


class UnexpectedInput(Exception):
    """A syntax error; `line` and `column` are 1-based."""

    line: int
    column: int


class UnexpectedCharacters(UnexpectedInput):
    """No terminal of any state matches the text at `pos_in_stream`."""

    def __init__(self, pos_in_stream: int, line: int, column: int, allowed: set[str]):
        super().__init__(f"unexpected character at line {line}, column {column}")
        self.pos_in_stream, self.line, self.column, self.allowed = \
            pos_in_stream, line, column, allowed


class UnexpectedToken(UnexpectedInput):
    """A token the parser state has no action for. `expected` is every terminal of that
    state, `accepts` those that would really be shifted after the pending reductions."""

    def __init__(self, token: Token, expected: set[str], accepts: set[str]):
        super().__init__(f"unexpected {token.type} {str(token)!r}")
        self.token, self.expected, self.accepts = token, expected, accepts
        self.line, self.column = token.line, token.column


# --- building the tables with lark (development time) -------------------------------------
def build_tables(grammar: str, options: dict) -> dict:
    """Ask lark for the parse tables, the lexer of every state and the tree-shaping rules,
    as plain JSON data."""
    from lark import Lark
    from lark.lexer import ContextualLexer, PatternStr

    lark = Lark(grammar, cache=False, **options)
    frontend = lark.parser
    lexer = frontend.lexer
    assert isinstance(lexer, ContextualLexer)
    parse_table = frontend.parser.parser.parse_table
    terminals = {t.name: t.pattern.to_regexp() for t in lark.terminals}
    newline = sorted(lexer.root_lexer.newline_types)

    def describe(basic) -> dict:
        scanner = basic.scanner   # builds the order after lark's "unless" folding
        unless = {}
        for name, callback in basic.callback.items():
            unless[name] = {t.pattern.value: t.name for t in callback.scanner.terminals
                            if isinstance(t.pattern, PatternStr)}
        return {"order": [t.name for t in scanner.terminals], "unless": unless}

    lexers: list[dict] = []
    ids: dict[int, int] = {}
    state_lexer = []
    for state in range(len(parse_table.states)):
        basic = lexer.lexers[state]
        if id(basic) not in ids:
            ids[id(basic)] = len(lexers)
            lexers.append(describe(basic))
        state_lexer.append(ids[id(basic)])
    root = len(lexers)
    lexers.append(describe(lexer.root_lexer))

    rules, index = [], {}
    for rule in frontend.parser_conf.rules:
        index[rule] = len(rules)
        keep = [(i, not sym.is_term and sym.name.startswith("_"))
                for i, sym in enumerate(rule.expansion)
                if rule.options.keep_all_tokens or not (sym.is_term and sym.filter_out)]
        filtered = len(keep) < len(rule.expansion) or any(inline for _, inline in keep)
        rules.append({"origin": rule.origin.name, "size": len(rule.expansion),
                      "name": rule.alias or rule.options.template_source or rule.origin.name,
                      "expand1": bool(rule.options.expand1 and not rule.alias),
                      "keep": [[i, inline] for i, inline in keep] if filtered else None})
    states = []
    for state in range(len(parse_table.states)):
        actions = {}
        for sym, (action, arg) in parse_table.states[state].items():
            is_shift = action.name == "Shift"
            actions[sym] = [SHIFT, arg] if is_shift else [REDUCE, index[arg]]
        states.append(actions)
    return {"format": FORMAT, "terminals": terminals,
            "first": {name: _first_chars(regex) for name, regex in terminals.items()},
            "ignore": sorted(lark.lexer_conf.ignore), "newline": newline,
            "lexers": lexers, "state_lexer": state_lexer, "root_lexer": root,
            "rules": rules, "states": states,
            "start": parse_table.start_states["start"], "end": parse_table.end_states["start"]}


ASCII = 128


def _first_chars(regex: str) -> str | None:
    """The ASCII characters a match of `regex` can start with, or None when it may start with
    anything (a non-ASCII character, or a pattern this analysis does not follow). Errs on the
    side of more characters: the lexer still matches each candidate."""
    try:                               # Python 3.11+
        from re import _constants as c
        from re import _parser
    except ImportError:                # 3.10
        import sre_constants as c  # type: ignore[no-redef]
        import sre_parse as _parser  # type: ignore[no-redef]

    def first(items) -> tuple[set[int] | None, bool]:
        """(characters, nullable) of a sequence of parsed items."""
        chars: set[int] = set()
        for op, av in items:
            got, nullable = one(op, av)
            if got is None:
                return None, False
            chars |= got
            if not nullable:
                return chars, False
        return chars, True

    def one(op, av) -> tuple[set[int] | None, bool]:
        if op is c.LITERAL:
            return {av}, False
        if op is c.NOT_LITERAL or op is c.ANY:
            return None, False
        if op is c.IN:
            if any(o is c.NEGATE or o is c.CATEGORY for o, _ in av):
                return None, False
            chars = set()
            for o, a in av:
                chars |= {a} if o is c.LITERAL else set(range(a[0], a[1] + 1))
            return chars, False
        if op is c.SUBPATTERN:
            return first(av[-1])
        if op is c.BRANCH:
            chars, nullable = set(), False
            for alt in av[1]:
                got, n = first(alt)
                if got is None:
                    return None, False
                chars |= got
                nullable = nullable or n
            return chars, nullable
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            low, _, body = av
            got, nullable = first(body)
            return got, nullable or low == 0
        if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            return set(), True        # zero width: the next item decides
        return None, False

    chars, nullable = first(_parser.parse(regex))
    if chars is None or nullable or any(ch >= ASCII for ch in chars):
        return None
    return "".join(sorted(map(chr, chars)))


# --- running them (every start) --------------------------------------------------------------
class _Lexer:
    """One state's lexer: candidate terminals by first character, in lark's order."""

    def __init__(self, spec: dict, patterns: dict, first: dict):
        self.order = spec["order"]
        self.unless = spec["unless"]
        self.allowed = set(self.order)
        self._patterns, self._first = patterns, first
        self._by_char: dict[str, tuple] = {}

    def candidates(self, ch: str | None) -> tuple:
        """The terminals that can match at a `ch` (None: a non-ASCII character)."""
        try:
            return self._by_char[ch]
        except KeyError:
            got = tuple((name, self._patterns[name]) for name in self.order
                        if self._first[name] is None or (ch is not None and ch in self._first[name]))
            self._by_char[ch] = got
            return got

    def match(self, text: str, pos: int) -> tuple[str, str] | None:
        ch = text[pos]
        for name, pattern in self.candidates(ch if ord(ch) < ASCII else None):
            m = pattern.match(text, pos)
            if m:
                value = m.group(0)
                retype = self.unless.get(name)
                return value, (retype.get(value, name) if retype else name)
        return None


class Parser:
    """Text -> Tree with the stored tables."""

    def __init__(self, tables: dict):
        if tables.get("format") != FORMAT:
            raise ValueError("not cnnspec LALR tables")
        self._patterns = {name: _Pattern(regex) for name, regex in tables["terminals"].items()}
        first = tables["first"]
        self.lexers = [_Lexer(spec, self._patterns, first) for spec in tables["lexers"]]
        self.state_lexer = [self.lexers[i] for i in tables["state_lexer"]]
        self.root = self.lexers[tables["root_lexer"]]
        self.ignore = frozenset(tables["ignore"])
        self.newline = frozenset(tables["newline"])
        self.states = [{sym: tuple(act) for sym, act in acts.items()}
                       for acts in tables["states"]]
        self.rules = [(r["origin"], r["size"], r["name"], r["expand1"],
                       [tuple(k) for k in r["keep"]] if r["keep"] is not None else None)
                      for r in tables["rules"]]
        self.start, self.end = tables["start"], tables["end"]

    # The lexer and the parser run as one loop: the parser's state picks the lexer.
    def parse(self, text: str, ignored: list | None = None) -> Tree:
        """The tree of `text`; the ignored tokens (comments, blanks) go to `ignored` if given."""
        states, rules = self.states, self.rules
        stack, values = [self.start], []
        pos, line, line_start, size = 0, 1, 0, len(text)
        last = None
        ignore, newline = self.ignore, self.newline
        while pos < size:
            lexer = self.state_lexer[stack[-1]]
            found = lexer.match(text, pos)
            if found is None:
                self._unexpected(text, pos, line, pos - line_start + 1, lexer, stack)
            value, type_ = found
            start, start_line, column = pos, line, pos - line_start + 1
            if type_ in newline:
                count = value.count("\n")
                if count:
                    line += count
                    line_start = pos + value.rindex("\n") + 1
            pos += len(value)
            token = Token(type_, value, start, start_line, column, line, pos - line_start + 1, pos)
            if type_ in ignore:
                if ignored is not None:
                    ignored.append(token)
                continue
            last = token
            self._feed(stack, values, last, states, rules)
        end = (Token("$END", "", last.start_pos, last.line, last.column, last.end_line,
                     last.end_column, last.end_pos) if last else Token("$END", "", 0, 1, 1))
        return self._feed(stack, values, end, states, rules, is_end=True)

    def _feed(self, stack, values, token, states, rules, is_end=False):
        while True:
            try:
                action, arg = states[stack[-1]][token.type]
            except KeyError:
                raise self._unexpected_token(token, stack) from None
            if action == SHIFT:
                stack.append(arg)
                values.append(token)
                return None
            origin, size, name, expand1, keep = rules[arg]
            if size:
                children = values[-size:]
                del stack[-size:]
                del values[-size:]
            else:
                children = []
            value = _build(children, name, expand1, keep)
            stack.append(states[stack[-1]][origin][1])
            values.append(value)
            if is_end and stack[-1] == self.end:
                return values[-1]

    def _unexpected(self, text, pos, line, column, lexer, stack):
        """As lark's contextual lexer: a token another state knows is an unexpected token."""
        found = self.root.match(text, pos)
        allowed = lexer.allowed - self.ignore
        if found is None or found[1] in self.ignore:
            raise UnexpectedCharacters(pos, line, column, allowed or {"<END-OF-FILE>"})
        value, type_ = found
        end_line = line + (value.count("\n") if type_ in self.newline else 0)
        end_column = (len(value) - value.rindex("\n") if end_line != line
                      else column + len(value))
        token = Token(type_, value, pos, line, column, end_line, end_column, pos + len(value))
        raise UnexpectedToken(token, allowed, self._accepts(stack))

    def _unexpected_token(self, token: Token, stack: list) -> UnexpectedToken:
        expected = {s for s in self.states[stack[-1]] if s.isupper()}
        return UnexpectedToken(token, expected, self._accepts(stack))

    def _accepts(self, stack: list) -> set[str]:
        """The terminals that would be shifted in this state, after its reductions."""
        return {sym for sym in self.states[stack[-1]]
                if sym.isupper() and self._would_shift(list(stack), sym)}

    def _would_shift(self, stack: list, sym: str) -> bool:
        while True:
            action = self.states[stack[-1]].get(sym)
            if action is None:
                return False
            if action[0] == SHIFT:
                return True
            origin, size = self.rules[action[1]][:2]
            if size:
                del stack[-size:]
            stack.append(self.states[stack[-1]][origin][1])
            if sym == "$END" and stack[-1] == self.end:
                return True


def _build(children: list, name: str, expand1: bool, keep) -> object:
    """A rule's value from its children, shaped as lark's ParseTreeBuilder shapes it."""
    if keep is None:
        kept = children
    else:
        kept = []
        for i, inline in keep:
            if inline:
                kept += children[i].children
            else:
                kept.append(children[i])
    result = kept[0] if expand1 and len(kept) == 1 else Tree(name, kept)
    if isinstance(result, Tree):
        _propagate(result.meta, children)
    return result


_EDGES = (("line", "column", "start_pos"), ("end_line", "end_column", "end_pos"))


def _propagate(meta: Meta, children: list) -> None:
    """Start at the first child that covers text and end at the last, counting the children
    that the tree drops or inlines (lark's "containers")."""
    for child, names in ((_first_meta(children), _EDGES[0]),
                         (_first_meta(reversed(children)), _EDGES[1])):
        if child is None:
            continue
        values = [getattr(child, f"container_{n}", getattr(child, n)) for n in names]
        if not hasattr(meta, names[0]):      # a `?rule` child keeps its own position
            for n, v in zip(names, values):
                setattr(meta, n, v)
            meta.empty = False
        for n, v in zip(names, values):
            setattr(meta, f"container_{n}", v)


def _first_meta(children):
    for child in children:
        if isinstance(child, Tree):
            if not child.meta.empty:
                return child.meta
        elif isinstance(child, Token):
            return child
    return None


class _Pattern:
    """A terminal's regex, compiled on its first use: most specs use a few terminals."""

    __slots__ = ("_compiled", "regex")

    def __init__(self, regex: str):
        self.regex, self._compiled = regex, None

    def match(self, text: str, pos: int):
        if self._compiled is None:
            self._compiled = re.compile(self.regex)
        return self._compiled.match(text, pos)
