"""What a spec is trained for: the task, one head per output, its losses and metrics.

Task inference lives here and only here (training, evaluation and prediction all ask
`make_plan`). It reads the output shapes, the final activations and the compile losses:

    outputs (H, W, K) with H x W = input         -> segment   (pixel-wise classes)
    a dense detection head (detection.heads)    -> detect    (every object: role "dense",
                                                   its HeadInfo; data task "objects")
    an output of 4 units + one of 1 unit        -> detect    (present + box)
    output = input with mse/mae/bce              -> generate (an autoencoder)
    loss vae / adversarial                       -> two specs: `cnnspec train ENCODER
                                                    --decoder D` / `GENERATOR
                                                    --discriminator D` (train/generate.py)
    one vector output                            -> classify

Every combination that cannot train is refused before any framework is imported, as a
located SpecError E51x on the compile section (or the setting's own line when found).
A softmax or sigmoid that ends a head trained with cross-entropy is stripped from the
network and applied by the loss instead (logits + cross-entropy, as torch's
CrossEntropyLoss / Keras' from_logits=True), so it is never applied twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..detection.heads import head_infos
from ..detection.priors import HeadInfo
from ..errors import Span, SpecError, SpecErrors, did_you_mean
from ..ir import CompileSpec, Model
from ..logits import final_activation, strip_final_activations
from .dense import UntrainableHead, class_loss_of, object_classes

TASKS = ("classify", "segment", "detect", "generate")
# COCO box AP (detection.evaluate) of dense heads' decoded, NMS-filtered detections
DENSE_METRICS = ("map", "map_50", "map_75")
DENSE_LOSSES = {"binary_crossentropy": "bce"}  # else focal: dense.class_loss_of
CE_LOSSES = {
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_crossentropy",
    "ce_dice",
}
BOX_LOSSES = {"smooth_l1", "iou", "mse", "mae"}
TASK_LOSSES = {
    "classify": {
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
        "binary_crossentropy",
    },
    "segment": {
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
        "binary_crossentropy",
        "dice",
        "ce_dice",
    },
    "detect": {
        "binary_crossentropy",
        "smooth_l1",
        "iou",
        "mse",
        "mae",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
    },
    "generate": {"vae", "adversarial", "mse", "mae", "binary_crossentropy"},
}
TASK_METRICS = {
    "classify": {"accuracy", "top5", "top_k"},
    "segment": {"accuracy", "dice", "mean_iou", "iou"},
    "detect": {"accuracy", "mean_iou", "iou", "mae", "mse", *DENSE_METRICS},
    "generate": {"mae", "mse"},
}
DEFAULT_LOSS = {
    "classify": ["sparse_categorical_crossentropy"],
    "segment": ["ce_dice"],
    "detect": ["binary_crossentropy", "smooth_l1", "iou"],
    "generate": ["mse"],
}
DEFAULT_METRICS = {
    "classify": ["accuracy"],
    "segment": ["dice", "accuracy"],
    "detect": ["mean_iou", "accuracy"],
    "generate": [],
}
# Metric spellings and the name training reports them under (history columns, monitor).
METRIC_ALIASES = {"iou": "mean_iou", "top_k": "top5"}
# The data loader's task names (cnnspec.data.TASKS).
DATA_TASK = {
    "classify": "classify",
    "segment": "segment",
    "detect": "detect",
    "generate": "classify",
}


@dataclass
class Head:
    """One network output and how it is trained."""

    output: str  # the output node's name
    role: str  # class | mask | present | box | image
    shape: tuple[int, ...]
    activation: str | None  # the final activation the network had
    losses: list[str] = field(default_factory=list)
    logits: bool = False  # True: the activation is stripped and applied by the loss
    info: HeadInfo | None = None  # a dense detection head's priors and layout

    @property
    def units(self) -> int:
        return self.shape[-1]


@dataclass
class TrainingPlan:
    task: str
    heads: list[Head]
    metrics: list[str]
    compile: CompileSpec
    loss_weights: list[float]
    class_names: list[str] = field(default_factory=list)  # the data's, once it is known

    @property
    def data_task(self) -> str:
        return "objects" if self.dense else DATA_TASK[self.task]

    @property
    def dense(self) -> bool:
        """Whether the model's outputs are dense detection heads (every object)."""
        return any(h.role == "dense" for h in self.heads)

    @property
    def monitor(self) -> str:
        es = self.compile.early_stopping
        return es.monitor if es else "val_loss"

    def head(self, role: str) -> Head | None:
        return next((h for h in self.heads if h.role == role), None)


