"""Records: the layers' and the IR's data classes, declared as pydantic models are, without
importing pydantic until something needs it.

Why: `cnnspec summary` should start in about 0.1 s. Importing pydantic and building the 31
model classes took 80 ms of the 150 a summary cost, while a summary only needs each layer's
arguments checked and stored.

How: a Record declares typed fields with annotations (`int`, `Literal[...]`, `tuple[...]`,
`X | None`, `Annotated[T, Field(ge=1), BeforeValidator(f)]`, other Records). Constructing one
checks the values with small checkers made from those annotations; they accept only the plain
cases, an exact type that meets its bounds (an int where an int is wanted, a tuple of such).
Everything else (a string to coerce, a value out of range, an unknown or missing argument) goes
to a pydantic model generated from the same annotations (`pydantic_model()`), which coerces it
or raises its ValidationError. pydantic thus decides every case the checkers do not accept, and
says every error; tests/test_record.py holds the checkers to it, value by value. Data from
outside (`model_validate`, `model_validate_json`) and the JSON Schema go through pydantic too.

The API is the part of pydantic's that cnnspec uses: model_fields, model_config, model_construct,
model_copy, model_dump, model_dump_json, model_validate(_json), model_json_schema; equality by
type and fields; frozen records are hashable. A Record can be a field of a user's pydantic model.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, ClassVar, Literal, Union

_MISSING = object()     # a field without a default
_NO = object()          # a checker's "not sure": pydantic decides


class Field:
    """A field's default and constraints, as pydantic.Field takes them (the subset cnnspec uses)."""

    __slots__ = ("annotation", "default", "default_factory", "description", "discriminator",
                 "ge", "gt", "le", "lt", "name")

    def __init__(self, default: Any = _MISSING, *, default_factory=None, description=None,
                 ge=None, gt=None, le=None, lt=None, discriminator=None):
        self.default, self.default_factory, self.description = default, default_factory, \
            description
        self.ge, self.gt, self.le, self.lt = ge, gt, le, lt
        self.discriminator = discriminator
        self.name, self.annotation = None, None

    def is_required(self) -> bool:
        return self.default is _MISSING and self.default_factory is None

    def bounds(self) -> dict:
        return {k: getattr(self, k) for k in ("ge", "gt", "le", "lt")
                if getattr(self, k) is not None}

    def pydantic_kwargs(self) -> dict:
        kw = self.bounds()
        if self.default is not _MISSING:
            kw["default"] = self.default
        if self.default_factory is not None:
            kw["default_factory"] = self.default_factory
        if self.description is not None:
            kw["description"] = self.description
        if self.discriminator is not None:
            kw["discriminator"] = self.discriminator
        return kw

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, annotation={self.annotation!r})"


class BeforeValidator:
    """A function that normalises a value before its type is checked (pydantic's, by name)."""

    __slots__ = ("func",)

    def __init__(self, func):
        self.func = func


def model_validator(*, mode: str):
    """Marks a method as a whole-record check: mode 'after' gets the record and returns it (or
    raises ValueError); mode 'before' (a classmethod) gets the raw arguments and returns them."""
    if mode not in ("before", "after"):
        raise ValueError(f"mode must be 'before' or 'after', got {mode!r}")

    def mark(func):
        target = func.__func__ if isinstance(func, classmethod) else func
        target.__record_validator__ = mode
        return func
    return mark


