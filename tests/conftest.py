import os

# Quiet TensorFlow's start-up banners in test output; tests import keras lazily.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
