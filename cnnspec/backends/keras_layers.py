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

    def __init__(
        self, op="max", pool_size=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), counted=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.op, self.pool_size, self.strides = op, tuple(pool_size), tuple(strides)
        self.pads = tuple(pads)
        # the part of the padding an average counts as pixels (torch's count_include_pad);
        # None: none of it
        self.counted = None if counted is None else tuple(counted)

    def _pad(self, x, value):
        top, bottom, left, right = self.pads
        return ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=value)

    def call(self, x):
        if self.op == "max":
            return ops.max_pool(
                self._pad(x, float("-inf")), self.pool_size, self.strides, padding="valid"
            )
        sums = ops.average_pool(self._pad(x, 0.0), self.pool_size, self.strides, padding="valid")
        ones = ops.ones_like(x[:1, ..., :1])  # one sample, one channel
        if self.counted is not None:
            top, bottom, left, right = self.counted
            ones = ops.pad(ones, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=1)
            top, bottom, left, right = (p - c for p, c in zip(self.pads, self.counted, strict=True))
            ones = ops.pad(ones, [[0, 0], [top, bottom], [left, right], [0, 0]])
        else:
            ones = self._pad(ones, 0.0)
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
            "counted": self.counted,
        }


@keras.saving.register_keras_serializable(package="cnnspec")
class LayerScale(keras.layers.Layer):
    """Each channel times its own trainable gamma (CaiT, ConvNeXt), which starts at `init`;
    the weight is named gamma, as keras.applications' ConvNeXt names it."""

    def __init__(self, init=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init),
            trainable=True,
        )

    def call(self, x):
        return x * self.gamma

    def get_config(self):
        return {**super().get_config(), "init": self.init}


@keras.saving.register_keras_serializable(package="cnnspec")
class ChannelSlice(keras.layers.Layer):
    """Channels [start, stop) of the last axis (torch's x[:, start:stop], one part of a
    channel split)."""

    def __init__(self, start=0, stop=1, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = start, stop

    def call(self, x):
        return x[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package="cnnspec")
class StoredNormalization(keras.layers.Normalization):
    """Keras' Normalization (its mean, variance and count variables, non-trainable) with
    given starting values, its statistics read at each call: Keras copies them into
    constants when it builds (finalize_state), so weights loaded later would not reach the
    output."""

    def __init__(self, init_mean=None, init_variance=None, **kwargs):
        super().__init__(**kwargs)
        # lists, as a config round trip gives them back
        self.init_mean = None if init_mean is None else [float(v) for v in init_mean]
        self.init_variance = None if init_variance is None else [float(v) for v in init_variance]

    def build(self, input_shape):
        super().build(input_shape)
        if self.init_mean is not None:
            self.adapt_mean.assign(self.init_mean)
            self.adapt_variance.assign(self.init_variance)
            self.finalize_state()

    def call(self, inputs):
        self.finalize_state()  # the variables as they are now (weights loaded since build)
        return super().call(inputs)

    def get_config(self):
        return {
            **super().get_config(),
            "init_mean": self.init_mean,
            "init_variance": self.init_variance,
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


@keras.saving.register_keras_serializable(package="cnnspec")
class DenseHead(keras.layers.Layer):
    """A dense detection head (cnnspec's `detect`) over a list of NHWC feature maps: per level
    a classification tower and a box tower (convs with their norm and activation), a class
    predictor and a box predictor (plus an extra column, centre-ness or objectness, from the
    box tower), shared by every level (RetinaNet, FCOS) or one per level (SSD). Returns
    (batch, priors, 4 + classes + extra): levels in order, then row, column, anchor.

    `towers` lists each tower's convs as (filters, depthwise); `levels` is how many sets of
    weights there are (1 when shared). Weights are tracked in torch's registration order:
    classification (tower, predictor) per level, then box (tower, box, extra) per level."""

    def __init__(
        self,
        classes=1,
        per_cell=1,
        extra=False,
        towers=(),
        levels=1,
        norm="none",
        groups=32,
        eps=1e-5,
        act="relu",
        kernel=(3, 3),
        predictor=(3, 3),
        box_relu=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.classes, self.per_cell, self.extra = classes, per_cell, bool(extra)
        self.towers = [[(int(f), bool(dw)) for f, dw in level] for level in towers]
        self.levels, self.norm, self.groups, self.eps, self.act = levels, norm, groups, eps, act
        self.kernel, self.predictor = tuple(kernel), tuple(predictor)
        self.box_relu = box_relu
        outputs = {"cls": per_cell * classes, "box": per_cell * 4, "extra": per_cell}
        self.branches = []  # per branch, per level: (tower layers, predictor layers)
        for branch, heads in (("cls", ("cls",)), ("box", ("box", "extra") if extra else ("box",))):
            per_level = []
            for i in range(levels):
                tower = []
                for j, (filters, depthwise) in enumerate(self.towers[i]):
                    tower.append(self._conv(f"{branch}{i}_tower{j}", filters, depthwise))
                    if norm == "gn":
                        tower.append(
                            keras.layers.GroupNormalization(
                                groups, epsilon=eps, name=f"{branch}{i}_norm{j}"
                            )
                        )
                    elif norm == "bn":
                        tower.append(
                            keras.layers.BatchNormalization(
                                epsilon=eps, name=f"{branch}{i}_norm{j}"
                            )
                        )
                    if act is not None:
                        tower.append(keras.layers.Activation(act, name=f"{branch}{i}_act{j}"))
                preds = [
                    keras.layers.Conv2D(
                        outputs[h], self.predictor, padding="same", name=f"{h}{i}_predictor"
                    )
                    for h in heads
                ]
                per_level.append((tower, preds))
            self.branches.append(per_level)

    def _conv(self, name, filters, depthwise):
        bias = self.norm != "bn"
        if depthwise:
            return keras.layers.DepthwiseConv2D(
                self.kernel, padding="same", use_bias=bias, name=name
            )
        return keras.layers.Conv2D(filters, self.kernel, padding="same", use_bias=bias, name=name)

    def call(self, inputs, training=None):
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        out = []
        for i, x in enumerate(inputs):
            k = 0 if self.levels == 1 else i
            columns = []
            for tower, preds in (self.branches[1][k], self.branches[0][k]):
                y = x
                for layer in tower:
                    y = layer(y, training=training)
                columns.append([p(y) for p in preds])
            (box, *extra), (cls,) = columns
            if self.box_relu:
                box = ops.relu(box)
            parts = [box, cls, *extra]
            widths = [4, self.classes] + [1] * len(extra)
            h, w = ops.shape(x)[1], ops.shape(x)[2]
            parts = [
                ops.reshape(p, (-1, h * w * self.per_cell, c))
                for p, c in zip(parts, widths, strict=True)
            ]
            out.append(ops.concatenate(parts, axis=-1))
        return out[0] if len(out) == 1 else ops.concatenate(out, axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "classes": self.classes,
            "per_cell": self.per_cell,
            "extra": self.extra,
            "towers": self.towers,
            "levels": self.levels,
            "norm": self.norm,
            "groups": self.groups,
            "eps": self.eps,
            "act": self.act,
            "kernel": self.kernel,
            "predictor": self.predictor,
            "box_relu": self.box_relu,
        }
