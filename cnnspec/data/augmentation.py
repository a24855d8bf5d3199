"""Batch augmentation in numpy, parsed from short strings such as "crop 4".

Geometric ops move masks and boxes with the pixels, so one op list serves
classification, detection and segmentation. `mixup ALPHA` / `cutmix ALPHA` (classification
only) mix each training batch with itself rolled by one, through torchvision.transforms.v2's
MixUp / CutMix, after the per-image ops; the labels become soft, (N, K) float32 rows that
sum to 1 (`is_mixed`). With both listed, each batch gets one of the two, at even odds, as
torchvision's reference training recipe does (v2.RandomChoice).

`mosaic P` (detection with dense heads only) replaces each image, with probability P, by
four images of its batch around a random centre (Bochkovskiy et al. 2020, YOLOv4, as
YOLOv5 and YOLOX build it): torchvision v2 has no mosaic, so the placement is numpy here and
the resizing Pillow's (imaging.resize); boxes move and are clipped with their tiles, and
objects left too small are dropped and counted. It runs where it is listed, so list it
first and follow it with `affine` (its scale range) as YOLOv5 does.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import numpy as np

from cnnspec.data import DataError

OPS_HINT = (
    "use flip, vflip, crop N (pad N pixels, crop back at random), resized_crop MIN_SCALE, "
    "rotate DEGREES, affine DEGREES SHIFT [SCALE], jitter STRENGTH, "
    "normalize, or normalize MEAN STD (numbers or comma lists, one per channel); "
    "for classifiers mixup ALPHA, cutmix ALPHA (Beta(ALPHA, ALPHA) mixing weights); "
    "for detect heads mosaic P (the probability per image)"
)
# Done with torchvision.transforms.v2, which moves masks and boxes with the pixels:
# (word, number of arguments, bounds for each argument)
TORCHVISION_OPS = {
    "resized_crop": (0.01, 1.0),
    "rotate": (0.0, 180.0),
    # DEGREES SHIFT [SCALE]: the scale factor is drawn from [1 - SCALE, 1 + SCALE]
    "affine": ((0.0, 180.0), (0.0, 0.5), (0.0, 0.9)),
    "jitter": (0.0, 1.0),
}
# Done once per batch, on the whole batch and its labels (torchvision v2.MixUp / v2.CutMix):
# the Beta distribution's alpha, which must be positive.
MIXING_OPS = {"mixup": (0.01, 100.0), "cutmix": (0.01, 100.0)}
OPTIONAL = {"affine": 1}  # trailing arguments that may be left out
# Done on the whole batch, its object lists widened to four images' (mosaic P: probability)
OBJECT_OPS = {"mosaic": (0.0, 1.0)}
RANDOM_OPS = ("flip", "vflip", "crop", *TORCHVISION_OPS, *MIXING_OPS, *OBJECT_OPS)
# YOLOv5's box_candidates: an object clipped by the mosaic is kept when at least 2 pixels
# wide and high and at least a tenth of its placed area is still in the picture
MIN_SIDE, MIN_VISIBLE = 2.0, 0.1


@dataclass(frozen=True)
class Op:
    """One parsed augmentation. `pad` is for crop; `mean`/`std` for normalize (None:
    computed from each batch)."""

    name: str
    pad: int = 0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    args: tuple[float, ...] = ()  # the torchvision ops' numbers
    classes: int = 0  # mixup/cutmix: the width of the soft labels (parse_ops' classes=)


def parse_ops(ops, x: np.ndarray | None = None, stats=None, classes: int = 0) -> list[Op]:
    """Parse op strings (Op objects pass through). A bare "normalize" takes its
    per-channel mean and std from `x` when given, or from `stats` = (mean, std) (what
    Samples.channel_stats measures without holding the images): pass the training
    images' so training and validation batches are normalised alike. `classes`: the
    number of classes, which mixup/cutmix's soft labels span (at least 2: a one-unit
    yes/no head reads the second column)."""
    if isinstance(ops, (str, Op)):
        ops = [ops]
    parsed = [op if isinstance(op, Op) else _parse_one(op) for op in ops]
    names = [op.name for op in parsed]
    if "mosaic" in names and "normalize" in names[: names.index("mosaic")]:
        # its grey canvas and Pillow's resize are for pixels in [0, 1]
        raise DataError("augment mosaic must come before normalize", hint=OPS_HINT)
    if x is not None and stats is None and needs_stats(parsed):
        stats = _channel_stats(x)
    if stats is not None:
        parsed = [_fit(op, stats) for op in parsed]
    if classes:
        parsed = [
            dataclasses.replace(op, classes=max(int(classes), 2)) if op.name in MIXING_OPS else op
            for op in parsed
        ]
    return parsed


def is_mixed(batch: dict) -> bool:
    """Whether mixup/cutmix made the batch's labels soft: (N, K) rows, not class indices.
    Accuracy has no meaning against them; the training loop scores such batches by their
    loss only."""
    return np.ndim(batch.get("y")) == 2


def mixing_ops(words) -> list[str]:
    """The mixup/cutmix words among an `augment` setting's (for the plan's task check)."""
    return [str(w) for w in words or [] if str(w).lower() in MIXING_OPS]


def mosaic_ops(words) -> list[str]:
    """The mosaic words among an `augment` setting's (for the plan's task check)."""
    return [str(w) for w in words or [] if str(w).lower() in OBJECT_OPS]


def import_torchvision_first(ops) -> None:
    """Import torchvision now when `ops` will use it: in one process it must come before
    TensorFlow (the other order segfaults), and the Keras backend imports TensorFlow first."""
    if any(op.name in TORCHVISION_OPS or op.name in MIXING_OPS for op in parse_ops(ops or [])):
        import torchvision  # noqa: F401


def needs_stats(ops: list[Op]) -> bool:
    """Whether a bare `normalize` among `ops` waits for the training images' statistics."""
    return any(op.name == "normalize" and op.mean is None for op in ops)


