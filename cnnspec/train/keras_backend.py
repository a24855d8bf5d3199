"""Training with Keras 3 (TensorFlow): the network from cnnspec.backends.keras, a
custom step under tf.GradientTape compiled with tf.function.

The data is NHWC already. Heads trained with cross-entropy take logits, as
keras.losses.*CrossEntropy(from_logits=True). The formulas mirror torch_backend's,
term by term, so both backends optimise the same objective; metrics are the shared numpy
code. Weights are saved with model.save_weights (.weights.h5), optimizer variables with
numpy (.optim.npz).
"""

from __future__ import annotations

import os

import numpy as np

from ..ir import Model
from .plan import CE_LOSSES, Head, Plan, logits_model, weighted_losses

EPS = 1e-6


def make_optimizer(spec):
    import keras
    o = spec.optimizer
    eps = o.eps if o.eps is not None else 1e-7
    wd = o.weight_decay or None
    if o.name == "sgd":
        return keras.optimizers.SGD(o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                    weight_decay=wd)
    if o.name == "adam":
        return keras.optimizers.Adam(o.lr, beta_1=o.beta1, beta_2=o.beta2, epsilon=eps,
                                     weight_decay=wd)
    if o.name == "adamw":
        return keras.optimizers.AdamW(o.lr, weight_decay=o.weight_decay, beta_1=o.beta1,
                                      beta_2=o.beta2, epsilon=eps)
    return keras.optimizers.RMSprop(o.lr, rho=o.rho, momentum=o.momentum, epsilon=eps,
                                    weight_decay=wd)


def _logit_head(head: Head) -> bool:
    return head.logits or (head.activation is None and bool(set(head.losses) & CE_LOSSES))


class KerasBackend:
    name = "keras"
    weights_suffix = ".weights.h5"

    def __init__(self, model: Model, plan: Plan, seed: int = 0):
        import keras
        import tensorflow as tf

        from ..backends.keras import build
        self.plan, self.seed, self.tf = plan, seed, tf
        if plan.compile.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        keras.utils.set_random_seed(seed)
        from ..transfer import prepare
        built = logits_model(model, plan)
        self.net = build(built)
        # the spec's transfer section: load the source, freeze (a no-op without one)
        self.transfer = prepare(self.net, built, "keras")
        self._steps()
        self._eval = tf.function(self._eval_step, reduce_retracing=True)

    def _steps(self) -> None:
        """The optimizers and the compiled step for the variables trainable now. With the
        transfer section's backbone_lr the pretrained variables get an optimizer of their own
        at that rate (Keras has no per-variable learning rate)."""
        spec = self.plan.compile
        variables = self.net.trainable_variables
        self.lr_scale = self.transfer.backbone_lr_scale(spec.optimizer.lr)
        back = {id(v) for v in self.transfer.backbone_variables()} if self.lr_scale else set()
        self.parts = ([v for v in variables if id(v) in back],
                      [v for v in variables if id(v) not in back])
        self.opt = make_optimizer(spec)
        self.opt.build(self.parts[1])
        self.opt_back = None
        if self.parts[0]:
            self.opt_back = make_optimizer(spec)
            self.opt_back.build(self.parts[0])
            self.opt_back.learning_rate.assign(spec.optimizer.lr * self.lr_scale)
        self._train = self.tf.function(self._train_step, reduce_retracing=True)

    def _optimizer_variables(self) -> list:
        return list(self.opt.variables) + (list(self.opt_back.variables) if self.opt_back
                                           else [])

    def end_epoch(self, epoch: int) -> None:
        """After `epoch` epochs: transfer's unfreeze_at. Keras fixes the trainable variables
        when the step is traced, so a new optimizer and step follow an unfreeze."""
        if self.transfer.epoch_end(epoch):
            lr = float(self.opt.learning_rate)
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

    def train_step(self, batch: dict):
        losses, outs = self._train(self._inputs(batch))
        return _floats(losses), [np.asarray(o) for o in outs]

    def eval_step(self, batch: dict):
        losses, outs = self._eval(self._inputs(batch))
        return _floats(losses), [np.asarray(o) for o in outs]

    def predict(self, x: np.ndarray) -> list[np.ndarray]:
        outs = self._outputs(self.net(x, training=False))
        return [np.asarray(o) for o in self._activated(outs)]

    # --- steps -----------------------------------------------------------------------------
    def _inputs(self, batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k != "index"}

    def _outputs(self, out) -> list:
        if isinstance(out, dict):
            return [out[h.output] for h in self.plan.heads]
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def _train_step(self, batch):
        tf = self.tf
        with tf.GradientTape() as tape:
            outs = [tf.cast(o, "float32") for o in self._outputs(self.net(batch["x"],
                                                                          training=True))]
            losses = self.losses(outs, batch)
        back, rest = self.parts
        grads = tape.gradient(losses["loss"], back + rest)
        self.opt.apply_gradients(zip(grads[len(back):], rest))
        if back:
            self.opt_back.apply_gradients(zip(grads[:len(back)], back))
        return losses, self._activated(outs)

    def _eval_step(self, batch):
        tf = self.tf
        outs = [tf.cast(o, "float32") for o in self._outputs(self.net(batch["x"],
                                                                      training=False))]
        return self.losses(outs, batch), self._activated(outs)

    def losses(self, outs, batch) -> dict:
        return weighted_losses(self.plan, outs, batch, LOSSES)

    def _activated(self, outs) -> list:
        from keras import ops
        res = []
        for head, out in zip(self.plan.heads, outs):
            if _logit_head(head):
                out = ops.sigmoid(out) if head.units == 1 or head.activation == "sigmoid" \
                    else ops.softmax(out, axis=-1)
            res.append(out)
        return res

    # --- checkpoints -----------------------------------------------------------------------
    def save(self, prefix: str) -> list[str]:
        from .checkpoint import atomic_path
        weights, optim = prefix + ".weights.h5", prefix + ".optim.npz"
        atomic_path(weights, lambda tmp: self.net.save_weights(tmp))
        values = {f"v{i}": np.asarray(v) for i, v in enumerate(self._optimizer_variables())}

        def write(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **values)
        atomic_path(optim, write)
        return [weights, optim]

    def load(self, files: list[str], optimizer: bool = True) -> None:
        for f in files:
            if f.endswith(".weights.h5"):
                self.net.load_weights(f)
            elif f.endswith(".optim.npz") and optimizer and os.path.exists(f):
                with np.load(f) as data:
                    for i, v in enumerate(self._optimizer_variables()):
                        v.assign(data[f"v{i}"])


