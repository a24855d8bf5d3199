"""Syntax tree -> IR: expands blocks, repeats, branches and residuals while inferring every
shape and count, so that an impossible network is refused with a located error before any
framework is imported.

Naming: an unnamed layer is called after its kind and a counter within its scope (conv1, bn2,
relu3); a block instance, a branch and a shortcut open a scope whose name prefixes the names
inside (`layer1.conv1`). Names given in a `repeat` get the iteration as suffix (`x_2`).
"""

from __future__ import annotations

import keyword
from collections import Counter
from dataclasses import dataclass, field

from pydantic import ValidationError

from . import settings
from .errors import Span, SpecError, SpecErrors, did_you_mean
from .ir import Group, Model, Node
from .ir import Span as IRSpan
from .layers import KEYWORDS, Layer, ShapeError, fmt_shape
from .layers.base import ACTIVATION_ALIASES, ACTIVATIONS
from .parse import Tree
from .pydantic_errors import layer_error
from .values import DEPTH, WIDTH, Word, describe, evaluate, is_tree, span_of

MAX_NODES = 20_000  # ~2 s of elaboration; the largest published CNNs have ~1,000
MAX_REPEAT = 100_000
MAX_WORK = 4 * MAX_NODES  # layers plus repeat iterations; bounds the time of an expansion
MAX_DEPTH = 64


@dataclass
class BlockDef:
    name: str
    params: list[tuple[str, Tree | None]]
    body: Tree
    span: Span | None


@dataclass
class Scope:
    prefix: str = ""
    env: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)  # local tensor name -> node name
    counters: Counter = field(default_factory=Counter)
    chain: tuple = ()  # block names being expanded
    notes: tuple = ()  # "in block 'x' used at line N"
    suffix: str = ""  # from repeats
    parent: Scope | None = None  # where tensor names are looked up next

    def child(self, prefix: str, env: dict | None = None, chain=(), notes=()) -> Scope:
        return Scope(
            prefix=prefix,
            env=self.env if env is None else env,
            chain=chain or self.chain,
            notes=notes or self.notes,
            parent=self,
        )

    def sibling(self, env: dict | None = None, suffix: str | None = None) -> Scope:
        """The same namespace with other bindings (repeat iterations, if bodies)."""
        return Scope(
            self.prefix,
            self.env if env is None else env,
            self.tensors,
            self.counters,
            self.chain,
            self.notes,
            self.suffix if suffix is None else suffix,
            self.parent,
        )

    def lookup(self, name: str) -> str | None:
        """A tensor name, from this scope outwards: a block can read a skip passed to it."""
        scope = self
        while scope is not None:
            if name in scope.tensors:
                return scope.tensors[name]
            scope = scope.parent
        return None


@dataclass
class Args:
    pos: list = field(default_factory=list)  # (value, span)
    kw: dict = field(default_factory=dict)  # name -> (value, span)


