import os

import pytest

# Quiet TensorFlow's start-up banners in test output; tests import keras lazily.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Importing torchvision after TensorFlow kills the process (a segmentation fault in
# torchvision's native ops), so torchvision comes first whenever it is installed.
try:
    import torchvision  # noqa: F401
except ImportError:
    pass


@pytest.fixture(scope="module")
def one_torch_thread():
    """pytest-xdist runs a worker per core: one torch thread each avoids oversubscription, and
    small networks run fastest (and deterministically) on one. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
