"""The IR as a contract: JSON round trip, JSON Schema, and `cnnspec.validate` on good and
corrupted documents (structured errors with codes and JSON pointers)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import cnnspec
from cnnspec import Model, SpecErrors

SPECS = sorted(Path(__file__).resolve().parent.parent.glob("specs/*.cnn"))


@pytest.fixture(scope="module")
def models() -> dict[str, Model]:
    return {p.stem: cnnspec.compile_file(p) for p in SPECS}


@pytest.fixture(scope="module")
def schema() -> dict:
    return cnnspec.json_schema()


def test_there_are_specs():
    assert len(SPECS) >= 1


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_json_round_trip(path, models):
    model = models[path.stem]
    text = model.to_json()
    back = Model.model_validate_json(text)
    assert back == model
    assert back.to_json() == text  # printing twice changes nothing
    assert json.loads(text)["totals"] == model.totals()  # written for readers...
    assert "totals" not in back.model_dump()  # ...and dropped on load


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_validate_accepts_compiled_ir(path, models):
    model = models[path.stem]
    again = cnnspec.validate(model.to_json())
    assert again == model
    assert cnnspec.validate(json.loads(model.to_json())) == model


def test_schema_is_a_valid_json_schema(schema):
    assert schema["$schema"].startswith("https://json-schema.org/draft/2020-12")
    assert schema["type"] == "object"
    assert {"nodes", "outputs"} <= set(schema["required"])
    kinds = {
        d["properties"]["kind"]["const"]
        for d in schema["$defs"].values()
        if "kind" in d.get("properties", {}) and "const" in d["properties"]["kind"]
    }
    assert kinds == set(cnnspec.layers.REGISTRY), "every layer kind is in the schema"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_validates_against_the_schema(path, models, schema):
    document = json.loads(models[path.stem].to_json())
    try:
        import jsonschema
    except ImportError:  # structural checks when jsonschema is absent
        assert set(schema["required"]) <= set(document)
        for node in document["nodes"]:
            assert set(schema["$defs"]["Node"]["required"]) <= set(node)
        return
    del document["totals"]  # derived, not part of the model's schema (extra=forbid)
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)


def test_schema_rejects_what_validate_rejects(models, schema):
    jsonschema = pytest.importorskip("jsonschema")
    document = json.loads(models["vgg16"].to_json())
    del document["totals"]
    document["nodes"][1]["layer"]["kind"] = "conv3d"
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(document))


# --- validate() on corrupted IR ---------------------------------------------------------------


def _doc(models) -> dict:
    return json.loads(models["vgg16"].to_json())


def _corrupt(models, fn) -> list[dict]:
    document = _doc(models)
    fn(document)
    with pytest.raises(SpecErrors) as info:
        cnnspec.validate(json.dumps(document))
    return info.value.to_list()


def _set(path, value):
    def fn(doc):
        *parents, last = path
        target = doc
        for key in parents:
            target = target[key]
        target[last] = value

    return fn


def _first_conv(doc) -> int:
    return next(i for i, n in enumerate(doc["nodes"]) if n["layer"]["kind"] == "conv")


CORRUPTIONS = [
    # (name, change, code, pointer)
    (
        "wrong shape",
        lambda d: _set(["nodes", 1, "shape"], [224, 224, 65])(d),
        "E606",
        "/nodes/1/shape",
    ),
    (
        "wrong params",
        lambda d: _set(["nodes", 1, "trainable"], 1793)(d),
        "E606",
        "/nodes/1/trainable",
    ),
    ("wrong macs", lambda d: _set(["nodes", 1, "macs"], 1)(d), "E606", "/nodes/1/macs"),
    (
        "wrong bn stats",
        lambda d: _set(["nodes", 1, "non_trainable"], 2)(d),
        "E606",
        "/nodes/1/non_trainable",
    ),
    (
        "negative count",
        lambda d: _set(["nodes", 1, "trainable"], -1)(d),
        "E602",
        "/nodes/1/trainable",
    ),
    (
        "dangling input",
        lambda d: _set(["nodes", 2, "inputs"], ["nowhere"])(d),
        "E605",
        "/nodes/2/inputs",
    ),
    (
        "input from later node",
        lambda d: _set(["nodes", 1, "inputs"], [d["nodes"][3]["name"]])(d),
        "E605",
        "/nodes/1/inputs",
    ),
    (
        "duplicate name",
        lambda d: _set(["nodes", 2, "name"], d["nodes"][1]["name"])(d),
        "E604",
        "/nodes/2/name",
    ),
    (
        "unknown kind",
        lambda d: _set(["nodes", 1, "layer", "kind"], "conv3d")(d),
        "E602",
        "/nodes/1/layer",
    ),
    (
        "unknown layer argument",
        lambda d: _set(["nodes", 1, "layer", "strides"], 2)(d),
        "E602",
        "/nodes/1/layer/conv/strides",
    ),
    (
        "bad argument value",
        lambda d: _set(["nodes", 1, "layer", "filters"], 0)(d),
        "E602",
        "/nodes/1/layer/conv/filters",
    ),
    ("missing field", lambda d: d["nodes"][1].pop("shape"), "E602", "/nodes/1/shape"),
    ("extra field", lambda d: _set(["nodes", 1, "colour"], "red")(d), "E602", "/nodes/1/colour"),
    ("dangling output", lambda d: _set(["outputs"], ["nowhere"])(d), "E605", "/outputs/0"),
    ("first node not input", lambda d: d["nodes"].pop(0), "E603", "/nodes/0"),
    ("no nodes", lambda d: _set(["nodes"], [])(d), "E603", "/nodes/0"),
    ("wrong version", lambda d: _set(["version"], 99)(d), "E602", "/version"),
]


@pytest.mark.parametrize("name,change,code,pointer", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_validate_reports_corruption(models, name, change, code, pointer):
    errors = _corrupt(models, change)
    assert (errors[0]["code"], errors[0]["pointer"]) == (code, pointer), errors
    assert errors[0]["message"]


def test_validate_reports_every_corruption(models):
    def change(doc):
        doc["nodes"][1]["shape"] = [1, 1, 1]
        doc["nodes"][2]["macs"] = 7

    errors = _corrupt(models, change)
    assert [(e["code"], e["pointer"]) for e in errors] == [
        ("E606", "/nodes/1/shape"),
        ("E606", "/nodes/2/macs"),
    ]


def test_validate_merge_input_count():
    model = cnnspec.compile_text("input 4x4x2\na = relu\nadd a")
    document = json.loads(model.to_json())
    document["nodes"][-1]["inputs"] = document["nodes"][-1]["inputs"][:1]
    with pytest.raises(SpecErrors) as info:
        cnnspec.validate(document)
    assert info.value.errors[0].code == "E605"
    assert info.value.errors[0].pointer == f"/nodes/{len(document['nodes']) - 1}/inputs"


@pytest.mark.parametrize("text", ["", "{", "nodes: []", "[1, 2", "\x00", "{'a': 1}"])
def test_validate_bad_json(text):
    with pytest.raises(SpecErrors) as info:
        cnnspec.validate(text)
    assert info.value.errors[0].code == "E601"
    assert info.value.errors[0].pointer == ""


@pytest.mark.parametrize("value", [[], 3, "x", None, {"nodes": "x"}, {"nodes": [1]}])
def test_validate_wrong_structure(value):
    with pytest.raises(SpecErrors) as info:
        cnnspec.validate(json.dumps(value))
    assert all(e.code == "E602" and e.pointer is not None for e in info.value.errors)


def test_totals_cannot_disagree(models):
    """A stale 'totals' in a document is ignored: the totals are always the nodes' sums."""
    document = _doc(models)
    document["totals"] = {"total_params": 1}
    model = cnnspec.validate(document)
    assert model.params == models["vgg16"].params


def test_validate_does_not_mutate_its_argument(models):
    document = _doc(models)
    before = copy.deepcopy(document)
    cnnspec.validate(document)
    assert document == before


def test_ir_has_spans_and_groups(models):
    model = models["vgg16"]
    assert model.nodes[1].span is not None and model.nodes[1].span.line >= 1
    assert all(set(g.members) <= {n.name for n in model.nodes} for g in model.groups)
