"""Where and in what precision the Keras backend trains: the tf.distribute strategy and the
mixed-precision policy.

Several visible GPUs -> tf.distribute.MirroredStrategy over them (one replica per GPU, the
variables mirrored, gradients all-reduced); one device -> the default strategy, which adds
nothing to a step. The environment variable CNNSPEC_KERAS_REPLICAS=N forces N replicas: the
first N GPUs, or, on a machine without GPUs, the CPU split into N logical devices
(tf.config.set_logical_device_configuration) -- a real MirroredStrategy run on one CPU,
which is how the mirrored path is tested. CNNSPEC_KERAS_REPLICAS=1 keeps one device even
with several GPUs. Training on several machines (TF_CONFIG) brings its own
MultiWorkerMirroredStrategy (keras_cluster).

The compile section's `mixed_precision` selects Keras' mixed policy: 'mixed_float16' on a GPU
(float16 needs loss scaling: keras.optimizers.LossScaleOptimizer), 'mixed_bfloat16' on a CPU
(bfloat16 has float32's exponent range, so no scaling). Variables stay float32.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

REPLICAS_ENV = "CNNSPEC_KERAS_REPLICAS"


def requested_replicas(replicas: int | None = None) -> int | None:
    """`replicas`, else CNNSPEC_KERAS_REPLICAS, else None (decide from the GPUs)."""
    if replicas is not None:
        value = replicas
    else:
        text = os.environ.get(REPLICAS_ENV, "").strip()
        if not text:
            return None
        try:
            value = int(text)
        except ValueError:
            raise ValueError(
                f"{REPLICAS_ENV} must be a whole number of replicas. "
                f"Received: {REPLICAS_ENV}={text!r}"
            ) from None
    if value < 1:
        raise ValueError(f"the number of replicas must be at least 1. Received: {value}")
    return value


def make_strategy(replicas: int | None = None):
    """The tf.distribute strategy for this process (see the module docstring)."""
    import tensorflow as tf

    wanted = requested_replicas(replicas)
    gpus = tf.config.list_physical_devices("GPU")
    if wanted is None:
        wanted = max(len(gpus), 1)
    if wanted == 1:
        return tf.distribute.get_strategy()
    if gpus:
        if wanted > len(gpus):
            raise ValueError(
                f"{wanted} replicas asked for, but only {len(gpus)} GPU(s) are visible"
            )
        return mirrored((*(f"/gpu:{i}" for i in range(wanted)),))
    return mirrored(tuple(split_cpu(wanted)))


@functools.cache
def mirrored(devices: tuple[str, ...]):
    """One MirroredStrategy per set of devices for the whole process: each strategy numbers
    its collective ops from the same start, so two over the same devices (two backends in
    one process) would run into each other's all-reduces."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(list(devices))


def split_cpu(n: int) -> list[str]:
    """The CPU as n logical devices; their names. TensorFlow fixes its devices when it
    starts, so this must run before the first tensor is made in the process."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    have = tf.config.get_logical_device_configuration(cpu)
    if have is None or len(have) != n:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
            )
        except RuntimeError:
            found = len(tf.config.list_logical_devices("CPU"))
            raise RuntimeError(
                f"cannot split the CPU into {n} devices: TensorFlow started "
                f"with {found} already in this process; set {REPLICAS_ENV} "
                "before anything runs TensorFlow"
            ) from None
    return [f"/cpu:{i}" for i in range(n)]


def policy_name(mixed: bool, policy: str | None = None) -> str | None:
    """The Keras dtype policy to build with: None (float32) unless mixed precision is on;
    then `policy` if given, else mixed_float16 with a GPU and mixed_bfloat16 without."""
    if not mixed:
        return None
    if policy is not None:
        return policy
    import tensorflow as tf

    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


@contextmanager
def dtype_policy(name: str | None) -> Iterator[None]:
    """Build under Keras' global dtype policy `name`, then put the previous one back: each
    layer keeps the policy it was made with, and models built later in the process (another
    run, a converter) must not inherit this one."""
    if name is None:
        yield
        return
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def sync_batchnorm(net) -> int:
    """Make the BatchNormalization layers compute their batch statistics over all replicas
    (Keras' `synchronized=True`, read when the layer is called): the statistics of one global
    batch, as on one device, and every replica's moving averages move alike. Unsynchronised,
    each replica normalises by its own shard and its copy of the moving statistics drifts
    from the others (their aggregation is 'none'). Returns how many layers changed."""
    import keras

    count = 0
    for layer in _layers(net):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            count += 1
    return count


def _layers(net) -> Iterator:
    for layer in net.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model
            yield from _layers(layer)
