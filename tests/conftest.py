import os

# Quiet TensorFlow's start-up banners in test output; tests import keras lazily.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Importing torchvision after TensorFlow kills the process (a segmentation fault in
# torchvision's native ops), so torchvision comes first whenever it is installed.
try:
    import torchvision  # noqa: F401
except ImportError:
    pass
