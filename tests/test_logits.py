"""The one rule for a final activation (cnnspec/logits.py) and its three users: the torch
plan (softmax applied unless `net.logits`), training on logits, and the GAN/VAE trainer."""

from __future__ import annotations

import pytest

import cnnspec
from cnnspec.logits import final_activation, strip_final_activations, without_final_activation

INLINE = "input 8\ndense 6 relu\ndense 3 softmax\n"
SEPARATE = "input 8\ndense 6 relu\ndense 3\nsoftmax\n"
SIGMOID = "input 8\ndense 1 sigmoid\n"


@pytest.mark.parametrize(
    "text, act",
    [
        (INLINE, "softmax"),
        (SEPARATE, "softmax"),
        (SIGMOID, "sigmoid"),
        ("input 8\ndense 3\n", None),
    ],
)
def test_final_activation_reads_both_spellings(text, act):
    model = cnnspec.compile_text(text)
    assert final_activation(model.node(model.outputs[0]).layer) == act


def test_stripping_keeps_names_shapes_and_counts():
    for text in (INLINE, SEPARATE):
        model = cnnspec.compile_text(text)
        out = model.outputs[0]
        stripped = strip_final_activations(model, [out])
        assert [n.name for n in stripped.nodes] == [n.name for n in model.nodes]
        assert [n.shape for n in stripped.nodes] == [n.shape for n in model.nodes]
        assert stripped.params == model.params
        assert final_activation(stripped.node(out).layer) is None  # the index is fresh
        assert final_activation(model.node(out).layer) == "softmax"  # the original is kept
    model = cnnspec.compile_text(SEPARATE)
    assert (
        strip_final_activations(model, [model.outputs[0]]).node(model.outputs[0]).kind == "identity"
    )
    assert strip_final_activations(model, []) is model


def test_a_layer_without_activation_is_left_as_it_is():
    layer = cnnspec.compile_text("input 8\ndense 3\n").nodes[1].layer
    assert without_final_activation(layer) is layer


@pytest.mark.parametrize("text", [INLINE, SEPARATE])
def test_torch_plan_and_training_strip_the_same_layer(text):
    """The torch plan's op for the final node is the op of the node training builds."""
    from cnnspec.backends.torch import plan, torch_op
    from cnnspec.train.plan import logits_model, make_plan

    model = cnnspec.compile_text(text + "compile { loss sparse_categorical_crossentropy }\n")
    out = model.outputs[0]
    step = next(s for s in plan(model).steps if s.node == out)
    trained = logits_model(model, make_plan(model))
    shapes = [trained.node(i).shape for i in trained.node(out).inputs]
    assert step.softmax
    assert step.op == torch_op(trained.node(out).layer, shapes)


def test_the_generative_trainer_strips_a_final_sigmoid_only():
    pytest.importorskip("torch")
    from cnnspec.train.generate import strip_final

    model = cnnspec.compile_text(SIGMOID)
    stripped, act = strip_final(model)
    assert act == "sigmoid" and final_activation(stripped.node(model.outputs[0]).layer) is None
    model = cnnspec.compile_text(INLINE)
    assert strip_final(model) == (model, "softmax")