def _floats(losses: dict) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in losses.items()}


# --- losses by head role: the same formulas as torch_backend --------------------------------
def _bce(head, out, target):
    from keras import ops
    if _logit_head(head):   # log(1 + e^x) - x t, stable form (keras/torch BCE with logits)
        return ops.relu(out) - out * target + ops.log1p(ops.exp(-ops.abs(out)))
    p = ops.clip(out, EPS, 1 - EPS)
    return -(target * ops.log(p) + (1 - target) * ops.log(1 - p))


def _ce(head, out, labels):
    from keras import ops
    onehot = ops.one_hot(labels, head.units)
    logp = ops.log_softmax(out, axis=-1) if _logit_head(head) else \
        ops.log(ops.maximum(out, EPS))
    return -ops.sum(onehot * logp, axis=-1)


def _class_loss(name, head, out, batch):
    from keras import ops
    y = batch["y"]
    if head.units == 1 or name == "binary_crossentropy":
        target = ops.cast(y, "float32")[:, None] if head.units == 1 else \
            ops.one_hot(y, head.units)
        per = ops.mean(_bce(head, out, target), axis=-1)
    else:
        per = _ce(head, out, y)
    if "boxes" in batch:
        present = batch["present"]
        return ops.sum(per * present) / ops.maximum(ops.sum(present), 1.0)
    return ops.mean(per)


def _mask_loss(name, head, out, batch):
    from keras import ops
    masks = batch["masks"]
    if head.units == 1:
        prob = ops.sigmoid(out) if _logit_head(head) else out
        target = ops.cast(masks, "float32")[..., None]
        ce = ops.mean(_bce(head, out, target))
        dice = 1 - _dice(prob, target)
    else:
        prob = ops.softmax(out, axis=-1) if _logit_head(head) else out
        target = ops.one_hot(masks, head.units)
        ce = ops.mean(_ce(head, out, masks))
        dice = 1 - _dice(prob[..., 1:], target[..., 1:])
    return {"dice": dice, "ce_dice": ce + dice}.get(name, ce)


def _dice(prob, target):
    from keras import ops
    inter = ops.sum(prob * target, axis=(0, 1, 2))
    denom = ops.sum(prob, axis=(0, 1, 2)) + ops.sum(target, axis=(0, 1, 2))
    return ops.mean((2 * inter + 1.0) / (denom + 1.0))


def _present_loss(name, head, out, batch):
    from keras import ops
    return ops.mean(_bce(head, out, batch["present"][:, None]))


def _box_loss(name, head, out, batch):
    from keras import ops
    present, boxes = batch["present"], batch["boxes"]
    diff = out - boxes
    if name == "iou":
        per = 1 - box_iou(out, boxes)
    elif name == "mse":
        per = ops.mean(diff ** 2, axis=-1)
    elif name == "mae":
        per = ops.mean(ops.abs(diff), axis=-1)
    else:   # smooth L1, beta 1 (Huber)
        a = ops.abs(diff)
        per = ops.mean(ops.where(a < 1.0, 0.5 * a * a, a - 0.5), axis=-1)
    return ops.sum(per * present) / ops.maximum(ops.sum(present), 1.0)


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
        return ops.mean(_bce(head, out, x))
    if name == "mae":
        return ops.mean(ops.abs(out - x))
    return ops.mean((out - x) ** 2)


LOSSES = {"class": _class_loss, "mask": _mask_loss, "present": _present_loss,
          "box": _box_loss, "image": _image_loss}
