"""Shape, parameter and MAC rules of every layer kind, one table row per case.

Each row is a spec line applied to an input shape, with the output shape, the trainable and
non-trainable parameters and the MACs it must give. Where torch has the layer, the row also
builds it and the test asks torch (output shape, `parameters()`, buffers, and
`FlopCounterMode` FLOPs / 2) instead of trusting the typed numbers alone. Shapes are HWC
without the batch, as in the IR; torch runs NCHW.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

import cnnspec
from cnnspec.layers import KEYWORDS, REGISTRY, Layer
from cnnspec.layers.base import ACTIVATION_ALIASES, ACTIVATIONS

torch = pytest.importorskip("torch")
nn = torch.nn


def tf_same(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same': output ceil(n / s), the odd padding pixel at the bottom/right
    (tensorflow/python/ops/nn_ops.py, get_pad_amounts)."""
    out = -(-n // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


def same2d(module, hw, k, s, d=1):
    """A torch module preceded by TF-style 'same' padding for an input of size hw."""
    (t, b), (l, r) = tf_same(hw[0], k, s, d), tf_same(hw[1], k, s, d)
    return nn.Sequential(nn.ZeroPad2d((l, r, t, b)), module)


@dataclass
class Row:
    line: str
    inp: tuple
    out: tuple
    trainable: int | None = None  # None: ask torch only
    non_trainable: int = 0
    macs: int | None = None
    torch: Callable | None = None  # (in_channels, (H, W)) -> nn.Module
    extra: tuple = ()  # more input shapes, for merges (named m1, m2, ...)

    @property
    def id(self) -> str:
        return f"{self.line} @ {'x'.join(map(str, self.inp))}"


def conv(cin, k, cout, **kw):
    return nn.Conv2d(cin, cout, k, **kw)


ROWS = [
    # --- conv: (W - F + 2P) / S + 1 --------------------------------------------------------------
    Row(
        "conv 64 3x3",
        (224, 224, 3),
        (222, 222, 64),
        1792,
        0,
        222 * 222 * 64 * 27,
        lambda c, hw: conv(c, 3, 64),
    ),
    Row(
        "conv 64 3x3 same",
        (224, 224, 3),
        (224, 224, 64),
        1792,
        0,
        224 * 224 * 64 * 27,
        lambda c, hw: conv(c, 3, 64, padding="same"),
    ),
    Row(
        "conv 64 3x3 padding=1",
        (224, 224, 3),
        (224, 224, 64),
        1792,
        0,
        None,
        lambda c, hw: conv(c, 3, 64, padding=1),
    ),
    Row(
        "conv 8 3x3 padding=(2, 0)",
        (10, 10, 3),
        (12, 8, 8),
        None,
        0,
        None,
        lambda c, hw: conv(c, 3, 8, padding=(2, 0)),
    ),
    Row(
        "conv 64 7x7 stride=2 padding=3 nobias",
        (224, 224, 3),
        (112, 112, 64),
        9408,
        0,
        112 * 112 * 64 * 147,
        lambda c, hw: conv(c, 7, 64, stride=2, padding=3, bias=False),
    ),
    Row(
        "conv 16 3x3 stride=2",
        (9, 9, 4),
        (4, 4, 16),
        None,
        0,
        None,
        lambda c, hw: conv(c, 3, 16, stride=2),
    ),
    Row(
        "conv 16 3x3 stride=2 same",
        (224, 224, 3),
        (112, 112, 16),
        None,
        0,
        None,
        lambda c, hw: same2d(conv(c, 3, 16, stride=2), hw, 3, 2),
    ),
    Row(
        "conv 16 3x3 stride=2 same",
        (7, 7, 3),
        (4, 4, 16),
        None,
        0,
        None,
        lambda c, hw: same2d(conv(c, 3, 16, stride=2), hw, 3, 2),
    ),
    Row(
        "conv 16 4x4 stride=2 same",
        (7, 9, 3),
        (4, 5, 16),
        None,
        0,
        None,
        lambda c, hw: same2d(conv(c, 4, 16, stride=2), hw, 4, 2),
    ),
    Row(
        "conv 16 1x1 stride=2 same",
        (8, 8, 3),
        (4, 4, 16),
        None,
        0,
        None,
        lambda c, hw: same2d(conv(c, 1, 16, stride=2), hw, 1, 2),
    ),
    Row(
        "conv 8 3x5",
        (10, 12, 2),
        (8, 8, 8),
        3 * 5 * 2 * 8 + 8,
        0,
        None,
        lambda c, hw: conv(c, (3, 5), 8),
    ),
    Row(
        "conv 8 3x3 stride=(1, 2)",
        (10, 10, 2),
        (8, 4, 8),
        None,
        0,
        None,
        lambda c, hw: conv(c, 3, 8, stride=(1, 2)),
    ),
    Row(
        "conv 8 3x3 dilation=2",
        (16, 16, 4),
        (12, 12, 8),
        None,
        0,
        None,
        lambda c, hw: conv(c, 3, 8, dilation=2),
    ),
    Row(
        "conv 8 3x3 dilation=2 same",
        (16, 16, 4),
        (16, 16, 8),
        None,
        0,
        None,
        lambda c, hw: conv(c, 3, 8, dilation=2, padding="same"),
    ),
    Row(
        "conv 8 3x3 dilation=2 stride=2 same",
        (15, 15, 4),
        (8, 8, 8),
        None,
        0,
        None,
        lambda c, hw: same2d(conv(c, 3, 8, dilation=2, stride=2), hw, 3, 2, 2),
    ),
    Row(
        "conv 32 3x3 groups=4",
        (8, 8, 16),
        (6, 6, 32),
        3 * 3 * 4 * 32 + 32,
        0,
        6 * 6 * 32 * 9 * 4,
        lambda c, hw: conv(c, 3, 32, groups=4),
    ),
    Row(
        "conv 8 1x1 relu",
        (5, 5, 3),
        (5, 5, 8),
        32,
        0,
        5 * 5 * 8 * 3,
        lambda c, hw: nn.Sequential(conv(c, 1, 8), nn.ReLU()),
    ),
    Row(
        "conv 8 3x3 bias=false",
        (5, 5, 3),
        (3, 3, 8),
        216,
        0,
        None,
        lambda c, hw: conv(c, 3, 8, bias=False),
    ),
    # --- depthwise, with a channel multiplier -----------------------------------------------------
    Row(
        "dwconv 3x3",
        (8, 8, 16),
        (6, 6, 16),
        3 * 3 * 16 + 16,
        0,
        6 * 6 * 16 * 9,
        lambda c, hw: conv(c, 3, c, groups=c),
    ),
    Row(
        "dwconv 3x3 same stride=2 nobias",
        (9, 9, 8),
        (5, 5, 8),
        72,
        0,
        None,
        lambda c, hw: same2d(conv(c, 3, c, groups=c, stride=2, bias=False), hw, 3, 2),
    ),
    Row(
        "dwconv 3x3 multiplier=2",
        (8, 8, 16),
        (6, 6, 32),
        3 * 3 * 32 + 32,
        0,
        None,
        lambda c, hw: conv(c, 3, 2 * c, groups=c),
    ),
    Row(
        "depthwise 5x5 same multiplier=3 nobias",
        (7, 7, 4),
        (7, 7, 12),
        300,
        0,
        None,
        lambda c, hw: conv(c, 5, 3 * c, groups=c, padding="same", bias=False),
    ),
    # --- separable = depthwise (no bias) + pointwise with bias (Keras SeparableConv2D) -----------
    Row(
        "sepconv 32 3x3",
        (8, 8, 16),
        (6, 6, 32),
        3 * 3 * 16 + 16 * 32 + 32,
        0,
        6 * 6 * 16 * (9 + 32),
        lambda c, hw: nn.Sequential(conv(c, 3, c, groups=c, bias=False), conv(c, 1, 32)),
    ),
    Row(
        "sepconv 32 3x3 same multiplier=2",
        (8, 8, 16),
        (8, 8, 32),
        None,
        0,
        None,
        lambda c, hw: nn.Sequential(
            conv(c, 3, 2 * c, groups=c, bias=False, padding="same"), conv(2 * c, 1, 32)
        ),
    ),
    Row(
        "separable 8 3x3 stride=2 same nobias",
        (10, 10, 4),
        (5, 5, 8),
        None,
        0,
        None,
        lambda c, hw: same2d(
            nn.Sequential(conv(c, 3, c, groups=c, bias=False, stride=2), conv(c, 1, 8, bias=False)),
            hw,
            3,
            2,
        ),
    ),
    # --- transposed: (W - 1)*S - 2P + F + output_padding; 'same' gives W*S -----------------------
    Row(
        "deconv 16 2x2 stride=2",
        (8, 8, 32),
        (16, 16, 16),
        2 * 2 * 32 * 16 + 16,
        0,
        8 * 8 * 32 * 4 * 16,
        lambda c, hw: nn.ConvTranspose2d(c, 16, 2, stride=2),
    ),
    Row(
        "deconv 16 3x3",
        (8, 8, 4),
        (10, 10, 16),
        None,
        0,
        None,
        lambda c, hw: nn.ConvTranspose2d(c, 16, 3),
    ),
    Row(
        "deconv 16 3x3 stride=2 padding=1",
        (8, 8, 4),
        (15, 15, 16),
        None,
        0,
        None,
        lambda c, hw: nn.ConvTranspose2d(c, 16, 3, stride=2, padding=1),
    ),
    Row(
        "deconv 16 3x3 stride=2 padding=1 output_padding=1",
        (8, 8, 4),
        (16, 16, 16),
        None,
        0,
        None,
        lambda c, hw: nn.ConvTranspose2d(c, 16, 3, stride=2, padding=1, output_padding=1),
    ),
    Row(
        "deconv 16 3x3 stride=2 same",
        (7, 7, 4),
        (14, 14, 16),
        3 * 3 * 4 * 16 + 16,
        0,
        7 * 7 * 4 * 9 * 16,
        lambda c, hw: nn.ConvTranspose2d(c, 16, 3, stride=2, padding=1, output_padding=1),
    ),
    Row(
        "deconv 8 4x4 stride=2 same nobias",
        (5, 5, 4),
        (10, 10, 8),
        4 * 4 * 4 * 8,
        0,
        None,
        lambda c, hw: nn.ConvTranspose2d(c, 8, 4, stride=2, padding=1, bias=False),
    ),
    Row(
        "convt 8 3x3 stride=3 output_padding=2",
        (4, 4, 2),
        (14, 14, 8),
        None,
        0,
        None,
        lambda c, hw: nn.ConvTranspose2d(c, 8, 3, stride=3, output_padding=2),
    ),
    # --- pooling: floor((W - F + 2P) / S) + 1, ceil with ceil=true, ceil(W / S) with same -------
    Row("pool 2", (224, 224, 64), (112, 112, 64), 0, 0, 0, lambda c, hw: nn.MaxPool2d(2)),
    Row("maxpool 2", (7, 7, 8), (3, 3, 8), 0, 0, 0, lambda c, hw: nn.MaxPool2d(2)),
    Row(
        "maxpool 2 ceil=true",
        (7, 7, 8),
        (4, 4, 8),
        0,
        0,
        0,
        lambda c, hw: nn.MaxPool2d(2, ceil_mode=True),
    ),
    Row(
        "maxpool 3 stride=2 ceil=true",
        (112, 112, 8),
        (56, 56, 8),
        0,
        0,
        0,
        lambda c, hw: nn.MaxPool2d(3, 2, ceil_mode=True),
    ),
    Row(
        "maxpool 3 stride=2 padding=1",
        (112, 112, 64),
        (56, 56, 64),
        0,
        0,
        0,
        lambda c, hw: nn.MaxPool2d(3, 2, padding=1),
    ),
    Row("maxpool 3 stride=2", (55, 55, 8), (27, 27, 8), 0, 0, 0, lambda c, hw: nn.MaxPool2d(3, 2)),
    Row(
        "maxpool 2 same",
        (7, 7, 8),
        (4, 4, 8),
        0,
        0,
        0,
        lambda c, hw: same2d(nn.MaxPool2d(2), hw, 2, 2),
    ),
    Row(
        "maxpool 3 stride=2 same",
        (8, 8, 8),
        (4, 4, 8),
        0,
        0,
        0,
        lambda c, hw: same2d(nn.MaxPool2d(3, 2), hw, 3, 2),
    ),
    Row("avgpool 2", (8, 6, 4), (4, 3, 4), 0, 0, 0, lambda c, hw: nn.AvgPool2d(2)),
    Row(
        "avgpool 3 stride=1 same",
        (5, 5, 4),
        (5, 5, 4),
        0,
        0,
        0,
        lambda c, hw: nn.AvgPool2d(3, 1, padding=1, count_include_pad=False),
    ),
    Row(
        "avgpool 3 stride=2 ceil=true",
        (6, 6, 4),
        (3, 3, 4),
        0,
        0,
        0,
        lambda c, hw: nn.AvgPool2d(3, 2, ceil_mode=True),
    ),
    Row("pool 2x3", (8, 9, 4), (4, 3, 4), 0, 0, 0, lambda c, hw: nn.MaxPool2d((2, 3))),
    Row(
        "gap",
        (7, 7, 512),
        (512,),
        0,
        0,
        0,
        lambda c, hw: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    ),
    Row("gap keepdims", (7, 7, 512), (1, 1, 512), 0, 0, 0, lambda c, hw: nn.AdaptiveAvgPool2d(1)),
    Row(
        "gmp",
        (5, 3, 8),
        (8,),
        0,
        0,
        0,
        lambda c, hw: nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten()),
    ),
    Row("gmp keepdims", (5, 3, 8), (1, 1, 8), 0, 0, 0, lambda c, hw: nn.AdaptiveMaxPool2d(1)),
    Row("global_avg_pool", (4, 4, 3), (3,), 0, 0, 0, None),
    Row("global_max_pool", (4, 4, 3), (3,), 0, 0, 0, None),
    # --- batch norm: 2C trainable (gamma, beta), 2C running statistics ---------------------------
    Row("bn", (8, 8, 64), (8, 8, 64), 128, 128, 0, lambda c, hw: nn.BatchNorm2d(c)),
    Row(
        "bn eps=1e-3 momentum=0.99",
        (8, 8, 16),
        (8, 8, 16),
        32,
        32,
        0,
        lambda c, hw: nn.BatchNorm2d(c, eps=1e-3, momentum=0.01),
    ),
    Row("bn scale=false", (8, 8, 64), (8, 8, 64), 64, 128, 0, None),
    Row("bn center=false", (8, 8, 64), (8, 8, 64), 64, 128, 0, None),
    Row(
        "bn noscale nocenter",
        (8, 8, 64),
        (8, 8, 64),
        0,
        128,
        0,
        lambda c, hw: nn.BatchNorm2d(c, affine=False),
    ),
    Row("batchnorm", (10,), (10,), 20, 20, 0, lambda c, hw: nn.BatchNorm1d(c)),
    Row("lrn", (13, 13, 96), (13, 13, 96), 0, 0, 0, lambda c, hw: nn.LocalResponseNorm(5)),
    Row("lrn 3 alpha=2e-5", (13, 13, 96), (13, 13, 96), 0, 0, 0, None),
    # --- layer norm, group norm (2C trainable), layer scale (C), Normalization (2C + 1) ----------
    Row("layernorm", (8, 8, 64), (8, 8, 64), 128, 0, 0, None),
    Row("layernorm eps=1e-6", (10,), (10,), 20, 0, 0, lambda c, hw: nn.LayerNorm(c)),
    Row("layer_norm noscale", (4, 4, 8), (4, 4, 8), 8, 0, 0, None),
    Row("groupnorm 8", (8, 8, 64), (8, 8, 64), 128, 0, 0, lambda c, hw: nn.GroupNorm(8, c)),
    Row("gn 1", (3, 3, 6), (3, 3, 6), 12, 0, 0, lambda c, hw: nn.GroupNorm(1, c)),
    Row("layerscale", (7, 7, 96), (7, 7, 96), 96, 0, 0, None),
    Row("normalize", (32, 32, 3), (32, 32, 3), 0, 7, 0, None),
    Row("normalization mean=(1, 2) variance=3", (4, 4, 2), (4, 4, 2), 0, 5, 0, None),
    # --- adaptive pooling to a size; count_pad; stochastic depth; shuffle and split -----------
    Row(
        "adaptive_avgpool 7", (13, 11, 8), (7, 7, 8), 0, 0, 0, lambda c, hw: nn.AdaptiveAvgPool2d(7)
    ),
    Row(
        "adaptive_maxpool 3x2",
        (8, 9, 4),
        (3, 2, 4),
        0,
        0,
        0,
        lambda c, hw: nn.AdaptiveMaxPool2d((3, 2)),
    ),
    Row(
        "avgpool 3 stride=1 padding=1 count_pad=true",
        (8, 8, 4),
        (8, 8, 4),
        0,
        0,
        0,
        lambda c, hw: nn.AvgPool2d(3, 1, padding=1),
    ),
    Row("stochastic_depth 0.2", (8, 8, 4), (8, 8, 4), 0, 0, 0, None),
    Row("droppath 0.1", (16,), (16,), 0, 0, 0, None),
    Row("shuffle 2", (8, 8, 4), (8, 8, 4), 0, 0, 0, lambda c, hw: nn.ChannelShuffle(2)),
    Row("channel_shuffle 3", (5, 5, 6), (5, 5, 6), 0, 0, 0, None),
    Row("split 2 1", (8, 8, 6), (8, 8, 3), 0, 0, 0, None),
    Row("chunk 3 0", (8, 8, 6), (8, 8, 2), 0, 0, 0, None),
    # --- dense: in*out + out; MACs in*out ---------------------------------------------------------
    Row("dense 10", (512,), (10,), 5130, 0, 5120, lambda c, hw: nn.Linear(c, 10)),
    Row("dense 4096 relu", (25088,), (4096,), 102764544, 0, 25088 * 4096, None),
    Row("fc 3 nobias", (7,), (3,), 21, 0, 21, lambda c, hw: nn.Linear(c, 3, bias=False)),
    Row("dense 10 softmax bias=false", (4,), (10,), 40, 0, 40, None),
    # per pixel: the same in*out weights at each of H*W pixels (ConvNeXt's pointwise layers)
    Row("dense 4 per_pixel", (5, 6, 3), (5, 6, 4), 16, 0, 5 * 6 * 3 * 4, None),
    # --- flatten (H, W, C order), reshape (one -1), dropout, rescale, identity ------------------
    Row("flatten", (7, 7, 512), (25088,), 0, 0, 0, lambda c, hw: nn.Flatten()),
    Row("flatten", (12,), (12,), 0, 0, 0, None),
    Row("reshape 4x4x2", (32,), (4, 4, 2), 0, 0, 0, None),
    Row("reshape (-1, 4, 2)", (4, 4, 4), (8, 4, 2), 0, 0, 0, None),
    Row("reshape (2, 2, -1)", (4, 4, 4), (2, 2, 16), 0, 0, 0, None),
    Row("reshape -1", (3, 5, 2), (30,), 0, 0, 0, None),
    Row("reshape 30", (3, 5, 2), (30,), 0, 0, 0, None),
    Row("dropout 0.5", (8, 8, 4), (8, 8, 4), 0, 0, 0, lambda c, hw: nn.Dropout(0.5)),
    Row("dropout 0", (16,), (16,), 0, 0, 0, None),
    Row("rescale 1/255", (8, 8, 3), (8, 8, 3), 0, 0, 0, None),
    Row("rescale scale=2 offset=-1", (8, 8, 3), (8, 8, 3), 0, 0, 0, None),
    Row("identity", (8, 8, 3), (8, 8, 3), 0, 0, 0, lambda c, hw: nn.Identity()),
    # --- zero padding: P, (vertical, horizontal), (top, bottom, left, right) ---------------------
    Row("zeropad 1", (8, 8, 3), (10, 10, 3), 0, 0, 0, lambda c, hw: nn.ZeroPad2d(1)),
    Row("zeropad 3", (224, 224, 3), (230, 230, 3), 0, 0, 0, lambda c, hw: nn.ZeroPad2d(3)),
    Row(
        "zeropad (1, 2)", (8, 8, 3), (10, 12, 3), 0, 0, 0, lambda c, hw: nn.ZeroPad2d((2, 2, 1, 1))
    ),
    Row(
        "zeropad (0, 1, 2, 3)",
        (8, 8, 3),
        (9, 13, 3),
        0,
        0,
        0,
        lambda c, hw: nn.ZeroPad2d((2, 3, 0, 1)),
    ),
    Row("zeropadding padding=(1, 1)", (4, 4, 3), (6, 6, 3), 0, 0, 0, None),
    # --- cropping (Keras' Cropping2D): P, (vertical, horizontal), (top, bottom, left, right) ---
    Row("crop 1", (8, 8, 3), (6, 6, 3), 0, 0, 0, None),
    Row("crop (1, 0, 2, 3)", (8, 8, 3), (7, 3, 3), 0, 0, 0, None),
    Row("cropping cropping=(1, 2)", (8, 8, 3), (6, 4, 3), 0, 0, 0, None),
    # --- upsampling -------------------------------------------------------------------------------
    Row("upsample", (8, 8, 3), (16, 16, 3), 0, 0, 0, lambda c, hw: nn.Upsample(scale_factor=2)),
    Row(
        "upsample 3 bilinear",
        (5, 4, 3),
        (15, 12, 3),
        0,
        0,
        0,
        lambda c, hw: nn.Upsample(scale_factor=3, mode="bilinear"),
    ),
    Row(
        "upsampling (2, 3)",
        (5, 4, 3),
        (10, 12, 3),
        0,
        0,
        0,
        lambda c, hw: nn.Upsample(scale_factor=(2, 3)),
    ),
    # --- activations: shape kept, no parameters ---------------------------------------------------
    *[
        Row(act, (6, 6, 4), (6, 6, 4), 0, 0, 0, None)
        for act in (
            *(a for a in ACTIVATIONS if a != "linear"),
            *ACTIVATION_ALIASES,
            "leaky_relu 0.2",
            "activation fn=tanh",
        )
    ],
    Row("softmax", (10,), (10,), 0, 0, 0, lambda c, hw: nn.Softmax(dim=-1)),
    Row("relu", (6, 6, 4), (6, 6, 4), 0, 0, 0, lambda c, hw: nn.ReLU()),
    # --- merges: the current tensor and the named ones (m1, m2 are extra inputs) ------------------
    Row("add m1", (8, 8, 16), (8, 8, 16), 0, 0, 0, extra=((8, 8, 16),)),
    Row("add m1 m2", (8, 8, 16), (8, 8, 16), 0, 0, 0, extra=((8, 8, 16), (8, 8, 16))),
    Row("add m1", (10,), (10,), 0, 0, 0, extra=((10,),)),
    Row("concat m1", (8, 8, 16), (8, 8, 48), 0, 0, 0, extra=((8, 8, 32),)),
    Row("concat m1 m2", (4, 4, 1), (4, 4, 6), 0, 0, 0, extra=((4, 4, 2), (4, 4, 3))),
    Row("concat m1", (10,), (30,), 0, 0, 0, extra=((20,),)),
    Row("multiply m1", (8, 8, 16), (8, 8, 16), 0, 0, 0, extra=((8, 8, 16),)),
    Row("multiply m1", (8, 8, 16), (8, 8, 16), 0, 0, 0, extra=((1, 1, 16),)),  # SE gate
    Row("mul m1", (1, 1, 16), (8, 8, 16), 0, 0, 0, extra=((8, 8, 16),)),  # gate first
    Row("add m1", (8, 8, 16), (8, 8, 16), 0, 0, 0, extra=((1, 1, 16),)),
    # --- detect: priors sum(H*W*A) of (4 + K + E); shared towers counted once, MACs per level
    # (two 8x8 levels: the extra operand keeps the input's size) tower 2 * (9*16*16 + 16) +
    # class 9*16*3 + 3 + box 9*16*4 + 4; MACs (64 + 64) cells * (2 * 9*16*16 + 9*16*(3 + 4))
    Row(
        "detect m1 classes=3 strides=(1, 1) tower=1",
        (8, 8, 16),
        (128, 7),
        5655,
        0,
        128 * (2 * 9 * 16 * 16 + 9 * 16 * 7),
        extra=((8, 8, 16),),
    ),
    # 9 anchors, centre-ness (box branch 9 * (4 + 1) outputs), group-norm towers of 2
    Row(
        "detect m1 classes=2 strides=(1, 1) sizes=(8, 16) octaves=3 ratios=(0.5, 1.0, 2.0) "
        "tower=2 norm=gn groups=4 centerness",
        (8, 8, 16),
        (128 * 9, 7),
        2 * 2 * (9 * 16 * 16 + 16 + 32) + 9 * 16 * 18 + 18 + 9 * 16 * 45 + 45,
        0,
        128 * (4 * 9 * 16 * 16 + 9 * 16 * (18 + 45)),
        extra=((8, 8, 16),),
    ),
    # separate (SSDlite): per level a depthwise tower with batch norm and a 1x1 predictor
    Row(
        "detect m1 classes=3 strides=(1, 1) separate depthwise tower=1 norm=bn predictor=1",
        (8, 8, 16),
        (128, 7),
        2 * (9 * 16 + 32)
        + (16 * 3 + 3)
        + (16 * 4 + 4)
        + 2 * (9 * 8 + 16)
        + (8 * 3 + 3)
        + (8 * 4 + 4),
        2 * 2 * (16 + 8),
        64 * (2 * 9 * 16 + 16 * 7) + 64 * (2 * 9 * 8 + 8 * 7),
        extra=((8, 8, 8),),
    ),
]


