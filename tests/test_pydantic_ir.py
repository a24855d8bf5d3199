"""The IR and every layer are pydantic v2 models, as tool builders embed them: nested in their
own models, validated and serialised by pydantic itself."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

import cnnspec
from cnnspec import ir
from cnnspec.layers import REGISTRY

ROOT = Path(__file__).resolve().parent.parent

# Every layer kind a spec can write, and the compile and transfer sections.
SPEC = """\
model every_kind
input 32x32x3
rescale 0.5
conv 8 3x3 same relu
dwconv 3x3 same
sepconv 8 3x3 same
deconv 8 2x2 stride=2
bn
lrn
relu
identity
maxpool 2
zeropad 1; crop 1
upsample 2
residual { conv 8 3x3 same }
parallel concat { branch { conv 4 1x1 }; branch { conv 4 1x1 } }
normalize mean=(1, 2, 3, 4, 5, 6, 7, 8)
layernorm; groupnorm 2; layerscale; stochastic_depth 0.1; shuffle 2; split 2 1
adaptive_avgpool 4
dropout 0.1
gap
dense 16
reshape 4x4x1
flatten
logits = dense 10 softmax
det = detect from=input classes=2 strides=1 tower=1
output logits
compile { loss cce; optimizer sgd lr=0.1 momentum=0.9; schedule cosine; early_stopping }
"""


@pytest.fixture(scope="module")
def model() -> ir.Model:
    return cnnspec.compile_text(SPEC)


def _models(value):
    """Every pydantic model reachable from `value` (fields, lists, tuples)."""
    if isinstance(value, pydantic.BaseModel):
        yield value
        for name in type(value).model_fields:
            yield from _models(getattr(value, name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _models(item)


def test_the_ir_and_all_it_holds_are_pydantic_models(model):
    assert isinstance(model, pydantic.BaseModel)
    for node in model.nodes:
        assert isinstance(node, pydantic.BaseModel)
        assert isinstance(node.layer, pydantic.BaseModel), node.kind
    kinds = {type(m).__name__ for m in _models(model)}
    assert {
        "Model",
        "Node",
        "Group",
        "Span",
        "CompileSpec",
        "Optimizer",
        "Schedule",
        "EarlyStopping",
    } <= kinds


def test_every_registered_layer_kind_is_a_pydantic_model(model):
    for kind, cls in REGISTRY.items():
        assert issubclass(cls, pydantic.BaseModel), kind
    written = {n.kind for n in model.nodes}
    user_kinds = {k for k, c in REGISTRY.items() if not c.internal}
    missing = user_kinds - written
    assert not missing, f"add a line of each of {sorted(missing)} to SPEC"


@pytest.mark.parametrize("path", sorted(ROOT.glob("specs/*.cnn")), ids=lambda p: p.name)
def test_pydantic_round_trips_every_bundled_spec(path):
    model = cnnspec.compile_file(path)
    again = ir.Model.model_validate_json(model.model_dump_json())
    assert again == model
    assert ir.Model.model_validate(model.model_dump()) == model


def test_the_ir_nests_in_a_users_model_and_its_schema(model):
    class Job(pydantic.BaseModel):
        network: ir.Model
        priority: int = 0

    job = Job(network=model.model_dump(mode="json"))
    assert isinstance(job.network, ir.Model) and job.network == model
    assert Job.model_validate_json(job.model_dump_json()) == job
    schema = Job.model_json_schema()
    assert "Model" in schema["$defs"] and "Node" in schema["$defs"]
    with pytest.raises(pydantic.ValidationError):
        Job(network={**model.model_dump(), "nodes": "not a list"})


def test_layers_validate_as_pydantic_models():
    conv = REGISTRY["conv"]
    with pytest.raises(pydantic.ValidationError) as caught:
        conv(filters=0, kernel=3)
    assert caught.value.errors()[0]["type"] == "greater_than_equal"
    assert conv(filters="8", kernel=3).filters == 8  # pydantic's lax coercion
    assert conv(filters=8, kernel=3).kernel == (3, 3)  # the BeforeValidator


def test_the_json_schema_is_pydantic_s(model):
    schema = cnnspec.json_schema()
    mine = ir.Model.model_json_schema()
    assert {k: v for k, v in schema.items() if k not in ("$schema", "title")} == {
        k: v for k, v in mine.items() if k != "title"
    }


def test_the_transfer_section_is_pydantic_models_too():
    model = cnnspec.compile_text(
        "input 32x32x3\nconv 8 3x3 same\nbn\nrelu\ngap\ndense 10\n"
        "transfer { source torchvision:resnet18\nfreeze first 1\n"
        "head { gap; dense 5 softmax } }\n"
    )
    assert isinstance(model.transfer, ir.TransferSpec)
    assert isinstance(model.transfer.freeze, pydantic.BaseModel)
    assert isinstance(model.transfer.source_span, pydantic.BaseModel)
    assert ir.Model.model_validate_json(model.model_dump_json()) == model
