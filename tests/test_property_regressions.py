"""Failures the property test (tests/test_property_parity.py) found, shrunk and kept as plain
cases: each spec must give equal shapes and counts in the IR, PyTorch and Keras, and equal
outputs once torch weights are converted to Keras (and back)."""

from __future__ import annotations

import numpy as np
import pytest

import cnnspec

pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from test_property_parity import check_network, keras_outputs, torch_outputs

CASES = {
    # A dead end (dwconv1: no output reads it) vanished from the functional keras.Model, so
    # converting torch weights raised "No such layer: dwconv1" and the counts disagreed.
    "dead_end": (
        "model net\ninput 8x8x1\nresidual {\n}\nskip1 = identity\n"
        "dwconv 3x3 same\nconv 1 1x1 from=skip1\n"
    ),
    # Not a backend bug: out4 cancels to exactly -0.0 in torch and to ~6e-9 in Keras, which
    # a tolerance scaled by the output's magnitude alone refused; it now has a floor.
    "cancels_to_zero": (
        "model net\ninput 8x8x1\nout1 = gmp\nresidual {\n}\nresidual {\n}\n"
        "skip2 = identity\nadd skip2\nskip3 = identity\ndense 1\nadd skip3\n"
        "out4 = dense 1\nskip5 = identity\ndense 1\nadd skip5\n"
        "residual gelu {\n  dense 1\n}\nfinal = identity\n"
        "output out1, out4, final\n"
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_agrees_across_frameworks(name):
    assert check_network(CASES[name]), "the compiler refused a valid spec"


def test_dead_end_survives_keras_to_torch_and_saving(tmp_path):
    from cnnspec.backends.keras import build
    from cnnspec.backends.torch import build as build_torch
    from cnnspec.convert import load_keras_into_torch

    model = cnnspec.compile_text(CASES["dead_end"])
    kmodel = build(model)
    assert kmodel.get_layer("dwconv1").count_params() == 10
    net = build_torch(model).eval()
    load_keras_into_torch(net, model, kmodel)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(
        torch_outputs(net, x)[0], keras_outputs(kmodel, x)[0], rtol=1e-5, atol=1e-6
    )
    kmodel.save(tmp_path / "dead.keras")
    again = keras.models.load_model(tmp_path / "dead.keras")
    assert again.count_params() == model.params
    np.testing.assert_allclose(keras_outputs(again, x)[0], keras_outputs(kmodel, x)[0])