def compile_row(row: Row):
    """`input` with the row's shape, the extra tensors as identities of other inputs, the line."""
    lines = [f"input {'x'.join(map(str, row.inp))}"]
    # Extra merge operands: reshape a copy of the input into each extra shape when the sizes
    # allow; otherwise derive them with layers whose rules are tested above.
    for i, shape in enumerate(row.extra, 1):
        lines.append(f"m{i} = {_make(row.inp, shape)} from=input")
    lines.append(f"{row.line} from=input" if row.extra else row.line)
    return cnnspec.compile_text("\n".join(lines))


def _make(inp: tuple, shape: tuple) -> str:
    if len(shape) == 1:
        return "reshape -1" if math.prod(inp) == shape[0] else f"dense {shape[0]}"
    if shape[:2] == (1, 1) and inp[:2] != (1, 1):
        return f"conv {shape[2]} {inp[0]}x{inp[1]}"
    if inp[:2] == (1, 1) and shape[:2] != (1, 1):
        return f"deconv {shape[2]} {shape[0]}x{shape[1]}"
    return f"conv {shape[2]} 1x1"


def torch_view(row: Row):
    """Output shape (HWC), trainable, non-trainable and MACs as torch sees them."""
    from torch.utils.flop_counter import FlopCounterMode

    hw = row.inp[:2] if len(row.inp) == 3 else None
    module = row.torch(row.inp[-1], hw).eval()
    x = torch.zeros(1, row.inp[2], *hw) if hw else torch.zeros(1, row.inp[0])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        y = module(x)
    out = tuple(y.shape[2:]) + (y.shape[1],) if y.dim() == 4 else tuple(y.shape[1:])
    trainable = sum(p.numel() for p in module.parameters())
    stats = sum(
        b.numel()
        for name, b in module.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    )
    return out, trainable, stats, counter.get_total_flops() // 2


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_rule(row: Row):
    node = compile_row(row).nodes[-1]
    assert node.shape == row.out
    if row.trainable is not None:
        assert node.trainable == row.trainable
    assert node.non_trainable == row.non_trainable
    if row.macs is not None:
        assert node.macs == row.macs
    if row.torch is not None:
        out, trainable, stats, macs = torch_view(row)
        assert node.shape == out, "output shape differs from torch"
        assert node.trainable == trainable, "trainable parameters differ from torch"
        assert node.non_trainable == stats, "running statistics differ from torch"
        if node.kind in ("conv", "dwconv", "sepconv", "deconv", "dense"):
            # torch counts 2 FLOPs per multiply-accumulate and no bias additions, as cnnspec
            assert node.macs == macs, "MACs differ from torch's FLOP counter / 2"