class Record:
    """Base of the records. Its own helpers start with `_record_`, so that a subclass's
    methods (a layer's `_check`) cannot shadow them."""

    model_config: ClassVar[dict] = {"extra": "forbid"}
    model_fields: ClassVar[dict[str, Field]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.model_config.get("extra", "forbid") != "forbid":
            raise TypeError(f"{cls.__name__}: records forbid extra fields")
        fields = dict(cls.model_fields)        # the bases' fields first, as in pydantic
        # this class's own annotations (inspect.get_annotations would import inspect, 3 ms)
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
            if _is_classvar(annotation):
                continue
            value = cls.__dict__.get(name, _MISSING)
            field = value if isinstance(value, Field) else Field(value)
            if value is not _MISSING:
                delattr(cls, name)       # the default lives in the field, as in pydantic
            field.name, field.annotation = name, annotation
            fields[name] = field
        cls.model_fields = fields
        found = _validators(cls)
        cls._record_validators = {mode: [v for v in found if v.mode == mode]
                                  for mode in ("before", "after")}

    # --- construction ---------------------------------------------------------------------
    def __init__(self, /, **data):
        cls = type(self)
        values = cls._record_values(data)
        if values is None:
            values = cls._record_by_pydantic(data)
        self.__dict__.update(values)

    @classmethod
    def _record_values(cls, data: dict) -> dict | None:
        """The values, or None where pydantic must decide (it then coerces or raises)."""
        try:
            for v in cls._record_validators["before"]:
                data = v.call(cls, data)
        except ValueError:
            return None
        checks = cls.__dict__.get("_record_checkers") or cls._record_make_checkers()
        if not data.keys() <= checks.keys():
            return None
        values = {}
        for name, (check, field) in checks.items():
            if name in data:
                value = check(data[name])
                if value is _NO:
                    return None
            elif field.default is not _MISSING:
                value = field.default
            elif field.default_factory is not None:
                value = field.default_factory()
            else:
                return None
            values[name] = value
        if cls._record_validators["after"]:
            record = cls.model_construct(**values)
            try:
                for v in cls._record_validators["after"]:
                    v.call(record)
            except ValueError:
                return None
        return values

    @classmethod
    def _record_make_checkers(cls) -> dict:
        hints = _hints(cls)
        checks = {}
        for name, field in cls.model_fields.items():
            checks[name] = (_checker(hints[name], field.bounds()), field)
        cls._record_checkers = checks
        return checks

    @classmethod
    def _record_by_pydantic(cls, data: dict) -> dict:
        return _field_values(cls.pydantic_model()(**_plain(data)))

    @classmethod
    def model_construct(cls, **values):
        """A record from values known to be valid: nothing is checked (pydantic's meaning)."""
        self = cls.__new__(cls)
        if len(values) < len(cls.model_fields):
            for name, field in cls.model_fields.items():
                if name in values or field.is_required():
                    continue
                values[name] = field.default if field.default_factory is None \
                    else field.default_factory()
        self.__dict__.update(values)
        return self

    @classmethod
    def model_validate(cls, obj):
        if type(obj) is cls:
            return obj
        twin = cls.pydantic_model()
        try:
            model = twin.model_validate(obj)
        except ValueError:
            plain = _plain(obj)         # records inside the data: as dicts, and once more
            if plain is obj:
                raise
            model = twin.model_validate(plain)
        return _from_pydantic(model)

    @classmethod
    def model_validate_json(cls, text):
        return _from_pydantic(cls.pydantic_model().model_validate_json(text))

    def model_copy(self, *, update: dict | None = None):
        """A shallow copy with `update` applied, unchecked (pydantic's meaning)."""
        new = type(self).__new__(type(self))
        new.__dict__.update({k: self.__dict__[k] for k in self.model_fields})
        if update:
            new.__dict__.update(update)
        return new

    # --- output ---------------------------------------------------------------------------
    def model_dump(self, *, mode: str = "python", exclude: set | None = None,
                   exclude_defaults: bool = False) -> dict:
        json = mode == "json"
        out = {}
        for name, field in self.model_fields.items():
            if exclude and name in exclude:
                continue
            value = self.__dict__[name]
            if exclude_defaults and field.default is not _MISSING and value == field.default:
                continue
            out[name] = _dump(value, json)
        return out

    def model_dump_json(self, *, indent: int | None = None) -> str:
        """pydantic's serialiser, which meets each record as an unknown object and asks
        `_fields_of` for it (inf and NaN become null, as in pydantic's model_dump_json)."""
        from pydantic_core import to_json
        return to_json(self, indent=indent, fallback=_fields_of, inf_nan_mode="null").decode()

    @classmethod
    def model_json_schema(cls) -> dict:
        return cls.pydantic_model().model_json_schema()

    # --- pydantic -------------------------------------------------------------------------
    @classmethod
    def pydantic_model(cls):
        """The pydantic model with this record's fields, config, validators and docstring.
        Made once per class, on first use; it decides what the checkers leave open."""
        twin = cls.__dict__.get("_record_pydantic")
        if twin is None:
            twin = _make_pydantic(cls)
            cls._record_pydantic = twin
        return twin

    @classmethod
    def __get_pydantic_core_schema__(cls, source, handler):
        from pydantic_core import core_schema
        twin = core_schema.no_info_before_validator_function(_plain,
                                                             handler(cls.pydantic_model()))
        return core_schema.no_info_after_validator_function(
            _from_pydantic, twin,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda r, info: r.model_dump(mode=info.mode), info_arg=True))

    # --- object protocol ------------------------------------------------------------------
    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        # lists compare items by identity first, as pydantic's dict comparison does (a NaN
        # field equals itself)
        mine, theirs = self.__dict__, other.__dict__
        return [mine[k] for k in self.model_fields] == [theirs[k] for k in self.model_fields]

    def __hash__(self):
        if not self.model_config.get("frozen"):
            raise TypeError(f"unhashable type: '{type(self).__name__}'")
        return hash((type(self), *(self.__dict__[k] for k in self.model_fields)))

    def __setattr__(self, name, value):
        if self.model_config.get("frozen"):
            raise AttributeError(f"{type(self).__name__} is frozen: use model_copy(update=...)")
        if name not in self.model_fields:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        self.__dict__[name] = value

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={self.__dict__[k]!r}" for k in self.model_fields)
        return f"{type(self).__name__}({args})"


