"""Training with Keras 3 (TensorFlow): the network from cnnspec.backends.keras, a
custom step under tf.GradientTape compiled with tf.function.

The data is NHWC already. Heads trained with cross-entropy take logits, as
keras.losses.*CrossEntropy(from_logits=True). The formulas mirror torch_backend's,
term by term, so both backends optimise the same objective; metrics are the shared numpy
code. Weights are saved with model.save_weights (.weights.h5), optimizer variables with
numpy (.optim.npz).

Under a MirroredStrategy (keras_devices: several GPUs, or CNNSPEC_KERAS_REPLICAS) each batch
is cut into one contiguous shard per replica and the step runs with strategy.run. Every loss
is written as this replica's share of the global-batch value: a batch mean is the shard's sum
over the global count (tf.nn.compute_average_loss), a ratio divides by the global denominator,
and a nonlinear global (dice) is computed from all-reduced sums and divided by the number of
replicas. The shares add up to the one-device loss, and the gradients the optimizer sums over
the replicas to the one-device gradient. BatchNorm is synchronised, so a mirrored run follows
the one-device run up to float reduction order.
"""

from __future__ import annotations

import os

import numpy as np

from ..ir import Model
from .dense import targets_of, with_targets
from .plan import CE_LOSSES, Head, TrainingPlan, logits_model, weighted_losses

EPS = 1e-6


def make_optimizer(spec):
    import keras

    o = spec.optimizer
    eps = o.eps if o.eps is not None else 1e-7
    wd = o.weight_decay or None
    if o.name == "sgd":
        return keras.optimizers.SGD(o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=wd)
    if o.name == "adam":
        return keras.optimizers.Adam(
            o.lr, beta_1=o.beta1, beta_2=o.beta2, epsilon=eps, weight_decay=wd
        )
    if o.name == "adamw":
        return keras.optimizers.AdamW(
            o.lr, weight_decay=o.weight_decay, beta_1=o.beta1, beta_2=o.beta2, epsilon=eps
        )
    return keras.optimizers.RMSprop(
        o.lr, rho=o.rho, momentum=o.momentum, epsilon=eps, weight_decay=wd
    )


def _logit_head(head: Head) -> bool:
    return head.logits or (head.activation is None and bool(set(head.losses) & CE_LOSSES))