@pytest.mark.parametrize(
    "args, channels, error",
    [
        ("scale=1/255 mean=(0.4, 0.5, 0.6) std=(0.2, 0.3, 0.4)", 3, None),
        ("mean=0.5 std=0.25", 3, None),  # one value for every channel
        ("mean=(0.4, 0.5)", 3, "2 mean values for 3 channels"),
        ("std=(1, 2)", 1, "2 std values for 1 channels"),
    ],
)
def test_preprocess_rule(args, channels, error):
    """The input line's preprocessing (kind `preprocess`): the input's shape, 0 parameters,
    0 MACs; mean and std give one value or one per channel."""
    text = f"input 6x5x{channels} {args}\nrelu\n"
    if error:
        with pytest.raises(cnnspec.SpecErrors, match=re.escape(error)):
            cnnspec.compile_text(text)
        return
    node = cnnspec.compile_text(text).nodes[1]
    assert (node.kind, node.shape, node.params, node.macs) == ("preprocess", (6, 5, channels), 0, 0)


def test_every_kind_has_rows():
    """A new layer kind must come with rows in the table above."""
    kinds = {compile_row(r).nodes[-1].kind for r in ROWS}
    missing = {k for k, cls in REGISTRY.items() if not cls.internal} - kinds
    assert not missing, f"layer kinds without shape/param/MAC rows: {sorted(missing)}"


