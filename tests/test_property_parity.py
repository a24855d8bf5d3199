"""Property-based parity: random valid networks (tests/netgen.py) compile to an IR whose
per-node shapes and parameter counts are what PyTorch and Keras build, and torch weights
converted to Keras give the same outputs.

Examples the compiler refuses must be refused with SpecErrors (anything else fails the test);
they are counted, and most examples must be valid. Derandomized, so CI sees the same 200
networks every run; a failure found here is kept as a plain case in
tests/test_property_regressions.py once fixed.
"""

from __future__ import annotations

import collections
import gc
import re

import numpy as np
import pytest
from framework_checks import check_keras_shapes_and_counts, check_torch_shapes_and_counts
from hypothesis import HealthCheck, given, settings
from netgen import FEATURES, networks
from random_weights import randomise_torch

import cnnspec
from cnnspec.layers import REGISTRY

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

EXAMPLES = 400


def check_network(text: str) -> bool:
    """All parity properties of one spec; False where the compiler refused it."""
    try:
        model = cnnspec.compile_text(text)
    except cnnspec.SpecErrors:
        return False
    net = torch_net(model, seed=len(text))
    check_torch_shapes_and_counts(model)
    kmodel = keras_model(model, net)
    check_keras_shapes_and_counts(model, kmodel)
    x = np.random.default_rng(len(text) + 1).normal(size=(2, *model.input_shape)).astype("float32")
    for got, want, name in zip(
        keras_outputs(kmodel, x), torch_outputs(net, x), model.outputs, strict=True
    ):
        assert_close(got, want, name)
    # Keras' default clear_session() also runs gc.collect(), 0.4 s each; the test collects
    # every few examples instead.
    keras.backend.clear_session(free_memory=False)
    return True


def torch_net(model: cnnspec.Model, seed: int):
    """The torch network with random weights and random batch-norm statistics."""
    from cnnspec.backends.torch import build

    torch.manual_seed(seed)
    return randomise_torch(build(model), seed)


def keras_model(model: cnnspec.Model, net):
    from cnnspec.backends.keras import build
    from cnnspec.convert import load_torch_into_keras

    kmodel = build(model)
    load_torch_into_keras(kmodel, model, net.state_dict())
    return kmodel


def torch_outputs(net, x) -> list[np.ndarray]:
    with torch.no_grad():
        ys = net(torch.from_numpy(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x))
    ys = ys if isinstance(ys, tuple) else (ys,)
    return [y.numpy().transpose(0, 2, 3, 1) if y.ndim == 4 else y.numpy() for y in ys]


def keras_outputs(kmodel, x) -> list[np.ndarray]:
    return [np.asarray(y) for y in keras.tree.flatten(kmodel(x, training=False))]


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Equal to 1e-4, relative and of the output's magnitude (float32 sums in two orders).
    The magnitude has a floor of 0.01: inputs are of order 1, and an output that cancels to
    zero in one framework is float32 rounding (~1e-8) in the other."""
    assert got.shape == want.shape, what
    finite = np.isfinite(want)
    scale = float(np.abs(want[finite]).max()) if finite.any() else 0.0
    np.testing.assert_allclose(
        got, want, rtol=1e-4, atol=1e-4 * max(scale, 1e-2), equal_nan=True, err_msg=what
    )


def test_random_networks_agree_across_frameworks():
    tally = collections.Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(networks())
    def check(text):
        valid = check_network(text)
        tally["valid" if valid else "refused"] += 1
        if valid:
            seen.update(
                f for f, pattern in FEATURES.items() if re.search(pattern, text, re.MULTILINE)
            )
            for kind in {node.layer.kind for node in cnnspec.compile_text(text).nodes}:
                kinds[kind] += 1
        if sum(tally.values()) % 25 == 0:
            gc.collect()

    seen, kinds = collections.Counter(), collections.Counter()
    check()
    total = tally["valid"] + tally["refused"]
    assert total >= EXAMPLES
    assert tally["valid"] >= 0.8 * total, tally
    # Every layer kind must be built; of the finer features (netgen.FEATURES: argument forms,
    # structures, activations) at most two may be missed, since the derandomized stream of
    # examples shifts with the Hypothesis version (in this one, all are seen, the rarest ~5x).
    assert len(set(FEATURES) - set(seen)) <= 2, set(FEATURES) - set(seen)
    # adaptive_pool and detect are out of the random networks (tests/netgen.py says why);
    # preprocess has its own strategy and test (netgen.preprocessed_networks,
    # tests/test_normalisation.py)
    left_out = {"input", "adaptive_pool", "detect", "preprocess"}
    assert set(REGISTRY) - left_out - set(kinds) == set(), "layer kinds never built"