def _parse_one(text: str) -> Op:
    words = str(text).split()
    name, args = (words[0].lower(), words[1:]) if words else ("", [])
    if name in ("flip", "vflip") and not args:
        return Op(name)
    if name == "crop" and len(args) == 1 and args[0].isdigit():
        return Op(name, pad=int(args[0]))
    if name in TORCHVISION_OPS or name in MIXING_OPS or name in OBJECT_OPS:
        return Op(name, args=_bounded(name, args, text))
    if name in ("normalize", "normalise") and len(args) in (0, 2):
        if not args:
            return Op("normalize")
        return Op("normalize", mean=_numbers(args[0], text), std=_numbers(args[1], text))
    raise DataError(f"cannot understand augmentation {text!r}", hint=OPS_HINT)


def _bounded(name: str, args: list[str], text: str) -> tuple[float, ...]:
    bounds = {**TORCHVISION_OPS, **MIXING_OPS, **OBJECT_OPS}[name]
    bounds = bounds if isinstance(bounds[0], tuple) else (bounds,)
    least = len(bounds) - OPTIONAL.get(name, 0)
    if not least <= len(args) <= len(bounds):
        counted = f"{least} to {len(bounds)}" if least < len(bounds) else f"{len(bounds)}"
        raise DataError(f"augmentation {text!r} takes {counted} number(s)", hint=OPS_HINT)
    values = []
    for arg, (lo, hi) in zip(args, bounds):
        try:
            value = float(arg)
        except ValueError:
            raise DataError(
                f"augmentation {text!r}: {arg!r} is not a number", hint=OPS_HINT
            ) from None
        if not lo <= value <= hi:
            raise DataError(
                f"augmentation {text!r}: {arg} is outside [{lo:g}, {hi:g}]", hint=OPS_HINT
            )
        values.append(value)
    return tuple(values)