def test_every_keyword_is_covered():
    """Every keyword of the language is compiled by some row or by the alias table."""
    used = {r.line.split()[0] for r in ROWS} | set(ALIASES)
    assert set(KEYWORDS) - used == set()


# Keywords not in the table above, with arguments, and the canonical spelling they equal.
ALIASES = {
    "conv2d": ("conv2d 8 3x3", "conv 8 3x3"),
    "conv_transpose": ("conv_transpose 4 2x2 stride=2", "deconv 4 2x2 stride=2"),
    "upconv": ("upconv 4 2x2 stride=2", "deconv 4 2x2 stride=2"),
    "pool": ("pool 2 avg", "avgpool 2"),
    "batch_norm": ("batch_norm", "bn"),
    "ln": ("ln eps=1e-6", "layernorm eps=1e-6"),
    "group_norm": ("group_norm 2", "groupnorm 2"),
    "layer_scale": ("layer_scale 0.1", "layerscale 0.1"),
    "drop_path": ("drop_path 0.2", "stochastic_depth 0.2"),
    "adaptive_avg_pool": ("adaptive_avg_pool 3", "adaptive_avgpool 3x3"),
    "adaptive_max_pool": ("adaptive_max_pool 2x3", "adaptive_maxpool (2, 3)"),
}


