"""Keras on several machines: tf.distribute.MultiWorkerMirroredStrategy, configured by the
TF_CONFIG environment variable, as TensorFlow's own tools are.

Every machine runs the same `cnnspec train ... --backend keras` with its own TF_CONFIG:

    TF_CONFIG='{"cluster": {"worker": ["node0:12345", "node1:12345"]},
                "task": {"type": "worker", "index": 0}}'

(optionally a "chief": [one address] beside the workers). The chief -- the "chief" task, or
worker 0 where there is none -- is rank 0: it alone writes the run folder (the same atomic
writes as everywhere), and the others train without writing. Each worker decodes only its
own contiguous share of every global batch (cnnspec.data.loading.worker_rows: the shares of
one permutation keyed by (seed, epoch), so together they are the one-process batch; not
tf.data's auto-sharding, which under its DATA policy reads every batch on every worker and
drops the others' share). Each step's losses are the global-batch values (keras_backend's
batch reductions all-reduce their counts), so the optimizer sees the one-process gradient
and a run follows the one-process run with the same global batch up to float reduction
order. Epoch sums (losses, metric counts) go through WorkerComm, over the strategy's own
collective ops.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass

import numpy as np

from .driver import Comm

TF_CONFIG = "TF_CONFIG"
HINT = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host0:port", "host1:port"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)


@dataclass(frozen=True)
class Cluster:
    """This process's place in the TF_CONFIG cluster."""

    rank: int  # 0 for the chief (or worker 0 without one), then the workers in order
    world: int  # chief and workers
    task: str  # "worker 1", for messages


def cluster_from_env(environ=None) -> Cluster | None:
    """The cluster TF_CONFIG describes, or None where it is unset or names one task only
    (nothing to distribute). A malformed TF_CONFIG is a ValueError naming what is wrong."""
    environ = os.environ if environ is None else environ
    text = environ.get(TF_CONFIG, "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = str(task["type"]), task["index"]
        workers, chiefs = list(cluster.get("worker", [])), list(cluster.get("chief", []))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{TF_CONFIG} is not a cluster description ({type(exc).__name__}: {exc}); "
            f"expected {HINT}"
        ) from None
    others = sorted(set(cluster) - {"worker", "chief"})
    if others:
        raise ValueError(
            f"{TF_CONFIG} names {', '.join(others)} tasks; MultiWorkerMirroredStrategy trains "
            f"with a chief and workers only. Received: {TF_CONFIG}={text}"
        )
    size = {"worker": len(workers), "chief": len(chiefs)}
    if len(chiefs) > 1 or kind not in size or not isinstance(index, int):
        raise ValueError(
            f"{TF_CONFIG}'s task must be a worker (or the one chief) with a whole index. "
            f"Received: {TF_CONFIG}={text}"
        )
    if not 0 <= index < size[kind]:
        raise ValueError(
            f"{TF_CONFIG}'s task {kind} {index} is not in its cluster of {size[kind]} "
            f"{kind}(s). Received: {TF_CONFIG}={text}"
        )
    world = len(workers) + len(chiefs)
    if world < 2:
        return None
    rank = 0 if kind == "chief" else index + len(chiefs)
    return Cluster(rank, world, f"{kind} {index}")


@functools.cache
def multi_worker():
    """The process's one MultiWorkerMirroredStrategy (it reads TF_CONFIG and starts this
    task's gRPC server, so it must come before anything else runs TensorFlow)."""
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def cluster_comm() -> Comm:
    """A WorkerComm under a TF_CONFIG cluster, else the one-process Comm."""
    cluster = cluster_from_env()
    return Comm() if cluster is None else WorkerComm(multi_worker(), cluster)


class WorkerComm(Comm):
    """Sums over the workers with the strategy's collective all-reduce. Every worker calls
    sum() at the same points of the training loop, as collectives require."""

    def __init__(self, strategy, cluster: Cluster):
        self.strategy, self.cluster = strategy, cluster
        self.rank, self.world = cluster.rank, cluster.world

    def sum(self, values: dict) -> dict:
        import tensorflow as tf

        keys = sorted(values)
        arrays = [np.atleast_1d(np.asarray(values[k], dtype=np.float64)) for k in keys]
        flat = np.concatenate(arrays) if arrays else np.zeros(1)
        # this worker's numbers on its first replica, zeros on any other (several GPUs)
        per_replica = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(
                flat if ctx.replica_id_in_sync_group % _local(self) == 0 else 0 * flat
            )
        )
        total = self.strategy.reduce("SUM", per_replica, axis=None).numpy()
        out, at = {}, 0
        for k, a in zip(keys, arrays):
            part = total[at : at + a.size]
            at += a.size
            out[k] = part.reshape(np.shape(values[k])) if np.ndim(values[k]) else float(part[0])
        return out

    def barrier(self) -> None:
        self.sum({"barrier": 0.0})


def _local(comm: WorkerComm) -> int:
    return max(comm.strategy.num_replicas_in_sync // comm.world, 1)
