"""Keras layers that Keras lacks, with the spec's (torch-compatible) semantics.

This module imports keras only: `cnnspec build --backend keras` pastes the source of the classes a
model uses into the generated file, so the standalone model and the built one run the same code.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cnnspec")
class LocalResponseNorm(keras.layers.Layer):
    """Across-channel LRN as torch.nn.LocalResponseNorm computes it:
    b_c = a_c / (k + alpha/n * sum_{c' in window(c)} a_c'^2)^beta, the window of n channels
    starting n//2 before c, zeros beyond the ends (torch pads n//2 before, (n-1)//2 after)."""

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def call(self, x):
        channels = x.shape[-1]
        squares = ops.pad(
            ops.square(x), [[0, 0], [0, 0], [0, 0], [self.size // 2, (self.size - 1) // 2]]
        )
        total = squares[..., 0:channels]
        for i in range(1, self.size):
            total = total + squares[..., i : i + channels]
        return x / ops.power(self.k + self.alpha / self.size * total, self.beta)

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "alpha": self.alpha,
            "beta": self.beta,
            "k": self.k,
        }


@keras.saving.register_keras_serializable(package="cnnspec")
class PaddedPool2D(keras.layers.Layer):
    """Max or average pooling over explicit (top, bottom, left, right) padding, which is how
    torch's integer padding and ceil_mode=True are written exactly: max pooling pads with -inf
    (padding never wins), average pooling divides each window's sum by the number of real
    pixels in it (count_include_pad=False; the extra ceil_mode pixels are never counted)."""

    def __init__(self, op="max", pool_size=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), **kwargs):
        super().__init__(**kwargs)
        self.op, self.pool_size, self.strides = op, tuple(pool_size), tuple(strides)
        self.pads = tuple(pads)

    def _pad(self, x, value):
        top, bottom, left, right = self.pads
        return ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=value)

    def call(self, x):
        if self.op == "max":
            return ops.max_pool(
                self._pad(x, float("-inf")), self.pool_size, self.strides, padding="valid"
            )
        sums = ops.average_pool(self._pad(x, 0.0), self.pool_size, self.strides, padding="valid")
        ones = self._pad(ops.ones_like(x[:1, ..., :1]), 0.0)  # one sample, one channel
        counts = ops.average_pool(ones, self.pool_size, self.strides, padding="valid")
        return sums / counts

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        top, bottom, left, right = self.pads
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        out_h = None if h is None else (h + top + bottom - kh) // sh + 1
        out_w = None if w is None else (w + left + right - kw) // sw + 1
        return (n, out_h, out_w, c)

    def get_config(self):
        return {
            **super().get_config(),
            "op": self.op,
            "pool_size": self.pool_size,
            "strides": self.strides,
            "pads": self.pads,
        }


@keras.saving.register_keras_serializable(package="cnnspec")
class KeepAlive(keras.layers.Layer):
    """Passes its first input through unchanged. The others are the spec's dead ends (tensors
    that no output reads): a functional keras.Model holds only the layers its outputs depend
    on, so without this their layers and weights would vanish, while the IR counts them and
    the torch network has them."""

    def call(self, inputs):
        return inputs[0]

    def compute_output_shape(self, input_shape):
        return input_shape[0]