@pytest.mark.parametrize("word", sorted(ALIASES))
def test_alias_equals_canonical(word):
    alias, canonical = ALIASES[word]
    a = cnnspec.compile_text(f"input 8x8x4\n{alias}").nodes[-1]
    b = cnnspec.compile_text(f"input 8x8x4\n{canonical}").nodes[-1]
    assert (a.layer, a.shape, a.trainable, a.macs) == (b.layer, b.shape, b.trainable, b.macs)


@pytest.mark.parametrize("word", sorted(KEYWORDS))
def test_keyword_entry_is_complete(word):
    """Every keyword names a registered class that documents its syntax and its rules."""
    cls, preset = KEYWORDS[word]
    assert REGISTRY[cls.model_fields["kind"].default] is cls
    assert cls.kind_doc, f"{cls.__name__} has no kind_doc (shown in hints)"
    assert set(preset) <= set(cls.model_fields), f"preset of {word!r} sets unknown fields"
    for slot in cls.positional:
        assert slot in cls.model_fields, f"{cls.__name__}.positional names {slot!r}"
    for flag, values in cls.flags.items():
        assert set(values) <= set(cls.model_fields), f"flag {flag!r} sets unknown fields"


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_class_declares_its_rules(kind):
    """A layer that has weights or changes the shape overrides the rules it needs; every rule
    has the signature the compiler calls."""
    cls = REGISTRY[kind]
    assert issubclass(cls, Layer)
    assert cls.model_config.get("extra") == "forbid"
    assert cls.min_inputs <= cls.max_inputs
    for rule, params in (
        ("output_shape", ["shapes"]),
        ("count_params", ["shapes"]),
        ("count_macs", ["shapes", "out"]),
        ("explain", ["shapes", "out"]),
    ):
        sig = inspect.signature(getattr(cls, rule))
        assert list(sig.parameters)[1:] == params, f"{cls.__name__}.{rule}{sig}"
    fields = set(cls.model_fields)
    if fields & {"filters", "units"}:  # weighted kinds count params, MACs and explain them
        for rule in ("count_params", "count_macs", "explain"):
            assert getattr(cls, rule) is not getattr(Layer, rule), f"{cls.__name__}.{rule}"
    if fields & {"kernel", "size", "padding", "factor", "shape", "units", "filters"}:
        assert cls.output_shape is not Layer.output_shape, f"{cls.__name__}.output_shape"


@pytest.mark.parametrize("row", [r for r in ROWS if r.torch is not None][:12], ids=lambda r: r.id)
def test_explain_shows_the_numbers(row):
    """--explain lines end with the numbers the rules give."""
    model = compile_row(row)
    node = model.nodes[-1]
    lines = node.layer.explain([model.node(i).shape for i in node.inputs], node.shape)
    text = "\n".join(lines)
    if node.kind in ("conv", "dwconv", "sepconv", "deconv", "dense"):
        assert f"= {node.trainable:,}" in text and f"= {node.macs:,}" in text
