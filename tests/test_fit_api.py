"""cnnspec.train.fit: training from Python on arrays, torch datasets and loaders, tf.data, as the
README shows; bad data is a DataError that says what is accepted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnspec.data import DataError, foreign
from cnnspec.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
SMALL = """model small
input 8x8x1
conv 8 3x3 same relu
maxpool 2
flatten
dense 10 softmax
compile { optimizer adam lr=0.01; epochs 2; batch_size 64; validation_split 0.2 }
"""


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target


def test_the_readme_example_runs():
    # as a user would: the README's block, run as a script from the checkout
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- fit-example.*?```python\n(.*?)```", text, re.DOTALL).group(1)
    done = subprocess.run(
        [sys.executable, "-c", block],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    accuracy, n_train, n_val = done.stdout.split()
    assert float(accuracy) > 0.5 and int(n_train) + int(n_val) == 1797


def test_arrays_nhwc_and_nchw_train_alike(digits, tmp_path):
    x, y = digits
    a = fit(SMALL, data=(x[..., None], y), log=None)
    b = fit(SMALL, data=(x[:, None], y), log=None)  # NCHW, as torch keeps images
    assert a["metrics"] == b["metrics"] and a["data"] == "arrays x(1797, 8, 8, 1)"
    assert a["metrics"]["accuracy"] > 0.6
    out = tmp_path / "run"
    fit(SMALL, data=((x * 255).astype(np.uint8), y), out=out, log=None)
    assert (out / "result.json").exists() and (out / "best.safetensors").exists()


class _Counted:
    """A map-style dataset of CHW tensors that counts its reads."""

    def __init__(self, x, y):
        import torch

        self.x, self.targets, self.reads = torch.tensor(x[:, None]), list(map(int, y)), 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        return self.x[i], self.targets[i]


def test_a_torch_dataset_is_read_per_sample_and_trains(digits):
    from torch.utils.data import DataLoader, TensorDataset

    x, y = digits
    data = _Counted(x, y)
    samples = foreign.samples(data, (8, 8, 1), "classify")
    assert data.reads == 0 and len(samples) == 1797  # indexed, nothing decoded yet
    result = fit(SMALL, data=data, log=None, workers=0)  # read here, not in workers
    assert result["metrics"]["accuracy"] > 0.6 and data.reads >= 1797
    import torch

    loader = DataLoader(TensorDataset(torch.tensor(x[:, None]), torch.tensor(y)), batch_size=32)
    via_loader = fit(SMALL, data=loader, log=None)  # labels read in one pass
    assert via_loader["n_train"] + via_loader["n_val"] == 1797


def test_a_tf_data_dataset_trains(digits):
    import tensorflow as tf

    x, y = digits
    data = tf.data.Dataset.from_tensor_slices((x[..., None], y)).batch(100)
    result = fit(SMALL, data=data, log=None)
    assert result["n_train"] + result["n_val"] == 1797 and result["metrics"]["accuracy"] > 0.6


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"x": 1}, "cannot train on a builtins.dict"),
        ((np.zeros((4, 8, 8, 1)), np.zeros(3, int)), "4 images but y 3 targets"),
        ((np.full((4, 8, 8, 1), 2.0), np.zeros(4, int)), "give uint8 images, or floats"),
        ((np.zeros((4, 8, 8, 1)), np.array([0, 1, -1, 0])), "the label -1"),
        ((np.zeros((4, 8, 8, 1)),), "(x, y)"),
    ],
)
def test_bad_data_is_a_data_error(data, words):
    with pytest.raises(DataError) as err:
        fit(SMALL, data=data, log=None)
    assert words in str(err.value) + str(getattr(err.value, "hint", ""))