class Elaborator:
    def __init__(self, tree: Tree, path: str | None = None, scale: str | None = None):
        self.tree = tree
        self.path = path
        self.scale = scale
        self.globals: dict = {}  # the selected scale's multipliers and values
        self.scale_input: tuple | None = None
        self.errors: list[SpecError] = []
        self.nodes: list[Node] = []
        self.shapes: dict[str, tuple | None] = {}
        self.groups: list[Group] = []
        self.blocks: dict[str, BlockDef] = {}
        self.model_name: str | None = None
        self.outputs: list[str] = []
        self.input_seen = False
        self.compile_spec = None
        self.transfer_spec = None
        self._transfer_tree = None
        self.defaults: dict[str, dict] = {}  # layer kind -> arguments (the defaults section)
        self.work = 0  # nodes made plus repeat iterations run

    # --- entry ---------------------------------------------------------------------------------
    def run(self) -> Model:
        current: str | None = None
        items = self.tree.children
        for err in check_once(items):
            self._error(err)
        scales = [item for item in items if is_tree(item, "scales")]
        self._guard(self._select_scale, scales)
        if self.errors:
            return self._fail()
        top = Scope(env=dict(self.globals))
        for item in items:  # blocks first: they may be used before they are defined
            if is_tree(item, "block_def"):
                self._guard(self._define_block, item)
            elif is_tree(item, "defaults"):  # and defaults hold for every line, before or after
                self._guard(self._defaults, item)
        for item in items:
            kind = item.data
            if kind == "model":
                self.model_name = self._guard(check_name, item.children[0], "model")
            elif kind == "input":
                current = self._guard(self._input, item) or current
            elif kind in ("block_def", "defaults", "scales"):
                continue
            elif kind == "output":
                self._guard(self._output, item, top)
            elif kind in ("compile", "transfer"):
                self._guard(self._section, item)
            else:
                if not self.input_seen:
                    self._error(
                        SpecError(
                            "E211",
                            "a layer comes before the input",
                            span_of(item),
                            hint="start the network with 'input HxWxC', e.g. 'input 224x224x3'",
                        )
                    )
                    return self._fail()
                current = self._stmt(item, top, current)
        if not self.input_seen and not self.errors:
            self._error(
                SpecError(
                    "E211",
                    "the spec declares no input",
                    Span(1, 1),
                    hint="add a line 'input HxWxC', e.g. 'input 224x224x3'",
                )
            )
        if self._transfer_tree is not None and not self.errors:
            current = self._guard(self._transfer, self._transfer_tree, top, current) or current
        if not self.outputs and current is not None:
            self.outputs = [current]
        if self.errors:
            return self._fail()
        # Built from checked parts, so constructed without validation: validating would build
        # the schema of every layer kind, a third of a `cnnspec summary` (tests check that
        # `Model.model_validate_json(m.to_json()) == m`).
        model = Model.model_construct(
            name=self.model_name or "model",
            nodes=self.nodes,
            scale=self.scale,
            outputs=self.outputs,
            groups=self.groups,
            compile=self.compile_spec,
            transfer=self.transfer_spec,
            source=self.path,
        )
        if model.transfer is not None:
            from .transfer.freeze import apply_freeze

            self._guard(apply_freeze, model)
            if self.errors:
                return self._fail()
        return model

    def _fail(self):
        for err in self.errors:
            err.located(self.path)
        raise SpecErrors(self.errors)

    def _error(self, err: SpecError, scope: Scope | None = None) -> None:
        if scope is not None and scope.notes and not err.notes:
            err.notes = list(scope.notes)
        self.errors.append(err)

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except SpecError as err:
            self._error(err, next((a for a in args if isinstance(a, Scope)), None))
            return None

    # --- top-level items ---------------------------------------------------------------------
    def _define_block(self, item: Tree) -> None:
        name_tok, *rest = item.children
        name = check_name(name_tok, "block")
        if name in KEYWORDS:
            raise SpecError(
                "E216",
                f"block '{name}' has the name of a layer kind",
                span_of(name_tok),
                hint="choose another name for the block",
            )
        if name in self.blocks:
            raise SpecError(
                "E217",
                f"block '{name}' is defined twice",
                span_of(name_tok),
                hint=f"the first definition is at line {self.blocks[name].span.line}",
            )
        params, seen = [], set()
        for p in rest[:-1]:
            pname = check_name(p.children[0], "parameter")
            if pname in seen:
                raise SpecError("E217", f"parameter '{pname}' appears twice", span_of(p))
            seen.add(pname)
            params.append((pname, p.children[1] if len(p.children) > 1 else None))
        self.blocks[name] = BlockDef(name, params, rest[-1], span_of(item))

    def _input(self, item: Tree) -> str:
        if self.input_seen:
            raise SpecError(
                "E218",
                "a second input",
                span_of(item),
                hint="cnnspec networks have one input tensor",
            )
        tok = item.children[0]
        value = input_dims(tok)
        shape = value if isinstance(value, tuple) else (value,)
        if self.scale_input is not None:  # the selected scale's resolution
            shape = self.scale_input
        if len(shape) != 3 and len(shape) != 1:
            raise SpecError(
                "E212",
                f"input {fmt_shape(shape)}: expected height x width x channels, or a vector length",
                span_of(item),
                received=fmt_shape(shape),
                hint=f"write {fmt_shape(shape)}x1 for one channel" if len(shape) == 2 else None,
            )
        if any(d <= 0 for d in shape):
            raise SpecError("E212", "input sizes must be positive", span_of(item))
        self.input_seen = True
        from .layers.core import Input

        name = self._add_node("input", Input(shape=shape), [], span_of(item), Scope())
        return self._preprocess(item, name, shape) if len(item.children) > 1 else name

    def _preprocess(self, item: Tree, input_name: str, shape) -> str:
        """`input 224x224x3 scale=1/255 mean=(...) std=(...)`: a `preprocess` node after the
        input (cnnspec/layers/preprocess.py), located at the argument that is wrong."""
        from .layers.preprocess import Preprocess

        args = self._args(item.children[1:], Scope())
        if args.pos:
            raise SpecError(
                "E204",
                "input takes named arguments only after its size",
                args.pos[0][1],
                hint=f"e.g. {Preprocess.kind_doc}",
            )
        layer, _ = self._build_layer(Preprocess, {}, "input", args, Scope(), span_of(item))
        wrong = layer.mismatched(shape[-1]) if len(shape) == 3 else None
        span = args.kw[wrong][1] if wrong else span_of(item)
        return self._add_node("preprocess", layer, [input_name], span, Scope())

    def _output(self, item: Tree, top: Scope) -> None:
        for tok in item.children:
            self.outputs.append(self._tensor(str(tok), top, span_of(tok)))

    def _section(self, item: Tree) -> None:
        if item.data == "compile":
            if self.compile_spec is not None:
                raise SpecError("E218", "a second compile section", span_of(item))
            self.compile_spec = settings.compile_section(item)
        else:
            if self._transfer_tree is not None:
                raise SpecError("E218", "a second transfer section", span_of(item))
            self._transfer_tree = item

    def _select_scale(self, sections: list[Tree]) -> None:
        """`scales { b0 width=1.0 depth=1.0; b1 width=1.0 depth=1.1 input=240x240x3 ... }`:
        one line per named scale. The selected one (the first unless `--scale NAME`) sets the
        width and depth multipliers of round_filters() / round_repeats(), may replace the
        input size, and binds its other values (dropout=0.2) as names every block sees."""
        if len(sections) > 1:
            raise SpecError("E218", "a second scales section", span_of(sections[1]))
        if not sections:
            if self.scale is not None:
                raise SpecError(
                    "E228",
                    f"the spec has no scales, so no scale '{self.scale}'",
                    Span(1, 1),
                    hint="add a section: scales { small width=0.5; large width=1.0 depth=1.2 }",
                )
            return
        lines: dict[str, Tree] = {}
        for stmt in sections[0].children[0].children:
            if not is_tree(stmt, "layer") or is_tree(stmt.children[-1], "body"):
                raise SpecError(
                    "E226",
                    "the scales section holds one line per scale",
                    span_of(stmt),
                    hint="e.g. b1 width=1.0 depth=1.1 input=240x240x3",
                )
            name = str(stmt.children[0])
            if name in lines:
                raise SpecError("E207", f"the scale '{name}' is defined twice", span_of(stmt))
            lines[name] = stmt
        if not lines:
            raise SpecError("E226", "the scales section is empty", span_of(sections[0]))
        if self.scale is None:
            self.scale = next(iter(lines))
        if self.scale not in lines:
            raise SpecError(
                "E228",
                f"unknown scale '{self.scale}'",
                span_of(sections[0]),
                received=self.scale,
                expected=", ".join(lines),
                hint=did_you_mean(self.scale, lines),
            )
        args = self._args(lines[self.scale].children[1:], Scope())
        if args.pos:
            raise SpecError(
                "E203", "a scale's values are named: width=W depth=D input=HxWxC", args.pos[0][1]
            )
        for key, (value, span) in args.kw.items():
            if key in ("width", "depth"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise SpecError(
                        "E228", f"{key} is a positive multiplier, received {describe(value)}", span
                    )
                self.globals[WIDTH if key == "width" else DEPTH] = float(value)
            elif key == "input":
                if not (
                    isinstance(value, tuple)
                    and len(value) in (1, 3)
                    and all(isinstance(v, int) and v > 0 for v in value)
                ):
                    raise SpecError(
                        "E212", f"a scale's input is HxWxC, received {describe(value)}", span
                    )
                self.scale_input = value
            else:
                self.globals[key] = value

    def _defaults(self, item: Tree) -> None:
        """`defaults { bn eps=1e-3 momentum=0.99; conv nobias }`: arguments every layer of a
        kind starts from (any keyword of the kind), before the line's own. Named arguments
        and flags only: a bare number would mean a different field for each keyword."""
        for stmt in item.children[0].children:
            if not is_tree(stmt, "layer") or is_tree(stmt.children[-1], "body"):
                raise SpecError(
                    "E226",
                    "the defaults section holds layer lines only",
                    span_of(stmt),
                    hint="e.g. defaults { bn eps=1e-3; conv nobias }",
                )
            word_tok, *rest = stmt.children
            word = str(word_tok)
            if word not in KEYWORDS:
                raise SpecError(
                    "E202",
                    f"unknown layer '{word}'",
                    span_of(word_tok),
                    received=word,
                    hint=did_you_mean(word, list(KEYWORDS)),
                )
            cls, _ = KEYWORDS[word]
            args = self._args(rest, Scope(env=dict(self.globals)))  # a scale's values too
            values: dict = {}
            for value, span in args.pos:
                text = value.text if isinstance(value, Word) else None
                if text in cls.flags:
                    values.update(cls.flags[text])
                elif (
                    "activation" in cls.model_fields
                    and text is not None
                    and (text in ACTIVATIONS or text in ACTIVATION_ALIASES or text == "none")
                ):
                    values["activation"] = text
                else:
                    raise SpecError(
                        "E203",
                        f"a default of '{word}' is named (arg=value) or a "
                        f"flag, not '{describe(value)}'",
                        span,
                        expected=", ".join(cls.flags) or "name=value",
                        hint=cls.kind_doc,
                    )
            fields = set(cls.model_fields) - {"kind"}
            for key, (value, span) in args.kw.items():
                if key not in fields:
                    raise SpecError(
                        "E204",
                        f"'{word}' has no argument '{key}'",
                        span,
                        expected=", ".join(sorted(fields)),
                        hint=did_you_mean(key, fields),
                    )
                values[key] = value.text if isinstance(value, Word) else value
            kind = cls.model_fields["kind"].default
            for key in values.keys() & self.defaults.get(kind, {}).keys():
                raise SpecError("E219", f"a second default for {kind} '{key}'", span_of(stmt))
            self.defaults.setdefault(kind, {}).update(values)

    def _transfer(self, item: Tree, top: Scope, current: str | None) -> str | None:
        spec, head_at, head_body = settings.transfer_section(item)
        if head_body is not None:
            from .transfer.head import cut_at, default_cut

            names = {n.name for n in self.nodes}
            # at= takes a named tensor or any layer's dotted name (as the summary shows it)
            at = (
                head_at
                if head_at in names and head_at not in top.tensors
                else self._tensor(head_at, top, span_of(item))
                if head_at
                else default_cut(self.nodes)
            )
            self.nodes, self.groups = cut_at(self.nodes, self.groups, at)
            self.outputs = []
            scope = top.child("head.")
            first = len(self.nodes)
            current = self._body(head_body, scope, at)
            spec = spec.model_copy(
                update={"head_at": at, "head": [n.name for n in self.nodes[first:]]}
            )
        self.transfer_spec = spec
        return current

    # --- statements ------------------------------------------------------------------------------
    def _body(self, body: Tree, scope: Scope, current: str | None) -> str | None:
        for stmt in body.children:
            current = self._stmt(stmt, scope, current)
        return current

    def _stmt(self, stmt: Tree, scope: Scope, current: str | None, name: str | None = None):
        try:
            if stmt.data == "named":
                tok, inner = stmt.children
                return self._stmt(inner, scope, current, check_name(tok, "tensor"))
            handler = {
                "layer": self._layer,
                "repeat": self._repeat,
                "residual": self._residual,
                "parallel": self._parallel,
                "if_stmt": self._if,
            }[stmt.data]
            out = handler(stmt, scope, current, name)
            if name is not None and out is not None:
                scope.tensors[name] = out
            return out
        except SpecError as err:
            self._error(err, scope)
            return None

    def _args(self, trees, scope: Scope) -> Args:
        args = Args()
        for a in trees:
            if a.data == "kwarg":
                key = str(a.children[0])
                if key in args.kw:
                    raise SpecError("E219", f"argument '{key}' is given twice", span_of(a))
                args.kw[key] = (evaluate(a.children[1], scope.env), span_of(a))
            else:
                args.pos.append((evaluate(a.children[0], scope.env), span_of(a)))
        return args

    def _inputs(self, args: Args, scope: Scope, current: str | None) -> list[str | None]:
        if "from" not in args.kw:
            return [current]
        value, span = args.kw.pop("from")
        names = value if isinstance(value, tuple) else (value,)
        return [self._tensor(str(v) if isinstance(v, Word) else v, scope, span) for v in names]

    def _tensor(self, name, scope: Scope, span) -> str:
        if not isinstance(name, str):
            raise SpecError("E220", f"expected a tensor name, received {describe(name)}", span)
        found = scope.lookup(name)
        if found is not None:
            return found
        if name == "input" and self.nodes:
            return self.nodes[0].name
        hint = did_you_mean(name, scope.tensors) or (
            "name a tensor first: 'skip = conv 64 3x3 same', then use 'skip'"
        )
        raise SpecError("E220", f"unknown tensor '{name}'", span, hint=hint)

    def _layer(self, stmt: Tree, scope: Scope, current, name):
        word_tok, *rest = stmt.children
        word = str(word_tok)
        body = rest.pop() if rest and is_tree(rest[-1], "body") else None
        args = self._args(rest, scope)
        if word in self.blocks:
            if body is not None:
                raise SpecError("E221", f"block '{word}' takes no body here", span_of(body))
            return self._call(self.blocks[word], args, stmt, scope, current, name)
        if word not in KEYWORDS and isinstance(scope.env.get(word), Word):
            # a block parameter carrying an activation, used as a line: `block b(act=relu)
            # { conv 8 3x3; act }`; `none` (or linear) makes the line nothing
            fn = scope.env[word].text
            if fn in ("none", "linear") and not rest and body is None:
                return current
            if fn not in ACTIVATIONS and fn not in ACTIVATION_ALIASES:
                raise SpecError(
                    "E202",
                    f"'{word}' is '{fn}' here, which is not an activation",
                    span_of(word_tok),
                    received=fn,
                    expected=", ".join((*ACTIVATIONS, "none")),
                    hint=did_you_mean(fn, ACTIVATIONS),
                )
            word = fn
        if word not in KEYWORDS:
            hint = did_you_mean(word, list(KEYWORDS) + list(self.blocks))
            raise SpecError(
                "E202",
                f"unknown layer '{word}'",
                span_of(word_tok),
                received=word,
                hint=hint
                or "see 'cnnspec kinds' for the layer kinds, or define a block with this name",
            )
        if body is not None:
            raise SpecError("E221", f"'{word}' takes no body", span_of(body))
        cls, preset = KEYWORDS[word]
        named_from = "from" in args.kw
        inputs = self._inputs(args, scope, current)
        layer, refs = self._build_layer(cls, preset, word, args, scope, span_of(stmt))
        # a detection head reads only the maps it names (`detect p3 p4 p5`), not the tensor
        # before it: merges (`add skip`) join the current tensor with the named ones
        if getattr(cls, "refs_only", False) and refs and not named_from:
            inputs = []
        inputs += refs
        return self._place(layer, word, inputs, span_of(stmt), scope, name)

    def _build_layer(
        self,
        cls: type[Layer],
        preset: dict,
        word: str,
        args: Args,
        scope: Scope,
        where: Span | None = None,
    ) -> tuple[Layer, list[str]]:
        # the kind's defaults, then the keyword's preset (maxpool is max whatever the
        # defaults say), then the line's own arguments
        values, refs = {**self.defaults.get(cls.model_fields["kind"].default, {}), **preset}, []
        slots = [f for f in cls.positional if f not in args.kw]
        has_act = "activation" in cls.model_fields
        for value, span in args.pos:
            if isinstance(value, Word):
                text = value.text
                if text in cls.flags:
                    values.update(cls.flags[text])
                elif has_act and (
                    text in ACTIVATIONS or text in ACTIVATION_ALIASES or text == "none"
                ):
                    values["activation"] = text
                elif cls.takes_refs:
                    refs.append(self._tensor(text, scope, span))
                else:
                    words = list(cls.flags) + (list(ACTIVATIONS) if has_act else [])
                    raise SpecError(
                        "E203",
                        f"'{word}' does not understand '{text}'",
                        span,
                        received=text,
                        expected=", ".join(words) or "numbers only",
                        hint=did_you_mean(text, words)
                        or did_you_mean(text, scope.env)
                        or (
                            f"'{text}' is not a parameter of the enclosing block"
                            if scope.chain
                            else None
                        ),
                    )
            elif slots:
                values[slots.pop(0)] = value
            else:
                raise SpecError(
                    "E203",
                    f"'{word}' takes at most {len(cls.positional)} bare "
                    f"number(s) ({', '.join(cls.positional) or 'none'})",
                    span,
                    received=describe(value),
                    hint=f"name the argument: {cls.kind_doc or word}",
                )
        fields = set(cls.model_fields) - {"kind"}
        for key, (value, span) in args.kw.items():
            if key not in fields:
                raise SpecError(
                    "E204",
                    f"'{word}' has no argument '{key}'",
                    span,
                    expected=", ".join(sorted(fields)) or "no arguments",
                    hint=did_you_mean(key, fields),
                )
            values[key] = value.text if isinstance(value, Word) else value
        values = {k: (v.text if isinstance(v, Word) else v) for k, v in values.items()}
        try:
            return cls(**values), refs
        except ValidationError as exc:
            raise layer_error(exc, word, args.pos, args.kw, cls, where) from None

    def _auto_name(self, layer: Layer, word: str, scope: Scope) -> str:
        kind = layer.kind
        if kind == "activation":
            base = layer.fn
        elif kind == "merge":
            base = layer.op
        elif kind == "pool":
            base = f"{layer.op}pool"
        elif kind == "global_pool":
            base = "gap" if layer.op == "avg" else "gmp"
        else:
            base = kind
        return self._fresh(base, scope)

    def _fresh(self, base: str, scope: Scope) -> str:
        while True:
            scope.counters[base] += 1
            sep = "_" if base[-1].isdigit() else ""  # relu6_1, not relu61
            name = f"{scope.prefix}{base}{sep}{scope.counters[base]}"
            if name not in self.shapes:
                return name

    def _explicit(self, name: str, scope: Scope, span) -> str:
        full = f"{scope.prefix}{name}{scope.suffix}"
        if full in self.shapes:
            raise SpecError(
                "E207",
                f"the name '{name}' is used twice",
                span,
                hint="give each layer its own name",
            )
        return full

    def _place(self, layer: Layer, word: str, inputs, span, scope: Scope, name) -> str:
        full = self._explicit(name, scope, span) if name else self._auto_name(layer, word, scope)
        return self._add_node(full, layer, inputs, span, scope)

    def _add_node(self, full: str, layer: Layer, inputs, span, scope: Scope) -> str | None:
        self.work += 1
        if len(self.nodes) >= MAX_NODES or self.work > MAX_WORK:
            raise SpecError(
                "E215",
                f"the network has more than {MAX_NODES:,} layers",
                span,
                hint="a repeat count or a recursion is larger than intended",
            )
        if not layer.min_inputs <= len(inputs) <= layer.max_inputs:
            raise SpecError(
                "E222",
                f"'{layer.kind}' takes {layer.min_inputs}"
                f"{'' if layer.max_inputs == layer.min_inputs else '+'} input(s), "
                f"received {len(inputs)}",
                span,
                hint="merges name the tensors to join: 'concat skip1'"
                if layer.kind == "merge"
                else None,
            )
        self.shapes[full] = None
        shapes = [self.shapes.get(i) for i in inputs]
        if any(s is None for s in shapes):
            return None  # an earlier error; do not pile more on it
        try:
            out = layer.output_shape(shapes)
            trainable, frozen = layer.count_params(shapes)
            macs = layer.count_macs(shapes, out)
            # a layer placed against the input image (a detection head's strides)
            if hasattr(layer, "check_image") and self.nodes:
                layer.check_image(self.nodes[0].shape, shapes)
        except ShapeError as exc:
            listing = ", ".join(fmt_shape(s) for s in shapes)
            shown = "tensor" in exc.message or (shapes and fmt_shape(shapes[0]) in exc.message)
            where = "" if shown or not shapes else f" (input {listing})"
            raise SpecError(exc.code, exc.message + where, span, hint=exc.hint) from None
        self.shapes[full] = out
        self.nodes.append(
            Node.model_construct(
                name=full,
                layer=layer,
                inputs=list(inputs),
                shape=tuple(out),
                trainable=trainable,
                non_trainable=frozen,
                macs=macs,
                span=_ir_span(span),
            )
        )
        return full

    # --- blocks ------------------------------------------------------------------------------
    def _call(self, block: BlockDef, args: Args, stmt, scope: Scope, current, name):
        span = span_of(stmt)
        if block.name in scope.chain:
            chain = " -> ".join((*scope.chain, block.name))
            raise SpecError(
                "E223",
                f"block '{block.name}' uses itself ({chain})",
                span,
                hint="blocks cannot be recursive; use 'repeat'",
            )
        if len(scope.chain) >= MAX_DEPTH:
            raise SpecError("E223", f"blocks are nested more than {MAX_DEPTH} deep", span)
        inputs = self._inputs(args, scope, current)
        if len(inputs) != 1:
            raise SpecError("E222", "a block reads one tensor", span)
        env = self._bind(block, args, span)
        shape = self.shapes.get(inputs[0])
        if shape is None:
            return None
        if len(shape) == 3:
            env.update(in_height=shape[0], in_width=shape[1], in_channels=shape[2])
        else:
            env.update(in_features=shape[0], in_channels=shape[0])
        inst = self._explicit(name, scope, span) if name else self._fresh(block.name, scope)
        line = span.line if span else "?"
        child = scope.child(
            inst + ".",
            env,
            chain=(*scope.chain, block.name),
            notes=(*scope.notes, (f"note: in block '{block.name}' used at line {line}")),
        )
        first = len(self.nodes)
        out = self._body(block.body, child, inputs[0])
        self._group(inst, "block", first, block.name, span)
        return out

    def _bind(self, block: BlockDef, args: Args, span) -> dict:
        names = [p for p, _ in block.params]
        env: dict = dict(self.globals)
        if len(args.pos) > len(names):
            raise SpecError(
                "E210",
                f"block '{block.name}' takes {len(names)} argument(s), received {len(args.pos)}",
                args.pos[len(names)][1],
                hint=f"block {block.name}({', '.join(names)})",
            )
        for (value, _), pname in zip(args.pos, names):
            env[pname] = value
        for key, (value, kspan) in args.kw.items():
            if key not in names:
                raise SpecError(
                    "E204",
                    f"block '{block.name}' has no parameter '{key}'",
                    kspan,
                    expected=", ".join(names),
                    hint=did_you_mean(key, names),
                )
            if key in env:
                raise SpecError("E219", f"parameter '{key}' is given twice", kspan)
            env[key] = value
        for pname, default in block.params:
            if pname not in env:
                if default is None:
                    raise SpecError(
                        "E209",
                        f"block '{block.name}' needs its parameter '{pname}'",
                        span,
                        hint=f"block {block.name}({', '.join(names)})",
                    )
                env[pname] = evaluate(default, env)
        return env

    def _label(self, kind: str, scope: Scope) -> str:
        """A name for an unnamed residual or parallel: it labels a group, not a node."""
        scope.counters[f"#{kind}"] += 1
        return f"{scope.prefix}{kind}{scope.counters[f'#{kind}']}"

    def _group(self, path: str, kind: str, first: int, block=None, span=None) -> None:
        members = [n.name for n in self.nodes[first:]]
        self.groups.append(
            Group.model_construct(
                path=path, kind=kind, block=block, members=members, span=_ir_span(span)
            )
        )

    # --- control and structure ------------------------------------------------------------------
    def _repeat(self, stmt: Tree, scope: Scope, current, name):
        count_tree, *rest = stmt.children
        var = check_name(rest[0], "repeat variable") if len(rest) == 2 else None
        count = evaluate(count_tree, scope.env)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_REPEAT:
            raise SpecError(
                "E224",
                f"repeat needs a count from 0 to {MAX_REPEAT:,}",
                span_of(count_tree),
                received=describe(count),
            )
        for i in range(count):
            env = {**scope.env, var: i} if var else scope.env
            inner = scope.sibling(env, suffix=f"{scope.suffix}_{i + 1}")
            before = self.work
            current = self._body(rest[-1], inner, current)
            self.work += 1
            if self.errors:
                break
            if i == 0 or self.work > MAX_WORK:
                self._check_budget(count - i, self.work - before, span_of(stmt))
        return current

    def _check_budget(self, count: int, per_iteration: int, span) -> None:
        """Refuse an enormous repeat after its first iteration, before expanding the rest:
        `repeat 100000 { repeat 100000 { relu } }` fails at once instead of after minutes."""
        if self.work + per_iteration * (count - 1) > MAX_WORK:
            raise SpecError(
                "E215",
                f"this repeat would expand to about {per_iteration * count:,} "
                f"layers and iterations, more than the limit of {MAX_WORK:,}",
                span,
                hint=f"a network has at most {MAX_NODES:,} layers; a repeat count "
                "is larger than intended",
            )

    def _if(self, stmt: Tree, scope: Scope, current, name):
        cond, then, *other = stmt.children
        check_condition(cond, scope.env)
        value = evaluate(cond, scope.env)
        if not isinstance(value, (bool, int)):
            raise SpecError(
                "E205", f"'if' needs a condition, received {describe(value)}", span_of(cond)
            )
        if value:
            return self._body(then, scope.sibling(), current)
        if other:
            branch = other[0]
            if branch.data == "if_stmt":
                return self._if(branch, scope, current, name)
            return self._body(branch, scope.sibling(), current)
        return current

    def _structure_scope(self, scope: Scope, name, span) -> Scope:
        if not name:
            return scope
        return scope.child(self._explicit(name, scope, span) + ".")

    def _post_words(self, args: Args, allowed: dict, word: str) -> tuple[dict, str | None]:
        """Bare words after 'residual' / 'parallel': a merge op, an activation after it."""
        chosen, act = {}, None
        for value, span in args.pos:
            text = value.text if isinstance(value, Word) else None
            if text in allowed:
                chosen.update(allowed[text])
            elif text in ACTIVATIONS or text in ACTIVATION_ALIASES:
                act = text
            else:
                raise SpecError(
                    "E203",
                    f"'{word}' does not understand {describe(value)}",
                    span,
                    expected=", ".join([*allowed, "an activation"]),
                    hint=did_you_mean(str(text), [*allowed, *ACTIVATIONS]),
                )
        return chosen, act

    def _merge(self, op: str, inputs, act, span, scope: Scope, name) -> str | None:
        from .layers.core import Activation
        from .layers.merge import Merge

        merge_name = f"{scope.prefix}{op}" if name else self._fresh(op, scope)
        out = self._add_node(merge_name, Merge(op=op), inputs, span, scope)
        if act and out is not None:
            layer = Activation(fn=act)
            out = self._add_node(self._auto_name(layer, act, scope), layer, [out], span, scope)
        return out

    def _residual(self, stmt: Tree, scope: Scope, current, name):
        span = span_of(stmt)
        parts = list(stmt.children)
        bodies = [p for p in parts if is_tree(p, "body")]
        args = self._args([p for p in parts if not is_tree(p, "body")], scope)
        inputs = self._inputs(args, scope, current)
        mode = args.kw.pop("shortcut", (Word("identity"), None))
        for key, (_, kspan) in args.kw.items():
            raise SpecError(
                "E204",
                f"residual has no argument '{key}'",
                kspan,
                expected="from, shortcut",
                hint=did_you_mean(key, ["shortcut"]),
            )
        _, act = self._post_words(args, {}, "residual")
        inner = self._structure_scope(scope, name, span)
        first = len(self.nodes)
        body_out = self._body(bodies[0], inner, inputs[0])
        short_out = inputs[0]
        if len(bodies) == 2 or str(mode[0]) == "auto":
            sc_path = self._fresh("shortcut", inner)
            sc_scope, sc_first = inner.child(sc_path + "."), len(self.nodes)
            if len(bodies) == 2:
                short_out = self._body(bodies[1], sc_scope, inputs[0])
            else:
                short_out = self._auto_shortcut(inputs[0], body_out, sc_scope, span)
            if len(self.nodes) > sc_first:
                self._group(sc_path, "shortcut", sc_first, span=span_of(bodies[-1]))
        elif str(mode[0]) != "identity":
            raise SpecError(
                "E205",
                "shortcut is 'identity' or 'auto', or a body 'shortcut { ... }'",
                mode[1],
                received=str(mode[0]),
            )
        out = self._merge("add", [body_out, short_out], act, span, inner, name)
        self._group(
            inner.prefix.rstrip(".") if name else self._label("residual", scope),
            "residual",
            first,
            span=span,
        )
        return out

    def _auto_shortcut(self, src, body_out, scope: Scope, span):
        """A 1x1 projection with batch norm where the body changes the width or the stride."""
        a, b = self.shapes.get(src), self.shapes.get(body_out)
        if a is None or b is None or a == b:
            return src
        if len(a) != 3 or len(b) != 3 or a[0] % b[0] or a[1] % b[1]:
            raise SpecError(
                "E312",
                f"no 1x1 projection maps {fmt_shape(a)} to {fmt_shape(b)}",
                span,
                hint="write the shortcut out: 'shortcut { ... }'",
            )
        from .layers.conv import Conv
        from .layers.norm import BatchNorm

        conv = Conv(filters=b[2], kernel=1, stride=(a[0] // b[0], a[1] // b[1]), bias=False)
        out = self._add_node(self._auto_name(conv, "conv", scope), conv, [src], span, scope)
        bn = BatchNorm()
        return self._add_node(self._auto_name(bn, "bn", scope), bn, [out], span, scope)

    def _parallel(self, stmt: Tree, scope: Scope, current, name):
        span = span_of(stmt)
        branches = [c for c in stmt.children if is_tree(c, "branch")]
        args = self._args([c for c in stmt.children if not is_tree(c, "branch")], scope)
        inputs = self._inputs(args, scope, current)
        for key, (_, kspan) in args.kw.items():
            raise SpecError("E204", f"parallel has no argument '{key}'", kspan, expected="from")
        ops = {"concat": {"op": "concat"}, "add": {"op": "add"}, "multiply": {"op": "multiply"}}
        chosen, act = self._post_words(args, ops, "parallel")
        op = chosen.get("op", "concat")
        inner = self._structure_scope(scope, name, span)
        first = len(self.nodes)
        outs = []
        for br in branches:
            bname = check_name(br.children[0], "branch") if len(br.children) == 2 else None
            path = (
                self._explicit(bname, inner, span_of(br)) if bname else self._fresh("branch", inner)
            )
            bfirst = len(self.nodes)
            outs.append(self._body(br.children[-1], inner.child(path + "."), inputs[0]))
            self._group(path, "branch", bfirst, span=span_of(br))
        if len(outs) < 2:
            raise SpecError("E222", "parallel needs at least two branches", span)
        out = self._merge(op, outs, act, span, inner, name)
        self._group(
            inner.prefix.rstrip(".") if name else self._label("parallel", scope),
            "parallel",
            first,
            span=span,
        )
        return out


def check_name(tok, what: str) -> str:
    """A name may become an attribute or a variable in generated Python: the grammar makes it
    an ASCII identifier; Python keywords and dunder names are refused here."""
    name = str(tok)
    if keyword.iskeyword(name) or name.startswith("__"):
        why = "a Python keyword" if keyword.iskeyword(name) else "a name starting with '__'"
        raise SpecError(
            "E225",
            f"the {what} name '{name}' is {why}, which generated code cannot use",
            span_of(tok),
            received=name,
            hint=f"choose another name, e.g. '{name.strip('_')}_'"
            if name.strip("_")
            else "choose another name",
        )
    return name


# --- traps that would pass silently (issue 14): small, self-contained checks --------------------


def check_once(items) -> list[SpecError]:
    """A `model` line or a transfer setting written twice: the last one would silently win."""
    errors: list[SpecError] = []
    first: dict[str, Span | None] = {}

    def seen(key: str, what: str, node) -> None:
        if key in first:
            at = first[key]
            errors.append(
                SpecError(
                    "E218",
                    f"a second {what}",
                    span_of(node),
                    hint=f"the first is at line {at.line}; keep one" if at else "keep one",
                )
            )
        else:
            first[key] = span_of(node)

    for item in items:
        if is_tree(item, "model"):
            seen("model", "'model' line", item)
        elif is_tree(item, "transfer"):
            for stmt in item.children[0].children:
                if is_tree(stmt, "layer"):
                    word = str(stmt.children[0])
                    key = "strict" if word == "partial" else word
                    if key in ("source", "freeze", "head", "strict"):
                        seen(f"transfer.{key}", f"'{word}' in the transfer section", stmt)
    return errors


def check_condition(cond, env: dict) -> None:
    """In `if n == 1` an unbound name evaluates to a word, so a misspelt parameter would make the
    condition silently false. A bare word only makes sense against a parameter that holds a word
    (`if act == relu`); beside anything else it is an unknown name."""
    stack = [cond]
    while stack:
        node = stack.pop()
        if not isinstance(node, Tree):
            continue
        if node.data == "compare" and str(node.children[1]) in ("==", "!="):
            left, _, right = node.children
            for side, other in ((left, right), (right, left)):
                if _unbound(side, env) and not _holds_word(other, env):
                    name = str(side.children[0])
                    raise SpecError(
                        "E206",
                        f"unknown name '{name}' in the condition",
                        span_of(side),
                        received=name,
                        hint=did_you_mean(name, env)
                        or "a condition compares the parameters of the enclosing block",
                    )
        stack.extend(node.children)


def _unbound(node, env: dict) -> bool:
    return (
        is_tree(node, "name")
        and str(node.children[0]) not in env
        and str(node.children[0]) not in ("true", "false")
    )


def _holds_word(node, env: dict) -> bool:
    return is_tree(node, "name") and isinstance(env.get(str(node.children[0])), (Word, str))


def input_dims(tok) -> tuple[int, ...]:
    """`input 224x224x3` as integers; Python refuses int() of over 4,300 digits, so the length
    is checked first (issue 14: a 5,000-digit input size was a ValueError traceback)."""
    from .values import MAX_INT

    parts = str(tok).split("x")
    for p in parts:
        if len(p.lstrip("0")) > len(str(MAX_INT)):
            raise SpecError(
                "E214",
                f"the number {p[:6]}... ({len(p)} digits) is too large",
                span_of(tok),
                hint=f"sizes are at most {MAX_INT:,}",
            )
    return tuple(int(p) for p in parts)


def _ir_span(span: Span | None) -> IRSpan | None:
    return IRSpan.model_construct(**span.to_dict()) if span else None


def elaborate(tree: Tree, path: str | None = None, scale: str | None = None) -> Model:
    """The IR of a syntax tree; `scale` picks one of the spec's named scales (the first if
    None)."""
    return Elaborator(tree, path, scale).run()
