"""The compile section is checked against the network before any training: each
combination that cannot work is a located E51x error (code, line)."""

from __future__ import annotations

import pytest

import cnnspec
from cnnspec.train import make_plan

CLASSIFIER = """model net
input 8x8x1
conv 4 3x3 same relu
flatten
dense {units} {act}
compile {{
  {settings}
}}
"""
SEGMENTER = """model seg
input 16x16x1
conv 4 3x3 same relu
conv {units} 1x1 {act}
compile {{
  {settings}
}}
"""
DETECTOR = """model det
input 16x16x1
conv 4 3x3 same relu
flatten
f = dense 8 relu
present = dense 1 sigmoid from=f
box = dense 4 sigmoid from=f
output present, box
compile {{
  {settings}
}}
"""


def _compile(tmp_path, template, **kw):
    path = tmp_path / "net.cnn"
    path.write_text(template.format(**kw))
    return cnnspec.compile_file(path)


def _errors(model, **kw):
    with pytest.raises(cnnspec.SpecErrors) as info:
        make_plan(model, **kw)
    return [(e.code, e.span.line if e.span else None) for e in info.value.errors]


# template, units, activation, settings, the expected (code, line); the first setting is on
# line 7 in the classifier, 6 in the segmenter, 10 in the detector.
CASES = [
    (CLASSIFIER, 10, "softmax", "loss binary_crossentropy", ("E510", 7)),
    (CLASSIFIER, 10, "sigmoid", "loss categorical_crossentropy", ("E510", 7)),
    (CLASSIFIER, 1, "sigmoid", "loss sparse_categorical_crossentropy", ("E511", 7)),
    (CLASSIFIER, 10, "softmax", "loss dice", ("E512", 7)),
    (CLASSIFIER, 10, "softmax", "loss ce_dice", ("E512", 7)),
    (CLASSIFIER, 10, "softmax", "loss smooth_l1", ("E517", 7)),
    (CLASSIFIER, 10, "softmax", "epochs 2\n  metrics accuracy dice", ("E513", 8)),
    (CLASSIFIER, 10, "softmax", "metrics mean_iou", ("E513", 7)),
    (SEGMENTER, 3, "softmax", "loss ce_dice\n  metrics top5", ("E513", 7)),
    (SEGMENTER, 3, "softmax", "loss ce_dice mse", ("E512", 6)),
    (DETECTOR, 0, "", "loss binary_crossentropy", ("E514", 10)),
    (DETECTOR, 0, "", "loss smooth_l1 iou", ("E514", 10)),
    (DETECTOR, 0, "", "loss binary_crossentropy smooth_l1\n  metrics dice", ("E513", 11)),
    (CLASSIFIER, 10, "softmax", "loss sparse_cce weights=(1, 2)", ("E514", 7)),
    (CLASSIFIER, 10, "softmax", "loss vae", ("E518", 7)),
    (CLASSIFIER, 10, "softmax", "early_stopping monitor=val_top5", ("E516", 7)),
]


@pytest.mark.parametrize("template, units, act, settings, expected", CASES)
def test_bad_combinations_are_located_errors(tmp_path, template, units, act, settings, expected):
    model = _compile(tmp_path, template, units=units, act=act, settings=settings)
    assert expected in _errors(model)


def test_error_renders_with_the_setting_line(tmp_path):
    model = _compile(
        tmp_path, CLASSIFIER, units=10, act="softmax", settings="loss binary_crossentropy"
    )
    with pytest.raises(cnnspec.SpecErrors) as info:
        make_plan(model)
    text = info.value.render((tmp_path / "net.cnn").read_text())
    assert "net.cnn:7:3: error[E510]" in text
    assert "loss binary_crossentropy" in text and "hint:" in text


def test_class_count_must_match_the_data(tmp_path):
    model = _compile(tmp_path, CLASSIFIER, units=7, act="softmax", settings="epochs 1")
    assert ("E515", 5) in _errors(model, num_classes=10)  # the output layer's line


@pytest.mark.parametrize(
    "template, units, act, settings, task, logits",
    [
        (CLASSIFIER, 10, "softmax", "epochs 1", "classify", True),
        (CLASSIFIER, 10, "", "loss categorical_crossentropy", "classify", False),
        (CLASSIFIER, 1, "sigmoid", "loss bce", "classify", True),
        (SEGMENTER, 2, "softmax", "loss dice", "segment", False),
        (SEGMENTER, 2, "softmax", "epochs 1", "segment", True),
        (DETECTOR, 0, "", "epochs 1", "detect", True),
    ],
)
def test_task_inference_and_logits(tmp_path, template, units, act, settings, task, logits):
    model = _compile(tmp_path, template, units=units, act=act, settings=settings)
    plan = make_plan(model)
    assert plan.task == task
    assert plan.heads[0].logits is logits


def test_detector_losses_go_to_their_heads(tmp_path):
    model = _compile(tmp_path, DETECTOR, settings="loss bce smooth_l1 iou")
    plan = make_plan(model)
    assert {h.role: h.losses for h in plan.heads} == {
        "present": ["binary_crossentropy"],
        "box": ["smooth_l1", "iou"],
    }


def test_stripped_softmax_is_not_applied_twice(tmp_path):
    """The network trained on logits ends without the softmax; the loss applies it once."""
    from cnnspec.logits import final_activation
    from cnnspec.train.plan import logits_model

    model = _compile(tmp_path, CLASSIFIER, units=10, act="softmax", settings="epochs 1")
    plan = make_plan(model)
    stripped = logits_model(model, plan)
    assert final_activation(model.node(model.outputs[0]).layer) == "softmax"
    assert final_activation(stripped.node(stripped.outputs[0]).layer) is None
    assert stripped.params == model.params


def test_zoo_specs_have_a_plan():
    for name, task in [
        ("lenet5", "classify"),
        ("unet", "segment"),
        ("yolo_tiny", "detect"),
        ("vgg16", "classify"),
    ]:
        assert make_plan(cnnspec.compile_file(f"specs/{name}.cnn")).task == task
