"""Architecture identity against keras.applications: the zoo spec built by the Keras backend,
given the application's (random) weights, computes what the application computes.

Batch-norm statistics and scales are randomised first, so that they matter; features before
the classifier are compared as well as the outputs (a softmax over 1000 classes of a random
network is nearly uniform and would hide differences).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from random_weights import randomise_keras_batch_norm

import cnnspec

keras = pytest.importorskip("keras")

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _mobilenet_v2_keras(text: str) -> str:
    """specs/mobilenet_v2.cnn follows torchvision (symmetric padding 1, BN eps 1e-5, logits);
    keras.applications pads stride-2 convs bottom/right (ZeroPadding2D(correct_pad), which is
    TensorFlow's 'same' at even sizes), uses BN eps 1e-3 and ends in softmax."""
    bn = "bn eps=1e-3 momentum=0.999"
    for old, new in [
        ("padding=(k-1)//2 nobias; bn;", f"same nobias; {bn};"),
        (
            "dwconv 3x3 stride=stride padding=1 nobias; bn;",
            f"dwconv 3x3 stride=stride same nobias; {bn};",
        ),
        ("conv c 1x1 nobias; bn ", f"conv c 1x1 nobias; {bn} "),
        ("dense 1000 ", "dense 1000 softmax "),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    return text


CASES = {  # spec -> (application, input size, name of the application's feature layer, edit)
    "vgg16": ("VGG16", 224, "fc2", None),
    "resnet50_keras": ("ResNet50", 96, "avg_pool", None),
    # MobileNetV2's pooling layer has no name of its own: Keras numbers it by how many were
    # made before in the process (global_average_pooling2d, ..._1), so it is found by type
    "mobilenet_v2": ("MobileNetV2", 96, "GlobalAveragePooling2D", _mobilenet_v2_keras),
}


def _feature_layer(ref, feature: str):
    """The application's layer called `feature`, or its last layer of that class."""
    of_type = [layer for layer in ref.layers if type(layer).__name__ == feature]
    return of_type[-1] if of_type else ref.get_layer(feature)


@pytest.mark.parametrize("spec", sorted(CASES))
def test_spec_computes_what_the_application_computes(spec):
    from cnnspec.backends.keras import build, keras_names
    from cnnspec.convert import load_keras_applications_weights

    app_name, size, feature, edit = CASES[spec]
    text = (SPECS / f"{spec}.cnn").read_text()
    text = edit(text) if edit else text
    model = cnnspec.compile_text(text.replace("input 224x224x3", f"input {size}x{size}x3"))
    ref = getattr(keras.applications, app_name)(weights=None, input_shape=(size, size, 3))
    rng = np.random.default_rng(len(spec))
    randomise_keras_batch_norm(ref, rng)
    kmodel = build(model)
    assert kmodel.count_params() == ref.count_params() == model.params
    assert load_keras_applications_weights(kmodel, model, ref) == sum(
        1 for layer in ref.layers if layer.weights
    )

    # the node whose output is the application's feature layer: the last one of that shape
    want_shape = tuple(_feature_layer(ref, feature).output.shape[1:])
    node = [n for n in model.nodes if n.shape == want_shape][-1]
    ours = keras.Model(kmodel.input, kmodel.get_layer(keras_names(model)[node.name]).output)
    theirs = keras.Model(ref.input, _feature_layer(ref, feature).output)
    x = rng.normal(size=(2, size, size, 3)).astype("float32")
    for a, b in ((ours(x), theirs(x)), (kmodel(x), ref(x))):
        a, b = np.asarray(a), np.asarray(b)
        assert b.std() > 0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))


def test_application_weights_must_fit():
    from cnnspec.backends.keras import build
    from cnnspec.convert import ConversionError, load_keras_applications_weights

    model = cnnspec.compile_text("input 32x32x3\nconv 8 3x3 same relu\ngap\ndense 10")
    other = build(cnnspec.compile_text("input 32x32x3\nconv 8 5x5 same relu\ngap\ndense 10"))
    with pytest.raises(ConversionError, match="no counterpart"):
        load_keras_applications_weights(build(model), model, other)


def test_application_weights_load_from_a_saved_model(tmp_path):
    from cnnspec.backends.keras import build
    from cnnspec.convert import load_keras_applications_weights

    text = (
        "input 16x16x3\nresidual relu { conv 8 3x3 same; bn } shortcut { conv 8 1x1; bn }\n"
        "maxpool 3 stride=2 padding=1\ngap\ndense 4"
    )
    model = cnnspec.compile_text(text)
    saved = build(model)
    randomise_keras_batch_norm(saved, np.random.default_rng(0))
    saved.save(tmp_path / "source.keras")
    kmodel = build(model)
    assert load_keras_applications_weights(kmodel, model, str(tmp_path / "source.keras")) == 5
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(kmodel(x)), np.asarray(saved(x)))