def make_plan(model: Model, num_classes: int | None = None) -> TrainingPlan:
    """The training plan of a compiled model, or SpecErrors with codes E510-E519 and E525.

    `num_classes`, when the data is known, is checked against the class head's units."""
    spec = model.compile or CompileSpec()
    checker = _Checker(model, spec)
    plan = checker.plan(num_classes)
    if checker.errors:
        raise SpecErrors(checker.errors)
    return plan


def weighted_losses(plan: TrainingPlan, outs, batch, table: dict) -> dict:
    """The training loss: each head's losses (from the backend's `table`, by head role),
    weighted and summed; the parts are reported too when there are several. Framework
    neutral: the values are whatever tensors the backend's loss functions return."""
    parts, total = {}, None
    for head, out, weight in zip(plan.heads, outs, plan.loss_weights):
        for name in head.losses:
            value = table[head.role](name, head, out, batch)
            if isinstance(value, dict):  # a dense head: its terms (box, cls, extra) reported
                prefix = "" if len(plan.heads) == 1 else f"{head.output}_"
                parts.update({f"{prefix}{k[5:]}": v for k, v in value.items() if k != "loss"})
                value = value["loss"]
            else:
                parts[name if name not in parts else f"{head.output}_{name}"] = value
            # x * 1.0 and 0.0 + x are x: no extra graph nodes for the common single loss
            term = value if weight == 1 else weight * value
            total = term if total is None else total + term
    result = {"loss": 0.0 if total is None else total}
    if len(parts) > 1:
        result.update({f"loss_{k}": v for k, v in parts.items()})
    return result


def logits_model(model: Model, plan: TrainingPlan) -> Model:
    """A copy of the model whose heads trained on logits end without their activation."""
    return strip_final_activations(model, [h.output for h in plan.heads if h.logits])


