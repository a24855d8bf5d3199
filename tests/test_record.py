"""Records (cnnspec.record) against pydantic, which decides whatever their checkers leave open.

A record's checkers accept only plain values and hand the rest to a pydantic model generated
from the same declaration. The differential tests below try thousands of argument sets on every
record class: where the checkers accept, pydantic must accept too and give the same values, of
the same types (an int stays an int, a list of two becomes a tuple in both).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

import cnnspec
from cnnspec import ir
from cnnspec.layers import REGISTRY
from cnnspec.record import Field, Record, _field_values, _plain

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.cnn"))

IR_RECORDS = [ir.Span, ir.Node, ir.Group, ir.Optimizer, ir.Schedule, ir.EarlyStopping,
              ir.CompileSpec, ir.Freeze, ir.TransferSpec, ir.Model]
RECORDS = [*REGISTRY.values(), *IR_RECORDS]

# Values a spec, a tool or a careless caller may pass: exact types, near misses pydantic
# coerces (3.0, "3", [2, 2]), and values out of every bound.
SCALARS = [0, 1, 2, 3, 7, 64, -1, -3, 10**13, 1.0, 3.0, 0.5, 0.9, 0.999, 1e-5, -0.5, 2.5,
           float("inf"), float("nan"), True, False, "same", "valid", "relu", "swish", "none",
           "linear", "softmax", "max", "avg", "nearest", "bilinear", "sgd", "adam", "step",
           "first", "all", "val_loss", "3", "1.5", "true", "", "x", None]
SEQUENCES = [(1, 1), (2, 3), [2, 2], (0, 0), (1,), [3], (), (1, 2, 3), (1, 1, 1, 1), (2, 0, 1, 1),
             [0, 1, 2, 3], (3, -1), (1.0, 2.0), (1.5, 2), ("a", "b"), [], ["a"], ["accuracy"],
             [1.0, 0.5], [1, 2], (True, False), (224, 224, 3), (10,), [None]]


def _samples(rng: random.Random, cls) -> list:
    defaults = [f.default for f in cls.model_fields.values() if not f.is_required()]
    return SCALARS + SEQUENCES + defaults + [_record_value(rng)]


def _record_value(rng: random.Random):
    """A valid nested record, or a dict of one, for the fields that hold records."""
    choices = [ir.Span(line=1, column=2), {"line": 3, "column": 4},
               REGISTRY["conv"](filters=8, kernel=3), {"kind": "dense", "units": 4},
               ir.Optimizer(), ir.Schedule(name="step", step_size=3), ir.Freeze(mode="all"),
               [ir.Group(path="b", kind="block")], {"monitor": "loss"}]
    return rng.choice(choices)


def _valid(cls) -> dict:
    """Arguments that construct `cls` (checked below), to be spoiled one field at a time."""
    if cls in REGISTRY.values():
        data = {"kind": cls.model_fields["kind"].default}
        for name in ("filters", "units", "kernel", "fn", "shape", "op"):
            if name in cls.model_fields and cls.model_fields[name].is_required():
                data[name] = {"filters": 4, "units": 3, "kernel": (3, 3), "fn": "relu",
                              "shape": (2, 2, 1), "op": "add"}[name]
        return data
    conv = REGISTRY["conv"](filters=8, kernel=3)
    node = ir.Node(name="a", layer=conv, shape=(4, 4, 8))
    return {ir.Span: {"line": 1, "column": 1}, ir.Node: {"name": "a", "layer": conv,
            "shape": (4, 4, 8)}, ir.Group: {"path": "b", "kind": "block"},
            ir.Optimizer: {}, ir.Schedule: {}, ir.EarlyStopping: {}, ir.CompileSpec: {},
            ir.Freeze: {}, ir.TransferSpec: {"source": "torchvision:resnet18"},
            ir.Model: {"nodes": [node], "outputs": ["a"]}}[cls]


def _by_pydantic(cls, data: dict):
    try:
        return _field_values(cls.pydantic_model()(**_plain(data)))
    except pydantic.ValidationError:
        return None


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_the_checkers_accept_only_what_pydantic_accepts_and_as_pydantic_does(cls):
    rng = random.Random(cls.__name__)
    base = _valid(cls)
    assert cls._record_values(dict(base)) is not None, "the valid arguments pass the checkers"
    trials = [{**base, name: value} for name in cls.model_fields      # each value in each field
              for value in _samples(rng, cls)]
    for _ in range(600):                                                 # and a few at once
        data = dict(base)
        for name in rng.sample(list(cls.model_fields), k=min(rng.randint(1, 3),
                                                             len(cls.model_fields))):
            if rng.random() < 0.1:
                data.pop(name, None)
            else:
                data[name] = rng.choice(_samples(rng, cls))
        if rng.random() < 0.05:
            data["no_such_field"] = 1
        trials.append(data)
    accepted = declined = 0
    for data in trials:
        ours = cls._record_values(dict(data))
        theirs = _by_pydantic(cls, data)
        if ours is None:
            declined += 1
            continue
        accepted += 1
        assert theirs is not None, f"{cls.__name__}({data}): the checkers accept, pydantic not"
        # repr tells 1 from 1.0 and (2, 2) from [2, 2]; records compare field by field
        assert repr(ours) == repr(theirs), f"{cls.__name__}({data})"
    assert declined, "every sample was plain: the test reaches no pydantic decision"
    assert accepted >= 5, "the checkers accepted almost nothing"


def test_construction_falls_back_to_pydantic_for_coercion_and_errors():
    conv = REGISTRY["conv"]
    assert conv(filters="8", kernel=3).filters == 8                 # pydantic's lax mode
    assert type(conv(filters=8.0, kernel=3).filters) is int
    assert conv(filters=8, kernel=[3, 1]).kernel == (3, 1)
    with pytest.raises(pydantic.ValidationError) as exc:
        conv(filters=0, kernel=3)
    assert exc.value.errors()[0]["type"] == "greater_than_equal"
    with pytest.raises(pydantic.ValidationError) as exc:
        conv(filters=8, kernel=3, colour="red")
    assert exc.value.errors()[0]["type"] == "extra_forbidden"
    with pytest.raises(pydantic.ValidationError) as exc:
        REGISTRY["deconv"](filters=8, kernel=3, stride=2, output_padding=2)
    assert "output_padding must be smaller than the stride" in str(exc.value)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_compiled_layer_is_what_pydantic_makes_of_its_arguments(path):
    model = cnnspec.compile_file(path)
    for node in model.nodes:
        layer = node.layer
        again = type(layer).model_validate(layer.model_dump(mode="json"))
        assert again == layer and repr(again) == repr(layer), node.name
    assert ir.Model.model_validate_json(model.model_dump_json()) == model


def test_records_behave_as_frozen_pydantic_models_do():
    conv = REGISTRY["conv"](filters=8, kernel=3)
    same = REGISTRY["conv"](filters=8, kernel=(3, 3), stride=1)
    assert conv == same and hash(conv) == hash(same) and len({conv, same}) == 1
    assert conv != conv.model_copy(update={"filters": 9})
    with pytest.raises(AttributeError, match="frozen"):
        conv.filters = 9
    assert repr(conv).startswith("Conv(kind='conv', filters=8, kernel=(3, 3), stride=(1, 1)")
    assert conv.args() == {"filters": 8, "kernel": (3, 3)}
    assert conv.model_dump(mode="json")["kernel"] == [3, 3]
    node = ir.Node(name="a", layer=conv, shape=(4, 4, 8))
    node.name = "b"                              # the IR's nodes are not frozen
    with pytest.raises(AttributeError, match="no field"):
        node.colour = "red"
    with pytest.raises(TypeError, match="unhashable"):
        hash(node)
    assert node != ir.Node(name="b", layer=same, shape=(4, 4, 8), macs=1)
    rescale = REGISTRY["rescale"](scale=float("nan"))
    assert rescale == rescale.model_copy(), "a NaN field equals itself, as in pydantic"


def test_a_record_is_a_field_of_a_users_pydantic_model():
    class Candidate(pydantic.BaseModel):
        score: float
        network: cnnspec.Model

    model = cnnspec.compile_text("input 8x8x1\nconv 4 3\nflatten\ndense 2")
    for given in (model, json.loads(model.to_json())):
        c = Candidate(score=0.5, network=given)
        assert type(c.network) is cnnspec.Model and c.network == model
    back = Candidate.model_validate_json(Candidate(score=1, network=model).model_dump_json())
    assert back.network == model
    assert "Model" in Candidate.model_json_schema()["$defs"]
    with pytest.raises(pydantic.ValidationError):
        Candidate(score=1, network={"nodes": [], "outputs": [], "colour": 1})


def test_validating_data_that_holds_records():
    conv = REGISTRY["conv"](filters=8, kernel=3)
    node = ir.Node(name="a", layer=REGISTRY["input"](shape=(4, 4, 3)), shape=(4, 4, 3))
    data = {"nodes": [node, {"name": "b", "layer": conv, "inputs": ["a"], "shape": (2, 2, 8)}],
            "outputs": ["b"]}
    model = ir.Model.model_validate(data)
    assert model.nodes[0] == node and model.nodes[1].layer == conv
    plain = {"a": [1, (2, 3)], "b": "c"}
    assert _plain(plain) is plain, "data without records is passed on as it is"
    with pytest.raises(pydantic.ValidationError):
        ir.Model.model_validate({**data, "outputs": 3})


def test_a_declaration_pydantic_cannot_mirror_fails_at_first_use():
    class Odd(Record):
        values: dict[str, int] = Field(default_factory=dict)

    with pytest.raises(TypeError, match="do not support"):
        Odd(values={})


def test_compiling_and_summarising_import_no_pydantic():
    code = ("import sys, io, contextlib\n"
            "from cnnspec.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main(['summary', {str(ROOT / 'specs' / 'resnet50.cnn')!r}, '--explain']) == 0\n"
            f"    assert main(['check', {str(ROOT / 'specs' / 'resnet18.cnn')!r}]) == 0\n"
            "assert 'pydantic' not in sys.modules, sorted(m for m in sys.modules if 'pydantic' in m)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