def _numbers(text: str, op: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise DataError(
            f"augmentation {op!r}: {text!r} is not a number list", hint=OPS_HINT
        ) from None


def _fit(op: Op, stats) -> Op:
    if op.name != "normalize" or op.mean is not None:
        return op
    mean, std = (np.asarray(v, dtype=np.float64) for v in stats)
    return Op("normalize", mean=tuple(mean.tolist()), std=tuple(std.tolist()))


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    # A constant channel has std 0; flooring it keeps the division finite.
    return flat.mean(axis=0), np.maximum(flat.std(axis=0), 1e-6)


def augment(x: np.ndarray, ops, rng, train: bool = True) -> np.ndarray:
    """Augment a batch of (N, H, W, C) images; returns a new array. With train=False
    only the deterministic ops (normalize) run, as for validation."""
    return augment_batch({"x": x}, ops, rng, train)["x"]


def augment_batch(batch: dict, ops, rng, train: bool = True) -> dict:
    """Augment a batch dict with "x" and optional "masks" (N, H, W), "boxes" (N, 4)
    and "present" (N,). Returns a new dict; other keys pass through. A crop that
    cuts an object's box away entirely marks that image present = 0."""
    rng = np.random.default_rng(rng)
    out = {
        key: (value.copy() if isinstance(value, np.ndarray) else value)
        for key, value in batch.items()
    }
    parsed = parse_ops(ops)
    for op in parsed:
        if (op.name in RANDOM_OPS and not train) or op.name in MIXING_OPS:
            continue
        _APPLY[op.name](op, out, rng)
    mixing = [op for op in parsed if op.name in MIXING_OPS]
    if mixing and train:  # per batch, after the per-image ops: the mix of augmented images
        _mix(mixing, out, rng)
    return out


def _flip(op: Op, batch: dict, rng) -> None:
    move(op, batch, draw_moves(op, len(batch["x"]), rng))


def _crop(op: Op, batch: dict, rng) -> None:
    move(op, batch, draw_moves(op, len(batch["x"]), rng))


def draw_moves(op: Op, n: int, rng) -> np.ndarray:
    """The random part of a pixel-moving op (flip, vflip, crop) for `n` images, drawn from
    `rng` as augment_batch draws it: flip/vflip which images (bool (n,)), crop the (dy, dx)
    offsets into the padded image (int (n, 2)). Apart from `move` so that the Keras loader
    draws here and moves the pixels in TF (tf_images.py)."""
    if op.name in ("flip", "vflip"):
        return rng.random(n) < 0.5
    if op.name == "crop":
        return rng.integers(0, 2 * op.pad + 1, size=(n, 2))
    raise ValueError(f"{op.name} does not move pixels")


def move(op: Op, batch: dict, params: np.ndarray, size: tuple[int, int] | None = None) -> None:
    """Apply a pixel-moving op with the parameters `draw_moves` drew, in place, to whatever
    `batch` holds: "x", "masks", "boxes", "object_boxes". `size` (H, W) is the images' when
    the batch has no "x" (the Keras loader moves only the targets here)."""
    height, width = size if size is not None else batch["x"].shape[1:3]
    if op.name == "crop":
        _move_crop(op.pad, batch, params, height, width)
        return
    axis = 2 if op.name == "flip" else 1  # image axis: W for flip, H for vflip
    chosen = np.flatnonzero(params)
    for key in ("x", "masks"):
        if batch.get(key) is not None:
            batch[key][chosen] = np.flip(batch[key][chosen], axis=axis)
    if batch.get("boxes") is not None:
        lo, hi = (0, 2) if op.name == "flip" else (1, 3)
        boxes = batch["boxes"]
        rows = chosen[boxes[chosen, hi] > boxes[chosen, lo]]  # leave empty (all-zero) boxes alone
        boxes[rows, lo], boxes[rows, hi] = 1.0 - boxes[rows, hi], 1.0 - boxes[rows, lo]
    if batch.get("object_boxes") is not None:
        _flip_objects(batch, chosen, *((0, 2) if op.name == "flip" else (1, 3)))


def _move_crop(pad: int, batch: dict, offsets: np.ndarray, height: int, width: int) -> None:
    # Zero padding, as in the usual CIFAR recipe; masks pad with background (0).
    for key in ("x", "masks"):
        if batch.get(key) is not None:
            batch[key] = _shifted(batch[key], offsets, pad)
    if batch.get("boxes") is not None:
        _shift_boxes(batch, offsets, pad, height, width)
    if batch.get("object_boxes") is not None:
        shift = np.stack([(pad - offsets[:, 1]) / width, (pad - offsets[:, 0]) / height], 1)
        _keep_visible(batch, batch["object_boxes"] + np.tile(shift, 2)[:, None, :])


def _shifted(a: np.ndarray, offsets: np.ndarray, pad: int) -> np.ndarray:
    height, width = a.shape[1:3]
    widths = [(0, 0), (pad, pad), (pad, pad)] + [(0, 0)] * (a.ndim - 3)
    padded = np.pad(a, widths)
    return np.stack(
        [padded[i, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(offsets)]
    )


def _shift_boxes(batch: dict, offsets: np.ndarray, pad: int, height: int, width: int) -> None:
    boxes = batch["boxes"]
    had_box = boxes[:, 2] > boxes[:, 0]
    shift = np.stack([(pad - offsets[:, 1]) / width, (pad - offsets[:, 0]) / height], axis=1)
    moved = np.clip(boxes + np.tile(shift, 2), 0.0, 1.0).astype(np.float32)
    visible = had_box & (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
    batch["boxes"] = np.where(visible[:, None], moved, 0.0).astype(np.float32)
    if batch.get("present") is not None:
        batch["present"] = np.where(had_box & ~visible, 0.0, batch["present"]).astype(np.float32)


def _normalize(op: Op, batch: dict, rng) -> None:
    x = batch["x"]
    mean, std = (op.mean, op.std) if op.mean is not None else _channel_stats(x)
    mean, std = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    if mean.size not in (1, x.shape[-1]) or std.size not in (1, x.shape[-1]):
        raise DataError(
            f"normalize has {mean.size} means and {std.size} stds for {x.shape[-1]}-channel images",
            hint="give one value, or one per channel",
        )
    if np.any(std <= 0):
        raise DataError("normalize std must be positive", hint=OPS_HINT)
    batch["x"] = ((x - mean) / std).astype(np.float32)


def _torchvision(op: Op, batch: dict, rng) -> None:
    """One torchvision.transforms.v2 op per image, its masks (tv_tensors.Mask, nearest) and
    box (tv_tensors.BoundingBoxes, the box around the moved corners, clamped) moving with
    it; a box moved out of the picture marks its image present = 0. torch's random stream
    is forked and seeded from `rng`, so the draw is the (seed, epoch, row)'s and the
    training process's own stream is left alone."""
    import torch
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    transform = _transform(op, v2, batch["x"].shape[-1])
    height, width = batch["x"].shape[1:3]
    for i in range(len(batch["x"])):
        item = {
            "image": tv_tensors.Image(
                torch.from_numpy(np.ascontiguousarray(batch["x"][i])).permute(2, 0, 1)
            )
        }
        if batch.get("masks") is not None:
            item["mask"] = tv_tensors.Mask(
                torch.from_numpy(np.ascontiguousarray(batch["masks"][i]))
            )
        had_box = batch.get("boxes") is not None and batch["boxes"][i, 2] > batch["boxes"][i, 0]
        if had_box:
            scale = np.array([width, height, width, height], np.float32)
            item["boxes"] = tv_tensors.BoundingBoxes(
                torch.from_numpy(batch["boxes"][i : i + 1] * scale),
                format="XYXY",
                canvas_size=(height, width),
            )
        objects = _object_item(batch, i, item, tv_tensors, torch, (height, width))
        seed = int(rng.integers(2**62))
        with _TORCH_RNG, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = transform(item)
        if objects is not None:
            _moved_objects(batch, i, objects, out["objects"], v2, (height, width))
        batch["x"][i] = out["image"].permute(1, 2, 0).clamp(0, 1).numpy()
        if "mask" in out:
            batch["masks"][i] = out["mask"].numpy()
        if had_box:
            box = v2.functional.clamp_bounding_boxes(out["boxes"]).numpy()[0] / scale
            seen = box[2] > box[0] and box[3] > box[1]
            batch["boxes"][i] = box if seen else 0.0
            if not seen and batch.get("present") is not None:
                batch["present"][i] = 0.0


# torch's default generator is one per process, and tf.data runs batches on threads: one
# image's seeded draw at a time
_TORCH_RNG = threading.Lock()


def _mix(ops: list[Op], batch: dict, rng) -> None:
    """torchvision's v2.MixUp / v2.CutMix (one of the two at random when both are given) on
    the whole batch: images NCHW, labels class indices -> soft labels. Seeded like
    _torchvision, from `rng`: the (seed, epoch, rows)' draw, torch's own stream untouched."""
    import torch
    from torchvision.transforms import v2

    classes = ops[0].classes
    if classes < 2:
        raise DataError(
            f"{ops[0].name} needs the number of classes for its soft labels",
            hint="parse the ops with parse_ops(..., classes=K)",
        )
    y = np.asarray(batch["y"])
    if y.ndim != 1:
        raise DataError(f"{ops[0].name} mixes class labels, one per image; got shape {y.shape}")
    kinds = {"mixup": v2.MixUp, "cutmix": v2.CutMix}
    choices = [kinds[op.name](alpha=op.args[0], num_classes=classes) for op in ops]
    transform = choices[0] if len(choices) == 1 else v2.RandomChoice(choices)
    images = torch.from_numpy(np.ascontiguousarray(batch["x"], dtype=np.float32))
    labels = torch.from_numpy(y.astype(np.int64))
    seed = int(rng.integers(2**62))
    with _TORCH_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mixed, soft = transform(images.permute(0, 3, 1, 2), labels)
    batch["x"] = np.ascontiguousarray(mixed.permute(0, 2, 3, 1).numpy(), dtype=np.float32)
    batch["y"] = soft.numpy().astype(np.float32)


def _transform(op: Op, v2, channels: int):
    if op.name == "resized_crop":  # the image's own size: the network's input
        return _SameSize(v2, op.args[0])
    if op.name == "rotate":
        return v2.RandomRotation(op.args[0])
    if op.name == "affine":
        scale = (1.0 - op.args[2], 1.0 + op.args[2]) if len(op.args) > 2 else None
        return v2.RandomAffine(op.args[0], translate=(op.args[1], op.args[1]), scale=scale)
    s = op.args[0]  # jitter: brightness, contrast (and saturation, hue for colour)
    return v2.ColorJitter(s, s, s, min(s, 0.5) / 2) if channels == 3 else v2.ColorJitter(s, s)


class _SameSize:
    """v2.RandomResizedCrop back to the image's own size (built on first use)."""

    def __init__(self, v2, min_scale: float):
        self.v2, self.min_scale = v2, min_scale

    def __call__(self, item):
        size = tuple(item["image"].shape[-2:])
        return self.v2.RandomResizedCrop(size, scale=(self.min_scale, 1.0), antialias=True)(item)


def _mosaic(op: Op, batch: dict, rng) -> None:
    """YOLOv4's mosaic (Bochkovskiy et al. 2020) in YOLOv5's form: with probability P, image i
    becomes a canvas of its own size holding four images of the batch (i, then three others
    drawn at random), each shrunk to half size by Pillow, their inner corners meeting at a
    centre drawn uniformly from the middle half of each axis (YOLOv5's 2s canvas with its
    centre in [s/2, 3s/2], halved). Canvas no tile covers is PAD_GREY, as in YOLOv5. Objects
    move with their tile and are clipped to the canvas; those left under MIN_SIDE pixels or
    under MIN_VISIBLE of their placed area are dropped and counted in object_dropped. The
    object lists widen to 4K columns (tile t's objects in columns tK..(t+1)K) on every
    training batch, so that their shape is one per run. All draws are made whatever P
    selects, so the later ops' draws depend on the batch's key only."""
    from cnnspec.data.imaging import PAD_GREY, resize

    if batch.get("object_boxes") is None or batch.get("masks") is not None:
        raise DataError(
            "augment mosaic moves every object of four images; this data has no object lists",
            hint="use mosaic on a network with a detect head",
        )
    x = batch["x"]
    n, height, width = x.shape[:3]
    chosen = np.flatnonzero(rng.random(n) < op.args[0])
    others = (np.arange(n)[:, None] + 1 + rng.integers(0, max(n - 1, 1), size=(n, 3))) % n
    centres = np.round(rng.uniform(0.25, 0.75, size=(n, 2)) * [height, width]).astype(int)
    k = batch["object_classes"].shape[1]
    wide = {
        "object_boxes": np.zeros((n, 4 * k, 4), np.float32),
        "object_classes": np.full((n, 4 * k), -1, np.int64),
        "object_crowd": np.zeros((n, 4 * k), bool),
    }
    for key, value in wide.items():
        value[:, :k] = batch[key]
    if len(chosen):
        half = (max(1, height // 2), max(1, width // 2))
        used = np.unique(np.concatenate([chosen, others[chosen].ravel()]))
        tiles = dict(zip(used.tolist(), resize(x[used], half)))  # before any canvas is drawn
        for i in chosen:
            canvas = np.full(x.shape[1:], PAD_GREY / 255.0, np.float32)
            for t, j in enumerate((int(i), *others[i].tolist())):
                top = centres[i, 0] - half[0] * (t < 2)
                left = centres[i, 1] - half[1] * (t % 2 == 0)
                _paste(canvas, tiles[j], top, left)
                _place_objects(batch, wide, (i, t, j), (top, left), half, (height, width))
            x[i] = canvas
    batch.update(wide)
    batch["present"] = (wide["object_classes"] >= 0).any(1).astype(np.float32)


def _paste(canvas: np.ndarray, tile: np.ndarray, top: int, left: int) -> None:
    """tile into canvas with its top-left corner at (top, left), clipped to the canvas."""
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + tile.shape[0], canvas.shape[0]), min(left + tile.shape[1], canvas.shape[1])
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = tile[y0 - top : y1 - top, x0 - left : x1 - left]


def _place_objects(batch, wide, where, corner, half, size) -> None:
    """Image j's objects as tile t of mosaic i: moved, clipped, the too small dropped."""
    i, t, j = where
    (top, left), (height, width) = corner, size
    real = batch["object_classes"][j] >= 0
    placed = batch["object_boxes"][j].astype(np.float64) * ([half[1], half[0]] * 2)
    placed += [left, top, left, top]
    clipped = np.clip(placed, 0, [width, height, width, height])
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = (placed[:, 2] - placed[:, 0]) * (placed[:, 3] - placed[:, 1])
    keep = real & (w >= MIN_SIDE) & (h >= MIN_SIDE) & (w * h >= MIN_VISIBLE * area)
    cols = slice(t * len(real), (t + 1) * len(real))
    wide["object_boxes"][i, cols] = np.where(
        keep[:, None], clipped / [width, height, width, height], 0.0
    )
    wide["object_classes"][i, cols] = np.where(keep, batch["object_classes"][j], -1)
    wide["object_crowd"][i, cols] = keep & batch["object_crowd"][j]
    batch["object_dropped"][i] += int((real & ~keep).sum())


_APPLY = {
    "flip": _flip,
    "vflip": _flip,
    "crop": _crop,
    "normalize": _normalize,
    "mosaic": _mosaic,
    **{name: _torchvision for name in TORCHVISION_OPS},
}


# --- every object of an image (dense detection heads: object_boxes, normalised xyxy) -----------
# An object moved wholly out of the picture becomes padding (class -1) and is counted in
# object_dropped, which training reports per epoch: nothing leaves silently.
def _flip_objects(batch: dict, chosen: np.ndarray, lo: int, hi: int) -> None:
    boxes = batch["object_boxes"]
    real = batch["object_classes"][chosen] >= 0
    flipped = boxes[chosen].copy()
    flipped[..., lo], flipped[..., hi] = 1.0 - boxes[chosen][..., hi], 1.0 - boxes[chosen][..., lo]
    boxes[chosen] = np.where(real[..., None], flipped, boxes[chosen])


def _keep_visible(batch: dict, moved: np.ndarray, rows=slice(None)) -> None:
    """Clip moved boxes to the picture; those left without area are dropped and counted."""
    moved = np.clip(moved, 0.0, 1.0).astype(np.float32)
    classes = batch["object_classes"][rows]
    real = classes >= 0
    seen = (moved[..., 2] > moved[..., 0]) & (moved[..., 3] > moved[..., 1])
    batch["object_boxes"][rows] = np.where((real & seen)[..., None], moved, 0.0)
    batch["object_classes"][rows] = np.where(seen, classes, -1)
    batch["object_dropped"][rows] += (real & ~seen).sum(-1)


def _object_item(batch, i, item, tv_tensors, torch, size):
    """Image i's objects as one tv_tensors.BoundingBoxes in pixels (item["objects"])."""
    if batch.get("object_boxes") is None:
        return None
    real = np.flatnonzero(batch["object_classes"][i] >= 0)
    height, width = size
    scale = np.array([width, height, width, height], np.float32)
    item["objects"] = tv_tensors.BoundingBoxes(
        torch.from_numpy(np.ascontiguousarray(batch["object_boxes"][i, real] * scale)),
        format="XYXY",
        canvas_size=size,
    )
    return real


def _moved_objects(batch, i, real, moved, v2, size) -> None:
    height, width = size
    scale = np.array([width, height, width, height], np.float32)
    boxes = v2.functional.clamp_bounding_boxes(moved).numpy() / scale
    whole = batch["object_boxes"][i].copy()
    whole[real] = boxes
    _keep_visible(batch, whole[None], slice(i, i + 1))