class KerasBackend:
    name = "keras"
    weights_suffix = ".weights.h5"
    normalize: dict | None = None  # the input normalisation the weights files carry

    def __init__(
        self,
        model: Model,
        plan: TrainingPlan,
        seed: int = 0,
        replicas: int | None = None,
        policy: str | None = None,
        comm=None,
    ):
        """`replicas`: mirror over that many devices (None: CNNSPEC_KERAS_REPLICAS, else every
        GPU); `policy`: the mixed policy when the spec asks for mixed precision (None: by
        device). See keras_devices. `comm`: a keras_cluster.WorkerComm trains on several
        machines with its MultiWorkerMirroredStrategy (what session.train makes under
        TF_CONFIG); evaluation and prediction stay in one process."""
        import keras
        import tensorflow as tf

        from ..backends.keras import build
        from ..transfer import prepare
        from .driver import Comm
        from .keras_cluster import WorkerComm
        from .keras_devices import dtype_policy, make_strategy, policy_name, sync_batchnorm

        self.plan, self.seed, self.tf = plan, seed, tf
        self.comm = comm if isinstance(comm, WorkerComm) else Comm()
        self.strategy = comm.strategy if isinstance(comm, WorkerComm) else make_strategy(replicas)
        self.replicas = self.strategy.num_replicas_in_sync
        # this machine's replicas: each worker feeds its own share of the global batch
        self.local_replicas = max(self.replicas // self.comm.world, 1)
        self.policy = policy_name(plan.compile.mixed_precision, policy)
        self.loss_scaling = self.policy == "mixed_float16"
        keras.utils.set_random_seed(seed)
        built = logits_model(model, plan)
        self.model = model  # the spec's: its fingerprint marks the weights files
        with self.strategy.scope(), dtype_policy(self.policy):
            self.net = build(built)
            if plan.dense:
                from .dense_keras import start_at_prior

                start_at_prior(self.net, plan)
            # the spec's transfer section: load the source, freeze (a no-op without one)
            self.transfer = prepare(self.net, built, "keras")
        if self.replicas > 1:
            sync_batchnorm(self.net)
        self._steps()
        self._eval = self._compiled(self._eval_step)

    def _steps(self) -> None:
        """The optimizers and the compiled step for the variables trainable now. With the
        transfer section's backbone_lr the pretrained variables get an optimizer of their own
        at that rate (Keras has no per-variable learning rate)."""
        spec = self.plan.compile
        variables = self.net.trainable_variables
        self.lr_scale = self.transfer.backbone_lr_scale(spec.optimizer.lr)
        back = {id(v) for v in self.transfer.backbone_variables()} if self.lr_scale else set()
        self.parts = (
            [v for v in variables if id(v) in back],
            [v for v in variables if id(v) not in back],
        )
        with self.strategy.scope():  # optimizer variables are mirrored like the model's
            self.opt = self._optimizer(spec, self.parts[1])
            self.opt_back = None
            if self.parts[0]:
                self.opt_back = self._optimizer(spec, self.parts[0])
                self.opt_back.learning_rate.assign(spec.optimizer.lr * self.lr_scale)
        self._train = self._compiled(self._train_step)

    def _optimizer(self, spec, variables: list):
        import keras

        opt = make_optimizer(spec)
        if self.loss_scaling:  # float16 gradients underflow without it (dynamic loss scale)
            opt = keras.optimizers.LossScaleOptimizer(opt)
        opt.build(variables)
        return opt

    def _compiled(self, step):
        """`step` as one tf.function; over several replicas, strategy.run on each shard, the
        loss shares summed, the outputs left per replica (gathered in numpy)."""
        tf = self.tf
        if self.replicas == 1:
            return tf.function(step, reduce_retracing=True)
        strategy = self.strategy

        def mirrored(batch):
            losses, outs = strategy.run(step, args=(batch,))
            return (
                {k: strategy.reduce("SUM", v, axis=None) for k, v in losses.items()},
                [strategy.experimental_local_results(o) for o in outs],
            )

        return tf.function(mirrored, reduce_retracing=True)

    def _optimizer_variables(self) -> list:
        return list(self.opt.variables) + (list(self.opt_back.variables) if self.opt_back else [])

    def end_epoch(self, epoch: int) -> None:
        """After `epoch` epochs: transfer's unfreeze_at. Keras fixes the trainable variables
        when the step is traced, so a new optimizer and step follow an unfreeze."""
        if self.transfer.epoch_end(epoch):
            lr = float(self.opt.learning_rate.numpy())  # (a mirrored one refuses float())
            self._steps()
            self.set_lr(lr)

    # --- the driver's interface ------------------------------------------------------------
    def set_lr(self, lr: float) -> None:
        self.opt.learning_rate.assign(lr)
        if self.opt_back is not None:
            self.opt_back.learning_rate.assign(lr * self.lr_scale)

    def start_epoch(self, epoch: int) -> None:
        import keras

        keras.utils.set_random_seed(self.seed * 1_000_003 + epoch)

    def batches(
        self,
        samples,
        batch_size: int,
        *,
        train: bool,
        seed: int,
        epoch: int,
        ops=None,
        workers: int | None = None,
    ):
        """One epoch's batches, made on tf.data's threads (cnnspec.data.loading): the global
        batches, or under a TF_CONFIG cluster this worker's share of each; the strategy
        splits them over this machine's replicas (_shards)."""
        from ..data.loading import keras_batches

        return keras_batches(
            samples,
            batch_size,
            train=train,
            seed=seed,
            epoch=epoch,
            ops=ops,
            workers=workers,
            part=(self.comm.rank, self.comm.world),
        )

    def train_step(self, batch: dict):
        return self._run(self._train, with_targets(self.plan, batch))

    def eval_step(self, batch: dict):
        return self._run(self._eval, with_targets(self.plan, batch))

    def meter(self, plan: TrainingPlan):
        """The shared numpy Meter; dense heads' NMS runs on TensorFlow's kernel."""
        from .metrics import Meter

        return Meter(plan, framework="keras")

    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        tf = self.tf
        outs = [tf.cast(o, "float32") for o in self._outputs(self.net(x, training=False))]
        return [np.asarray(o) for o in self._activated(outs)]

    # --- steps -----------------------------------------------------------------------------
    def _run(self, compiled, batch: dict):
        inputs = {k: v for k, v in batch.items() if k != "index"}
        if self.replicas == 1:
            losses, outs = compiled(inputs)
            return _floats(losses), [np.asarray(o) for o in outs]
        repeat = -(-self.local_replicas // len(inputs["x"]))
        losses, outs = compiled(self._shards(inputs, repeat))
        return _floats(losses), [np.concatenate([np.asarray(p) for p in o])[::repeat] for o in outs]

    def _shards(self, inputs: dict, repeat: int):
        """The batch as one contiguous shard per replica (sizes differing by at most one), so
        the replicas' outputs concatenate back in batch order. A batch smaller than the number
        of replicas has each row repeated `repeat` times, leaving every batch mean and BatchNorm
        statistic as it was and no replica empty (an empty shard would give BatchNorm no
        statistics); the shards then carry `repeat` for the losses built on batch sums."""
        tf = self.tf
        if repeat > 1:
            inputs = {k: np.repeat(v, repeat, axis=0) for k, v in inputs.items()}
        local = self.local_replicas
        cuts = np.linspace(0, len(inputs["x"]), local + 1).round().astype(int)

        def shard(ctx):
            # a worker's replicas are numbered consecutively (MultiWorkerMirroredStrategy)
            i = ctx.replica_id_in_sync_group % local
            part = {k: tf.convert_to_tensor(v[cuts[i] : cuts[i + 1]]) for k, v in inputs.items()}
            if repeat > 1:
                part["repeat"] = tf.constant(float(repeat))
            return part

        return self.strategy.experimental_distribute_values_from_function(shard)

    def _outputs(self, out) -> list:
        if isinstance(out, dict):
            return [out[h.output] for h in self.plan.heads]
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def _train_step(self, batch):
        tf = self.tf
        with tf.GradientTape() as tape:
            outs = [
                tf.cast(o, "float32") for o in self._outputs(self.net(batch["x"], training=True))
            ]
            losses = self.losses(outs, batch)
            loss = self.opt.scale_loss(losses["loss"]) if self.loss_scaling else losses["loss"]
        back, rest = self.parts
        grads = tape.gradient(loss, back + rest)
        back_grads = grads[: len(back)]
        if back and self.loss_scaling:  # scaled by opt's scale; opt_back divides by its own
            ratio = self.opt_back.dynamic_scale / self.opt.dynamic_scale
            back_grads = [g * ratio for g in back_grads]
        self.opt.apply_gradients(zip(grads[len(back) :], rest))
        if back:
            self.opt_back.apply_gradients(zip(back_grads, back))
        return losses, self._activated(outs)

    def _eval_step(self, batch):
        tf = self.tf
        outs = [tf.cast(o, "float32") for o in self._outputs(self.net(batch["x"], training=False))]
        return self.losses(outs, batch), self._activated(outs)

    def losses(self, outs, batch) -> dict:
        return weighted_losses(self.plan, outs, batch, LOSSES)

    def _activated(self, outs) -> list:
        from keras import ops

        res = []
        for head, out in zip(self.plan.heads, outs):
            if _logit_head(head):
                out = (
                    ops.sigmoid(out)
                    if head.units == 1 or head.activation == "sigmoid"
                    else ops.softmax(out, axis=-1)
                )
            res.append(out)
        return res

    # --- checkpoints -----------------------------------------------------------------------
    def save(self, prefix: str) -> list[str]:
        from ..convert import save_keras_weights
        from ..weights import normalization
        from .checkpoint import atomic_path

        weights, optim = prefix + ".weights.h5", prefix + ".optim.npz"
        notes = normalization.entry(self.normalize)
        atomic_path(weights, lambda tmp: save_keras_weights(self.net, self.model, tmp, notes))
        values = {f"v{i}": np.asarray(v) for i, v in enumerate(self._optimizer_variables())}

        def write(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **values)

        atomic_path(optim, write)
        return [weights, optim]

    def load(self, files: list[str], optimizer: bool = True) -> None:
        """Weights (.weights.h5) and, for a resumed run, the optimizer variables (.optim.npz,
        read without pickle). A file that is missing, of another kind, unreadable or of
        another spec raises ValueError."""
        from ..convert import load_keras_weights

        for f in files:
            if f.endswith(".optim.npz"):
                if optimizer and os.path.exists(f):
                    self._load_optimizer(f)
                continue
            load_keras_weights(self.net, self.model, f)

    def _load_optimizer(self, f: str) -> None:
        try:
            with np.load(f, allow_pickle=False) as data:
                for i, v in enumerate(self._optimizer_variables()):
                    v.assign(data[f"v{i}"])
        except Exception as exc:  # noqa: BLE001 - corrupt, a pickle, another optimizer
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"{f}: cannot read the optimizer state ({first})") from None


def _floats(losses: dict) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in losses.items()}