# --- declarations ---------------------------------------------------------------------------

def _is_classvar(annotation) -> bool:
    if isinstance(annotation, str):
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return annotation is ClassVar or typing.get_origin(annotation) is ClassVar


class _Validator:
    def __init__(self, name: str, func, mode: str):
        self.name, self.func, self.mode = name, func, mode

    def call(self, first, *args):
        """`before` receives the class and the raw data; `after` receives the record."""
        if isinstance(self.func, classmethod):
            return self.func.__func__(first, *args)
        return self.func(first, *args)


def _validators(cls) -> list[_Validator]:
    found: dict[str, _Validator] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            func = attr.__func__ if isinstance(attr, classmethod) else attr
            mode = getattr(func, "__record_validator__", None)
            if mode:
                found[name] = _Validator(name, attr, mode)
    return list(found.values())


def _hints(cls) -> dict:
    """The field annotations, evaluated (they are strings under `from __future__ import
    annotations`): typing's resolution, in the namespace of the module declaring each."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {name: hints[name] for name in cls.model_fields}


# --- the checkers: accept exact, plain values; _NO hands the rest to pydantic ------------------

def _checker(tp, bounds: dict):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        inner, metadata = args[0], args[1:]
        bounds = dict(bounds)
        befores = []
        for meta in metadata:
            if isinstance(meta, Field):
                bounds.update(meta.bounds())
            elif isinstance(meta, BeforeValidator):
                befores.append(meta.func)
            else:
                raise TypeError(f"unsupported annotation metadata {meta!r}")
        check = _checker(inner, bounds)
        for func in reversed(befores):     # pydantic runs the last one first
            check = _before(func, check)
        return check
    if tp is Any:
        return lambda v: v
    if tp is int:
        return _number(int, bounds)
    if tp is float:
        return _number(float, bounds)
    if tp is bool:
        return lambda v: v if type(v) is bool else _NO
    if tp is str:
        return lambda v: v if type(v) is str else _NO
    if tp is type(None):
        return lambda v: v if v is None else _NO
    if origin is Literal:
        choices = {(type(a), a) for a in args}
        kinds = {type(a) for a in args}      # all hashable: str, int, bool
        return lambda v: v if type(v) in kinds and (type(v), v) in choices else _NO
    if origin in (Union, types.UnionType):
        if all(isinstance(a, type) and issubclass(a, Record) for a in args):
            members = frozenset(args)
            return lambda v: v if type(v) in members else _NO
        return _union([_checker(a, bounds) for a in args])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence(_checker(args[0], {}), (tuple, list), tuple)
        return _fixed_tuple([_checker(a, {}) for a in args])
    if origin is list:
        return _sequence(_checker(args[0], {}), (list,), list)
    if isinstance(tp, type) and issubclass(tp, Record):
        return lambda v: v if type(v) is tp else _NO
    raise TypeError(f"records do not support the annotation {tp!r}")


def _number(kind: type, bounds: dict):
    ge, gt, le, lt = (bounds.get(k) for k in ("ge", "gt", "le", "lt"))

    def check(v):
        t = type(v)
        if t is not kind:
            if kind is float and t is int:
                v = float(v)
            else:
                return _NO
        if (ge is not None and not v >= ge) or (gt is not None and not v > gt) or \
                (le is not None and not v <= le) or (lt is not None and not v < lt):
            return _NO
        return v
    return check


def _before(func, check):
    def checked(v):
        try:
            v = func(v)
        except Exception:       # noqa: BLE001 -- pydantic runs it again and reports it
            return _NO
        return check(v)
    return checked


def _union(checks):
    def check(v):
        for c in checks:
            out = c(v)
            if out is not _NO:
                return out
        return _NO
    return check


def _sequence(item, accepted: tuple, build: type):
    def check(v):
        if type(v) not in accepted:
            return _NO
        out = [item(x) for x in v]
        return _NO if _NO in out else build(out)
    return check


def _fixed_tuple(items):
    n = len(items)

    def check(v):
        if type(v) not in (tuple, list) or len(v) != n:
            return _NO
        out = tuple(c(x) for c, x in zip(items, v))
        return _NO if _NO in out else out
    return check


# --- output ---------------------------------------------------------------------------------

_ATOMS = frozenset({int, str, bool, type(None)})


def _dump(value, json: bool):
    if type(value) in _ATOMS:
        return value
    if isinstance(value, Record):
        return value.model_dump(mode="json" if json else "python")
    if isinstance(value, (list, tuple)):
        items = [_dump(v, json) for v in value]
        return items if json or isinstance(value, list) else tuple(items)
    if json and isinstance(value, float) and value - value != 0:    # inf and nan: null
        return None
    return value


# --- the pydantic twin ------------------------------------------------------------------------

def _make_pydantic(cls):
    import pydantic
    hints = _hints(cls)
    fields = {name: (_pydantic_type(hints[name]), pydantic.Field(**f.pydantic_kwargs()))
              for name, f in cls.model_fields.items()}
    validators = {v.name: pydantic.model_validator(mode=v.mode)(v.func)
                  for v in cls._record_validators["before"] + cls._record_validators["after"]}
    config = pydantic.ConfigDict(extra="forbid", frozen=bool(cls.model_config.get("frozen")))
    twin = pydantic.create_model(cls.__name__, __config__=config, __doc__=cls.__doc__,
                                 __module__=cls.__module__, __validators__=validators, **fields)
    twin.__record__ = cls
    cls._record_nested = [name for name in cls.model_fields if _holds_records(hints[name])]
    return twin


def _pydantic_type(tp):
    import pydantic
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.pydantic_model()
    if origin is Annotated:
        meta = []
        for m in args[1:]:
            if isinstance(m, Field):
                meta.append(pydantic.Field(**m.pydantic_kwargs()))
            elif isinstance(m, BeforeValidator):
                meta.append(pydantic.BeforeValidator(m.func))
        return Annotated[(_pydantic_type(args[0]), *meta)]
    if origin in (Union, types.UnionType):
        return Union[tuple(_pydantic_type(a) for a in args)]  # noqa: UP007 -- built from a tuple
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple[_pydantic_type(args[0]), ...]
        return tuple[tuple(_pydantic_type(a) for a in args)]
    if origin is list:
        return list[_pydantic_type(args[0])]
    return tp


def _fields_of(record: Record) -> dict:
    values = record.__dict__
    return {name: values[name] for name in record.model_fields}


def _plain(value):
    """Records inside data for pydantic, as the dicts its twin models take; the data itself
    (the same object) where it holds none."""
    if isinstance(value, Record):
        return value.model_dump()
    if isinstance(value, dict):
        items = {k: _plain(v) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    return value


def _holds_records(tp) -> bool:
    if isinstance(tp, type) and issubclass(tp, Record):
        return True
    return any(_holds_records(a) for a in typing.get_args(tp))


def _field_values(model) -> dict:
    """The field values of a pydantic twin instance, its nested twins made records."""
    values = dict(model.__dict__)
    for name in type(model).__record__._record_nested:
        values[name] = _unwrap(values[name])
    return values


def _unwrap(value):
    record = getattr(type(value), "__record__", None)
    if record is not None:
        return _from_pydantic(value)
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_unwrap(v) for v in value)
    return value


def _from_pydantic(model):
    """The record of a validated pydantic twin instance."""
    return type(model).__record__.model_construct(**_field_values(model))
