"""The `compile` and `transfer` sections: statement-shaped settings -> validated models.

compile {
  loss categorical_crossentropy
  optimizer sgd lr=0.01 momentum=0.9 nesterov=true weight_decay=5e-4
  metrics accuracy top5
  schedule step step_size=30 gamma=0.1 warmup=2
  early_stopping monitor=val_loss patience=5
  epochs 90; batch_size 256; validation_split 0.1; seed 0
}
transfer {
  source torchvision:resnet18
  freeze first 10          # or: all | none | until layer3 | pattern "layer1.*"
  head at=layer4 { gap; dropout 0.2; dense 10 softmax }
}
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from .errors import SpecError, did_you_mean
from .ir import CompileSpec, EarlyStopping, Freeze, Optimizer, Schedule, TransferSpec
from .ir import Span as IRSpan
from .pydantic_errors import setting_error
from .values import Word, describe, evaluate, is_tree, span_of

LOSSES = {
    "categorical_crossentropy": "classification, one-hot labels",
    "sparse_categorical_crossentropy": "classification, integer labels",
    "binary_crossentropy": "one or more independent yes/no outputs",
    "mse": "regression, mean squared error",
    "mae": "regression, mean absolute error",
    "smooth_l1": "box regression (Huber)",
    "iou": "box regression, 1 - IoU",
    "dice": "segmentation, 1 - Dice",
    "ce_dice": "segmentation, cross-entropy + Dice",
    "adversarial": "GAN generator against discriminator",
    "vae": "VAE reconstruction + KL divergence",
}
LOSS_ALIASES = {
    "cce": "categorical_crossentropy",
    "crossentropy": "categorical_crossentropy",
    "sparse_cce": "sparse_categorical_crossentropy",
    "bce": "binary_crossentropy",
    "huber": "smooth_l1",
    "l2": "mse",
    "l1": "mae",
}
METRICS = {
    "accuracy",
    "top5",
    "top_k",
    "mean_iou",
    "iou",
    "dice",
    "mae",
    "mse",
    "map",
    "map_50",
    "map_75",
}
RESIZES = ("stretch", "letterbox")  # cnnspec.data.imaging.FITS (the core imports no data code)
METRIC_ALIASES = {"acc": "accuracy", "top5_accuracy": "top5", "miou": "mean_iou"}


def _statements(body):
    for stmt in body.children:
        if not is_tree(stmt, "layer"):
            raise SpecError("E501", "settings are written 'key value ...'", span_of(stmt))
        word, *rest = stmt.children
        sub = rest.pop() if rest and is_tree(rest[-1], "body") else None
        pos, kw = [], {}
        for a in rest:
            if a.data == "kwarg":
                kw[str(a.children[0])] = (_plain(evaluate(a.children[1], {})), span_of(a))
            else:
                pos.append((_plain(evaluate(a.children[0], {})), span_of(a)))
        yield str(word), pos, kw, sub, span_of(stmt)


def _plain(value):
    if isinstance(value, Word):
        return value.text
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _model(cls: type[BaseModel], values: dict, span, what: str, spans: dict):
    try:
        return cls(**values)
    except ValidationError as exc:
        raise setting_error(exc, cls, span, what, spans) from None


def _raise(code, message, span, **kw):
    raise SpecError(code, message, span, **kw)


def _one(pos, word, span, kind=(int, float, str, bool)):
    if (
        len(pos) != 1
        or not isinstance(pos[0][0], kind)
        or (isinstance(pos[0][0], bool) and bool not in kind)
    ):
        _raise(
            "E502",
            f"'{word}' takes one value",
            pos[0][1] if pos else span,
            received=", ".join(describe(v) for v, _ in pos) or "nothing",
        )
    return pos[0][0]


def _name(value, table: dict, aliases: dict, what: str, span) -> str:
    value = aliases.get(value, value)
    if value not in table:
        _raise(
            "E503",
            f"unknown {what} '{value}'",
            span,
            expected=", ".join(sorted(table)),
            hint=did_you_mean(str(value), list(table) + list(aliases)),
        )
    return value


def compile_section(item) -> CompileSpec:
    values: dict = {}
    spans: dict = {}
    scalar = {
        "epochs": "epochs",
        "batch_size": "batch_size",
        "batch": "batch_size",
        "validation_split": "validation_split",
        "val_split": "validation_split",
        "seed": "seed",
        "mixed_precision": "mixed_precision",
    }
    for word, pos, kw, sub, span in _statements(item.children[0]):
        if word in values or (word in scalar and scalar[word] in values):
            _raise("E504", f"'{word}' is set twice", span)
        if word == "loss":
            names = [_name(v, LOSSES, LOSS_ALIASES, "loss", s) for v, s in pos]
            if not names:
                _raise("E502", "loss needs a name", span, expected=", ".join(sorted(LOSSES)))
            values["loss"] = names
            if "weights" in kw:
                w = kw.pop("weights")[0]
                values["loss_weights"] = list(w) if isinstance(w, tuple) else [w]
        elif word == "optimizer":
            name = _one(pos, word, span, (str,))
            values["optimizer"] = _model(
                Optimizer,
                {"name": name, **{k: v for k, (v, _) in kw.items()}},
                span,
                "optimizer",
                {k: s for k, (_, s) in kw.items()},
            )
            kw = {}
        elif word == "metrics":
            values["metrics"] = [
                _name(v, dict.fromkeys(METRICS), METRIC_ALIASES, "metric", s) for v, s in pos
            ]
        elif word == "schedule":
            name = _one(pos, word, span, (str,))
            values["schedule"] = _model(
                Schedule,
                {"name": name, **{k: v for k, (v, _) in kw.items()}},
                span,
                "schedule",
                {k: s for k, (_, s) in kw.items()},
            )
            kw = {}
        elif word in ("early_stopping", "early_stop"):
            values["early_stopping"] = _model(
                EarlyStopping,
                {k: v for k, (v, _) in kw.items()},
                span,
                "early_stopping",
                {k: s for k, (_, s) in kw.items()},
            )
            kw = {}
        elif word == "resize":  # how image files reach the input: data/object_samples.py
            values["resize"] = _name(
                _one(pos, word, span, (str,)), dict.fromkeys(RESIZES), {}, "resize", span
            )
            spans["resize"] = span
        elif word == "augment":
            values["augment"] = [
                str(v) if not isinstance(v, tuple) else "x".join(map(str, v)) for v, _ in pos
            ]
        elif word in scalar:
            values[scalar[word]] = _one(pos, word, span) if pos else True
            spans[scalar[word]] = span
        else:
            _raise(
                "E501",
                f"unknown compile setting '{word}'",
                span,
                expected="loss, optimizer, metrics, schedule, early_stopping, epochs, "
                "batch_size, validation_split, seed, mixed_precision, augment, resize",
                hint=did_you_mean(
                    word,
                    [
                        *scalar,
                        "loss",
                        "optimizer",
                        "metrics",
                        "schedule",
                        "early_stopping",
                        "augment",
                        "resize",
                    ],
                ),
            )
        if kw or sub is not None:
            key = next(iter(kw), None)
            _raise(
                "E502",
                f"'{word}' takes no " + (f"argument '{key}'" if key else "body"),
                kw[key][1] if key else span_of(sub),
            )
    values["span"] = IRSpan(**span_of(item).to_dict())
    return _model(CompileSpec, values, span_of(item), "compile", spans)


def transfer_section(item):
    values: dict = {}
    head_at, head_body = None, None
    for word, pos, kw, sub, span in _statements(item.children[0]):
        if word == "source":
            values["source"] = str(_one(pos, word, span, (str,)))
            values["source_span"] = IRSpan(**span.to_dict())
        elif word == "strict":
            values["strict"] = bool(_one(pos, word, span, (bool,))) if pos else True
        elif word == "partial":
            values["strict"] = False
        elif word == "freeze":
            values["freeze"] = _freeze(pos, kw, span)
            values["freeze_span"] = IRSpan(**span.to_dict())
            kw = {}
        elif word == "head":
            if sub is None:
                _raise("E502", "head needs a body: head { gap; dense 10 softmax }", span)
            if "at" in kw:
                head_at = str(kw.pop("at")[0])
            head_body, sub = sub, None
        else:
            _raise(
                "E501",
                f"unknown transfer setting '{word}'",
                span,
                expected="source, freeze, head, strict, partial",
                hint=did_you_mean(word, ["source", "freeze", "head", "strict", "partial"]),
            )
        if kw or sub is not None:
            key = next(iter(kw), None)
            _raise(
                "E502",
                f"'{word}' takes no " + (f"argument '{key}'" if key else "body"),
                kw[key][1] if key else span_of(sub),
            )
    if "source" not in values:
        _raise(
            "E505",
            "the transfer section needs a source",
            span_of(item),
            hint='source torchvision:resnet18 | keras:VGG16 | "path/to/weights"',
        )
    values["span"] = IRSpan(**span_of(item).to_dict())
    spec = _model(TransferSpec, values, span_of(item), "transfer", {})
    return spec, head_at, head_body


def _freeze(pos, kw, span) -> Freeze:
    values = {k: v for k, (v, _) in kw.items()}
    if "bn" in values:
        bn = values.pop("bn")
        if bn not in ("inference", "train"):
            _raise(
                "E502", "freeze bn= is 'inference' or 'train'", kw["bn"][1], received=describe(bn)
            )
        values["bn_inference"] = bn == "inference"
    words = [v for v, _ in pos]
    if not words:
        _raise(
            "E502",
            "freeze needs a strategy",
            span,
            expected='none, all, first N, until LAYER, pattern "GLOB"',
        )
    mode = words[0]
    if mode in ("none", "all") and len(words) == 1:
        values["mode"] = mode
    elif mode == "first" and len(words) == 2 and isinstance(words[1], int):
        values.update(mode="first", count=words[1])
    elif mode == "until" and len(words) == 2:
        values.update(mode="until", layer=str(words[1]))
    elif mode == "pattern" and len(words) == 2:
        values.update(mode="pattern", pattern=str(words[1]))
    else:
        _raise(
            "E502",
            f"unknown freeze strategy {' '.join(map(str, words))}",
            pos[0][1],
            expected='none, all, first N, until LAYER, pattern "GLOB"',
            hint=did_you_mean(str(mode), ["none", "all", "first", "until", "pattern"]),
        )
    return _model(Freeze, values, span, "freeze", {k: s for k, (_, s) in kw.items()})