# --- batch reductions: one device, or this replica's share of the global batch -------------
def _in_sync():
    """The replica context of a step mirrored over several replicas, else None (one device:
    the batch reductions are the plain ones)."""
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    return ctx if ctx is not None and ctx.num_replicas_in_sync > 1 else None


def _mean(x):
    """The batch mean of x; mirrored, this replica's share: its sum over the global count
    (tf.nn.compute_average_loss), so the shares and their gradients add up to the global
    mean's."""
    from keras import ops

    ctx = _in_sync()
    if ctx is None:
        return ops.mean(x)
    return ops.sum(x) / ctx.all_reduce("sum", ops.cast(ops.size(x), "float32"))


def _ratio(num, den):
    """sum(num) / max(sum(den), 1) over the batch, for losses averaged over the images that
    hold an object; mirrored, this replica's numerator over the global denominator."""
    from keras import ops

    ctx = _in_sync()
    if ctx is not None:
        den = ctx.all_reduce("sum", den)
    return num / ops.maximum(den, 1.0)


def _global_sum(x, batch):
    """x summed over the replicas, differentiably (the gradient of an all-reduce sum is the
    all-reduce sum of the gradients), for a loss that is a nonlinear function of batch sums;
    divided by the rows' repetition when a small batch was repeated to fill the replicas."""
    ctx = _in_sync()
    if ctx is None:
        return x
    total = ctx.all_reduce("sum", x)
    return total / batch["repeat"] if "repeat" in batch else total