class _Checker:
    def __init__(self, model: Model, spec: CompileSpec):
        self.model, self.spec = model, spec
        self.errors: list[SpecError] = []
        self._source = _read(model.source)

    # --- locating -------------------------------------------------------------------------
    def where(self, setting: str | None = None) -> Span | None:
        """The line of `setting` inside the compile section, else the section itself."""
        sec = self.spec.span
        if sec is None:
            return None
        if setting and self._source:
            lines = self._source.splitlines()
            last = sec.end_line or len(lines)
            pat = re.compile(rf"(^\s*|[;{{]\s*){re.escape(setting)}\b")
            for no in range(sec.line, min(last, len(lines)) + 1):
                m = pat.search(lines[no - 1])
                if m:
                    col = m.start() + len(m.group(1)) + 1
                    return Span(no, col, no, len(lines[no - 1].rstrip()) + 1)
        return Span(sec.line, sec.column, sec.end_line, sec.end_column)

    def error(
        self, code: str, message: str, setting: str | None = None, hint=None, span=None, **kw
    ):
        span = (
            Span(span.line, span.column, span.end_line, span.end_column)
            if span
            else self.where(setting)
        )
        self.errors.append(SpecError(code, message, span, hint=hint, path=self.model.source, **kw))

    # --- the plan -------------------------------------------------------------------------
    def plan(self, num_classes: int | None) -> TrainingPlan:
        task = self.infer_task()
        losses = list(self.spec.loss) or list(DEFAULT_LOSS.get(task, []))
        heads = self.heads(task, losses)
        metrics = list(self.spec.metrics) or list(DEFAULT_METRICS.get(task, []))
        if any(h.role == "dense" for h in heads) and not self.spec.metrics:
            metrics = ["map", "map_50"]
        self.check_losses(task, losses, heads)
        self.check_metrics(task, metrics, any(h.role == "dense" for h in heads))
        self.check_heads(task, heads, num_classes)
        self.check_monitor(metrics)
        self.check_mixing(task)
        self.check_objects(task, any(h.role == "dense" for h in heads))
        weights = list(self.spec.loss_weights) or [1.0] * len(heads)
        if len(weights) != len(heads):
            self.error(
                "E514", f"loss weights={len(weights)} values for {len(heads)} output(s)", "loss"
            )
        for h in heads:
            h.logits = h.activation in ("softmax", "sigmoid") and any(
                loss in CE_LOSSES for loss in h.losses
            )
        return TrainingPlan(task, heads, metrics, self.spec, weights)

    def infer_task(self) -> str:
        model, losses = self.model, set(self.spec.loss)
        if dense_heads(model):
            return "detect"
        shapes = model.output_shapes
        in_shape = model.input_shape
        if losses & {"vae", "adversarial"}:
            self.error(
                "E518",
                f"loss {'/'.join(sorted(losses & {'vae', 'adversarial'}))} "
                "trains two networks, and a spec holds one",
                "loss",
                hint="train the encoder with --decoder DECODER.cnn (VAE) or the "
                "generator with --discriminator DISCRIMINATOR.cnn (GAN)",
            )
            return "generate"
        if len(shapes) >= 2 and any(s == (4,) for s in shapes) and any(s == (1,) for s in shapes):
            return "detect"
        if len(shapes) == 1 and len(shapes[0]) == 3 and len(in_shape) == 3:
            if shapes[0] == in_shape and losses <= {"mse", "mae", "binary_crossentropy"} and losses:
                return "generate"
            if shapes[0][:2] == in_shape[:2]:
                return "segment"
        if len(shapes) == 1 and len(shapes[0]) == 1:
            if losses & BOX_LOSSES and not losses & CE_LOSSES:
                self.error(
                    "E517",
                    "a single vector output with a box loss has no present flag to train against",
                    "loss",
                    hint="detection needs two outputs: present (1 unit, sigmoid) and box (4 units)",
                )
            return "classify"
        shown = ", ".join("x".join(map(str, s)) for s in shapes)
        self.error(
            "E517",
            f"cannot tell what this network is trained for from its outputs ({shown})",
            "loss",
            hint="a classifier ends in a vector; a segmenter in HxWxK at the input's "
            "size; a detector outputs present (1) and box (4); a VAE encoder "
            "(mean, logvar) trains with --decoder DECODER.cnn",
        )
        return "classify"

    def heads(self, task: str, losses: list[str]) -> list[Head]:
        model = self.model
        outs = [
            (o, model.node(o).shape, final_activation(model.node(o).layer)) for o in model.outputs
        ]
        dense = dense_heads(model)
        if dense:
            return self.dense_heads(dense, outs, list(self.spec.loss))  # not the defaults
        if task == "detect":
            heads = []
            for name, shape, act in outs:
                role = {(1,): "present", (4,): "box"}.get(shape, "class")
                heads.append(Head(name, role, shape, act))
            present = [h for h in heads if h.role == "present"]
            box = [h for h in heads if h.role == "box"]
            cls = [h for h in heads if h.role == "class"]
            for loss in losses:
                target = (
                    box if loss in BOX_LOSSES else present if loss == "binary_crossentropy" else cls
                )
                if target:
                    target[0].losses.append(loss)
                else:
                    self.error(
                        "E514",
                        f"loss {loss} has no output to train: this detector's "
                        "outputs are " + ", ".join(f"{h.output} ({h.role})" for h in heads),
                        "loss",
                    )
            for h in heads:
                if not h.losses:
                    self.error(
                        "E514",
                        f"output {h.output} ({h.role}) has no loss",
                        "loss",
                        hint="list one loss per output: binary_crossentropy for "
                        "present, smooth_l1 and/or iou for the box",
                    )
            return heads
        role = {"classify": "class", "segment": "mask", "generate": "image"}[task]
        heads = [Head(n, role, s, a) for n, s, a in outs]
        if len(losses) == 1:
            for h in heads:
                h.losses = list(losses)
        elif len(losses) == len(heads):
            for h, loss in zip(heads, losses):
                h.losses = [loss]
        elif len(heads) == 1:
            heads[0].losses = list(losses)
        else:
            self.error(
                "E514",
                f"{len(losses)} losses for {len(heads)} outputs",
                "loss",
                hint="give one loss for all outputs, or one per output in output order",
            )
        return heads

    def dense_heads(self, infos, outs, losses: list[str]) -> list[Head]:
        """One Head per dense head; their losses (GIoU, focal or BCE, centre-ness or
        objectness) come with the head (train/dense.py); `loss binary_crossentropy` asks
        for BCE classification instead of focal."""
        by_output = {info.output: info for info in infos}
        heads = []
        for name, shape, act in outs:
            if name not in by_output:
                self.error(
                    "E514",
                    f"output {name} is not a detection head, and a detector's outputs must all be",
                    "loss",
                )
                continue
            info = by_output[name]
            chosen = next((DENSE_LOSSES[x] for x in losses if x in DENSE_LOSSES), None)
            try:  # the loss name is the classification loss: focal or bce
                kind = class_loss_of(info, chosen)
            except ValueError as exc:  # at the head's line when the head is at fault
                span = self.model.node(name).span if isinstance(exc, UntrainableHead) else None
                self.error("E512", str(exc), "loss", span=span)
                continue
            heads.append(Head(name, "dense", shape, act, [kind], info=info))
        for loss in losses:
            if loss not in DENSE_LOSSES:
                self.error(
                    "E512",
                    f"loss {loss} does not train a dense detection head: it trains with GIoU, "
                    "focal (or binary_crossentropy) classification and its extra column",
                    "loss",
                    expected="no loss line, or binary_crossentropy",
                )
        return heads

    def check_losses(self, task: str, losses: list[str], heads: list[Head]) -> None:
        if any(h.role == "dense" for h in heads):
            return  # dense_heads checked them
        fits = TASK_LOSSES[task]
        for loss in losses:
            if loss in ("dice", "ce_dice") and task == "classify":
                self.error(
                    "E512",
                    f"loss {loss} measures overlap of masks; this network is "
                    "a classifier (its output is a vector)",
                    "loss",
                    hint="use sparse_categorical_crossentropy, or end the network "
                    "in HxWxK to segment",
                )
            elif loss not in fits:
                self.error(
                    "E512",
                    f"loss {loss} does not fit a {task} network",
                    "loss",
                    expected=", ".join(sorted(fits)),
                )
        for h in heads:
            if "binary_crossentropy" in h.losses and h.activation == "softmax" and h.units > 1:
                self.error(
                    "E510",
                    f"binary_crossentropy on a softmax over {h.units} units: "
                    "softmax makes the units compete, binary cross-entropy scores "
                    "each on its own",
                    "loss",
                    hint="use categorical_crossentropy with softmax, or sigmoid with "
                    "binary_crossentropy (multi-label)",
                )
            if (
                {"categorical_crossentropy", "sparse_categorical_crossentropy"} & set(h.losses)
                and h.activation == "sigmoid"
                and h.units > 1
            ):
                self.error(
                    "E510",
                    f"categorical cross-entropy on {h.units} sigmoid units: "
                    "the units are not a distribution over classes",
                    "loss",
                    hint="end the head in softmax, or use binary_crossentropy",
                )
            if (
                {"categorical_crossentropy", "sparse_categorical_crossentropy", "ce_dice", "dice"}
                & set(h.losses)
                and h.units == 1
                and h.role in ("class", "mask")
            ):
                self.error(
                    "E511",
                    f"categorical loss {'/'.join(h.losses)} on a single "
                    f"unit: one class has nothing to choose from",
                    "loss",
                    hint="use binary_crossentropy with a sigmoid unit, or one unit per class",
                )

    def check_metrics(self, task: str, metrics: list[str], dense: bool = False) -> None:
        # COCO AP scores the detections of dense heads, and only those have them
        fits = set(DENSE_METRICS) if dense else TASK_METRICS[task] - set(DENSE_METRICS)
        for m in metrics:
            if m not in fits:
                self.error(
                    "E513",
                    f"metric {m} does not fit a {task} network",
                    "metrics",
                    expected=", ".join(sorted(fits)),
                )

    def check_monitor(self, metrics: list[str]) -> None:
        es = self.spec.early_stopping
        if es is None:
            return
        names = ["loss", *(METRIC_ALIASES.get(m, m) for m in metrics)]
        known = [f"{split}_{n}" for split in ("val", "train") for n in names]
        if es.monitor not in known:
            self.error(
                "E516",
                f"early_stopping monitors '{es.monitor}', which training does not measure",
                "early_stopping",
                expected=", ".join(known),
                hint=did_you_mean(es.monitor, known),
            )

    def check_mixing(self, task: str) -> None:
        """mixup/cutmix blend two images and their class labels; a mask, a box or a
        reconstructed image has no such label to blend."""
        from ..data.augmentation import mixing_ops

        words = list(dict.fromkeys(mixing_ops(self.spec.augment)))
        for word in words:
            if task != "classify":
                self.error(
                    "E519",
                    f"augment {word} mixes class labels; this network is trained to {task}",
                    "augment",
                    hint=f"remove {word}, or use it on a classifier (one vector output)",
                )
        es = self.spec.early_stopping
        monitor = es.monitor if es else ""
        # mixed batches are scored by their loss only: no train_accuracy to watch
        if (
            words
            and task == "classify"
            and monitor.startswith("train_")
            and monitor != "train_loss"
        ):
            self.error(
                "E519",
                f"early_stopping monitors {monitor}, which training on "
                f"{'/'.join(words)} batches does not measure",
                "early_stopping",
                hint=f"monitor val_{monitor[6:]} or train_loss",
            )

    def check_objects(self, task: str, dense: bool) -> None:
        """mosaic moves every object of four images, and letterbox maps each image's objects
        in and out of the input: both need the object lists of dense detection heads."""
        from ..data.augmentation import mosaic_ops

        if not dense and mosaic_ops(self.spec.augment):
            self.error(
                "E525",
                f"augment mosaic places the objects of four images in one; this network is "
                f"trained to {task}, without a detect head",
                "augment",
                hint="remove mosaic, or use it on a network with a detect head",
            )
        if not dense and self.spec.resize != "stretch":
            self.error(
                "E525",
                f"resize {self.spec.resize} is for detection data (every object of images of "
                f"any shape); this network is trained to {task}, without a detect head",
                "resize",
                hint="remove the resize line (images are stretched to the input)",
            )

    def check_heads(self, task: str, heads: list[Head], num_classes: int | None) -> None:
        if num_classes is None:
            return
        for h in heads:
            if h.role == "dense" and object_classes(h.info) != num_classes:
                background = h.info.classes - object_classes(h.info)  # a softmax head's
                self.error(
                    "E515",
                    f"detection head {h.output} predicts {object_classes(h.info)} classes "
                    f"but the data has {num_classes}",
                    "loss",
                    hint=f"declare {num_classes + background} classes in the head"
                    f"{' (the background included)' if background else ''}, or load data "
                    f"with {object_classes(h.info)}",
                    span=self.model.node(h.output).span,
                )
            if h.role in ("class", "mask") and h.units > 1 and h.units != num_classes:
                self.error(
                    "E515",
                    f"output {h.output} has {h.units} units but the data has {num_classes} classes",
                    "loss",
                    hint=f"end the network in {num_classes} units, or load data with "
                    f"{h.units} classes",
                    span=self.model.node(h.output).span,
                )


def dense_heads(model: Model) -> list[HeadInfo]:
    """The model's dense detection heads (its `detect` layers)."""
    return list(head_infos(model))


def _read(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return None