def _share(value):
    """This replica's share of a loss every replica computes in full from global sums."""
    ctx = _in_sync()
    return value if ctx is None else value / ctx.num_replicas_in_sync


# --- losses by head role: the same formulas as torch_backend --------------------------------
def _bce(head, out, target):
    from keras import ops

    if _logit_head(head):  # log(1 + e^x) - x t, stable form (keras/torch BCE with logits)
        return ops.relu(out) - out * target + ops.log1p(ops.exp(-ops.abs(out)))
    p = ops.clip(out, EPS, 1 - EPS)
    return -(target * ops.log(p) + (1 - target) * ops.log(1 - p))


def _ce(head, out, labels):
    """Cross-entropy against class indices, or against soft (N, K) rows (mixup/cutmix)."""
    from keras import ops

    target = labels if len(labels.shape) == len(out.shape) else ops.one_hot(labels, head.units)
    logp = ops.log_softmax(out, axis=-1) if _logit_head(head) else ops.log(ops.maximum(out, EPS))
    return -ops.sum(target * logp, axis=-1)


def _class_loss(name, head, out, batch):
    """As torch_backend's: class indices or mixup/cutmix's soft rows (one-unit head:
    column 1), for categorical, sparse and binary cross-entropy alike."""
    from keras import ops

    y = batch["y"]
    soft = len(y.shape) == 2
    if head.units == 1 or name == "binary_crossentropy":
        if soft:
            target = y[:, 1:] if head.units == 1 else y
        elif head.units == 1:
            target = ops.cast(y, "float32")[:, None]
        else:
            target = ops.one_hot(y, head.units)
        per = ops.mean(_bce(head, out, target), axis=-1)
    else:
        per = _ce(head, out, y)
    if "boxes" in batch:
        present = batch["present"]
        return _ratio(ops.sum(per * present), ops.sum(present))
    return _mean(per)


def _mask_loss(name, head, out, batch):
    from keras import ops

    masks = batch["masks"]
    if head.units == 1:
        prob = ops.sigmoid(out) if _logit_head(head) else out
        target = ops.cast(masks, "float32")[..., None]
        ce = _mean(_bce(head, out, target))
        dice = _share(1 - _dice(prob, target, batch))
    else:
        prob = ops.softmax(out, axis=-1) if _logit_head(head) else out
        target = ops.one_hot(masks, head.units)
        ce = _mean(_ce(head, out, masks))
        dice = _share(1 - _dice(prob[..., 1:], target[..., 1:], batch))
    return {"dice": dice, "ce_dice": ce + dice}.get(name, ce)


def _dice(prob, target, batch):
    from keras import ops

    inter = _global_sum(ops.sum(prob * target, axis=(0, 1, 2)), batch)
    denom = _global_sum(ops.sum(prob, axis=(0, 1, 2)) + ops.sum(target, axis=(0, 1, 2)), batch)
    return ops.mean((2 * inter + 1.0) / (denom + 1.0))


def _present_loss(name, head, out, batch):
    return _mean(_bce(head, out, batch["present"][:, None]))


def _box_loss(name, head, out, batch):
    from keras import ops

    present, boxes = batch["present"], batch["boxes"]
    diff = out - boxes
    if name == "iou":
        per = 1 - box_iou(out, boxes)
    elif name == "mse":
        per = ops.mean(diff**2, axis=-1)
    elif name == "mae":
        per = ops.mean(ops.abs(diff), axis=-1)
    else:  # smooth L1, beta 1 (Huber)
        a = ops.abs(diff)
        per = ops.mean(ops.where(a < 1.0, 0.5 * a * a, a - 0.5), axis=-1)
    return _ratio(ops.sum(per * present), ops.sum(present))


def box_iou(a, b):
    from keras import ops

    ix = ops.relu(ops.minimum(a[:, 2], b[:, 2]) - ops.maximum(a[:, 0], b[:, 0]))
    iy = ops.relu(ops.minimum(a[:, 3], b[:, 3]) - ops.maximum(a[:, 1], b[:, 1]))
    inter = ix * iy
    area_a = ops.relu(a[:, 2] - a[:, 0]) * ops.relu(a[:, 3] - a[:, 1])
    area_b = ops.relu(b[:, 2] - b[:, 0]) * ops.relu(b[:, 3] - b[:, 1])
    return inter / ops.maximum(area_a + area_b - inter, EPS)


def _image_loss(name, head, out, batch):
    from keras import ops

    x = batch["x"]
    if name == "binary_crossentropy":
        return _mean(_bce(head, out, x))
    if name == "mae":
        return _mean(ops.abs(out - x))
    return _mean((out - x) ** 2)


def _dense_loss(name, head, out, batch):
    """A dense detection head's losses (train/dense_keras.py), as torch_backend's."""
    from keras import ops

    from .dense_keras import DenseLoss

    key = (head.info, name)
    if key not in _DENSE:
        _DENSE[key] = DenseLoss(head.info, name)
    out = ops.reshape(out, (ops.shape(out)[0], -1, head.info.columns))
    return _DENSE[key](out, targets_of(head, batch))


_DENSE: dict = {}  # DenseLoss per head: its priors are made once

LOSSES = {
    "dense": _dense_loss,
    "class": _class_loss,
    "mask": _mask_loss,
    "present": _present_loss,
    "box": _box_loss,
    "image": _image_loss,
}
