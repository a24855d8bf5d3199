"""Train, evaluate and predict from a compiled spec: the steps the CLI commands run.

result = train(model, "digits", backend="torch", out="runs/lenet", epochs=5)
metrics = evaluate(model, "runs/lenet/best.safetensors", "digits")
preds = predict(model, "runs/lenet/best.safetensors", ["a.png"])
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..data.imaging import read_images  # what predict reads
from ..ir import Model
from .driver import (
    Comm,
    Interrupted,
    Options,
    Trainer,
    augment_ops,
    eval_ops,
    fitted_ops,
    normalization,
)
from .driver import evaluate as _evaluate
from .pixels import augment_words, declares, eval_words, run_info, to_network
from .plan import TrainingPlan, make_plan

BACKENDS = ("torch", "keras")


def backend_for_weights(path: str) -> str:
    return "keras" if str(path).endswith(".h5") else "torch"


def make_backend(
    name: str, model: Model, plan: TrainingPlan, seed: int, comm: Comm | None = None, device=None
):
    """`device`: a torch.device or a --device string (torch only; None: auto)."""
    if name == "torch":
        from .devices import from_env
        from .torch_backend import TorchBackend

        if device is None or isinstance(device, str):
            device = from_env(device or "auto")
        return TorchBackend(model, plan, seed, comm, device)
    if name == "keras":
        from .keras_backend import KerasBackend

        return KerasBackend(model, plan, seed, comm=comm)
    raise ValueError(f"unknown backend {name!r}")


def data_options(plan: TrainingPlan, options: dict | None = None) -> dict:
    """Loader options the plan implies: a 1- or 2-unit mask head trains on binary masks."""
    options = dict(options or {})
    mask = plan.head("mask")
    if mask is not None and mask.units <= 2 and "binary" not in options:
        options["binary"] = True
    if plan.dense:  # the spec's, so that training, evaluate and predict fit images alike
        if "resize" in options:
            from ..data import DataError

            raise DataError(
                "resize is not a data option: predict must fit images as training did",
                hint="write `resize letterbox` (or stretch) in the spec's compile section",
            )
        options["resize"] = plan.compile.resize
    return options


def load_data(model: Model, source: str, seed: int = 0, options: dict | None = None):
    """(plan checked against the data, the whole dataset in memory)."""
    plan, samples = index_data(model, source, seed, options)
    return plan, samples.materialize()


def index_data(
    model: Model, source, seed: int = 0, options: dict | None = None, cache: str = "none"
):
    """(plan checked against the data, Samples: indexed, decoded per batch). `source` is a
    source name or path, or data from Python (cnnspec.data.foreign)."""
    from ..data import foreign, index

    plan = make_plan(model)
    if foreign.is_foreign(source):
        samples = foreign.samples(source, model.input_shape, plan.data_task)
        if cache == "ram":
            samples = samples.cache()
    else:
        samples = index(
            source,
            model.input_shape,
            plan.data_task,
            seed,
            cache=cache,
            **data_options(plan, options),
        )
    dense = plan.dense
    classes = len(samples.classes) if plan.task in ("classify", "segment") or dense else None
    plan = make_plan(model, classes)
    if dense:  # per-class AP under the data's names
        plan.class_names = list(samples.classes)
    return plan, samples


def train(
    model: Model,
    source,
    backend: str = "torch",
    out: str | Path | None = None,
    epochs: int | None = None,
    resume: bool = False,
    seed: int | None = None,
    batch_size: int | None = None,
    data_options_: dict | None = None,
    progress: bool | None = None,
    log=print,
    comm: Comm | None = None,
    device=None,
    workers: int | None = None,
    cache: str = "none",
) -> dict:
    """Fit the model on `source`; returns the result dict (also written to out/result.json).
    Raises driver.Interrupted on Ctrl-C after saving the last finished epoch.
    workers: decoding processes (None: cnnspec.data.loading.default_workers); cache:
    "none" (decode every epoch) or "ram" (decode once, keep uint8)."""
    comm = comm or Comm()
    plan, dataset = index_data(model, source, 0, data_options_, cache)
    for note in getattr(dataset, "notes", ()):  # what the object readers left out
        log(note)
    spec = plan.compile
    seed = spec.seed if seed is None else seed
    tr, va = dataset.split(spec.validation_split, seed)
    opts = Options(
        epochs=epochs or spec.epochs,
        batch_size=batch_size or spec.batch_size,
        seed=seed,
        out=Path(out) if out else None,
        resume=resume,
        augment=augment_words(model, list(spec.augment), log),
        progress=progress,
        workers=workers,
    )
    opts.log = log
    from ..data.augmentation import import_torchvision_first

    import_torchvision_first(augment_ops(opts.augment))  # before the Keras backend's TF
    if backend == "keras" and comm.world == 1:
        from .keras_cluster import cluster_comm

        comm = cluster_comm()  # under TF_CONFIG: MultiWorkerMirroredStrategy's workers
    be = make_backend(backend, model, plan, seed, comm, device)
    transfer = getattr(be, "transfer", None)
    transfer = transfer.summary() if transfer is not None else None
    if transfer:
        log(transfer["loaded"])
    # a declaring spec standardises inside the network; else the fitted normalisation,
    # which the weights files carry (cnnspec/weights/normalization.py)
    norm = None if declares(model) else normalization(fitted_ops(opts.augment, tr))
    be.normalize = norm
    from ..data.foreign import describe, is_foreign

    name = describe(source) if is_foreign(source) else str(source)
    info = {
        "backend": backend,
        "data": name,
        "seed": seed,
        "spec": model.source,
        "world": comm.world,
        "normalize": norm,
    }
    if plan.dense:  # predict names the classes it finds
        info["classes"] = list(plan.class_names)
    trainer = Trainer(be, plan, opts, comm, info)
    if resume and trainer.resume():
        log(f"resuming after epoch {trainer.start} of {opts.epochs}")
    elif resume:
        log(f"no checkpoint in {out}: starting from the first epoch")
    if resume and comm.world > 1:  # a process that starts elsewhere would wait forever
        starts = comm.sum({"start": float(trainer.start)})["start"]
        if starts != trainer.start * comm.world:
            raise ValueError(
                f"--resume: the processes found different checkpoints in {out} (this one: "
                f"after epoch {trainer.start}); the run folder must be on a disk every "
                "machine shares"
            )
    t0 = time.perf_counter()
    try:
        trainer.fit(tr, va)
    except Interrupted as stop:
        if trainer.writer:
            _finish(trainer, opts, plan, None, interrupted=True)
        stop.epochs_done = len(trainer.history)
        raise
    held_out = va if len(va) else tr
    ops = eval_ops(fitted_ops(opts.augment, tr))
    report: dict = {}  # dense detection heads: per-class AP of the latest measure
    measure = lambda: {
        k: float(v)
        for k, v in _evaluate(
            be, plan, held_out, opts.batch_size, comm, ops, workers, report
        ).items()
    }
    last = measure()  # the weights of the last epoch run
    kept = _kept_metrics(trainer, be, comm, measure, last)
    restored = trainer.restore_best()
    result = {
        "normalize": norm,
        "task": plan.task,
        "backend": backend,
        "data": name,
        **({"classes": info["classes"]} if plan.dense else {}),
        "best_epoch": trainer.best_epoch + 1,
        "epochs_run": len(trainer.history),
        "monitor": trainer.monitor,
        "stopped_early": trainer.stopped_early,
        "restored_best": restored,
        "held_out": "validation" if len(va) else "train",
        "n_train": len(tr),
        "n_val": len(va),
        "seed": seed,
        "processes": comm.world,
        "seconds": round(time.perf_counter() - t0, 2),
        # the kept checkpoint's (best.*: what `cnnspec evaluate` of it gives), or the
        # last epoch's where nothing was kept (no out folder)
        "metrics": kept if kept is not None else last,
        "kept": "best" if kept is not None else "last",
        "last_epoch": len(trainer.history),
        "last_epoch_metrics": last,
    }
    if report:  # of the kept checkpoint (measured last)
        result["per_class"] = report["per_class"]
    # where it ran: the torch device, or how many devices Keras mirrored over
    if getattr(be, "device", None) is not None:
        result["device"] = str(be.device)
    if getattr(be, "replicas", None) is not None:
        result["replicas"] = int(be.replicas)
    if transfer:
        result["transfer"] = transfer
    if trainer.writer:
        _finish(trainer, opts, plan, result)
    return result


def _kept_metrics(trainer: Trainer, be, comm: Comm, measure, last: dict) -> dict | None:
    """The held-out metrics of the checkpoint the run keeps as best.*: the last epoch's when
    that is the best one, else measured after loading it. None without checkpoints (no out
    folder), or where a process cannot read them (another machine's disk)."""
    out, best = trainer.opts.out, trainer.files["best"]
    if not out or not best:
        return None
    if trainer.best_epoch == len(trainer.history) - 1:
        return last
    paths = [str(Path(out) / f) for f in best]
    readable = comm.sum({"n": float(all(Path(p).is_file() for p in paths))})["n"]
    if readable < comm.world:
        return None
    be.load(paths, optimizer=False)
    return measure()


def _finish(
    trainer: Trainer,
    opts: Options,
    plan: TrainingPlan,
    result: dict | None,
    interrupted: bool = False,
) -> None:
    from .report import plot_curves, write_history, write_result

    out = opts.out
    write_history(out, trainer.history)
    plot_curves(out, trainer.history, f"{plan.task} ({trainer.info.get('backend')})")
    if result is not None:
        write_result(out, result)


def evaluate(
    model: Model,
    weights: str,
    source: str,
    backend: str | None = None,
    batch_size: int | None = None,
    split: str = "val",
    data_options_: dict | None = None,
    device=None,
    workers: int | None = None,
    settings=None,
) -> dict:
    """Metrics of saved weights on the held-out split of `source` ('val', or 'all');
    `settings` (detection.reading.Settings) for dense detection heads' inference."""
    plan, dataset = index_data(model, source, 0, data_options_)
    spec = plan.compile
    train_part = dataset
    seed = run_info(weights).get("seed", spec.seed)  # the split training made
    if spec.validation_split > 0:
        train_part, val = dataset.split(spec.validation_split, seed)
        dataset = val if split == "val" else dataset
    # the weights file's normalisation; for a file that does not say, a bare `normalize`
    # fitted to the training split, as in training
    words = eval_words(model, list(spec.augment), weights)
    ops = eval_ops(fitted_ops(list(spec.augment) if words is None else words, train_part))
    be = make_backend(
        backend or backend_for_weights(weights), model, plan, spec.seed, device=device
    )
    be.load([weights], optimizer=False)
    be.detection_settings = settings  # read by driver.run_epoch's meter
    report: dict = {}
    metrics = _evaluate(
        be, plan, dataset, batch_size or spec.batch_size, ops=ops, workers=workers, report=report
    )
    result = {"task": plan.task, "n": len(dataset), "metrics": metrics}
    if report:  # dense detection heads: COCO AP per class, and what was counted
        result["per_class"], result["counts"] = report["per_class"], report["counts"]
    return result


def predict(
    model: Model,
    weights: str,
    images: list[str],
    backend: str | None = None,
    top: int = 5,
    classes: list[str] | None = None,
    out_dir: str | None = None,
    device=None,
    overwrite: bool = False,
    settings=None,
) -> list:
    """Per image: top-k labels (classify), a mask PNG path (segment), a box (detect), every
    object (dense detection heads: _predict_objects). Mask files are named before anything
    runs (see mask_paths)."""
    plan = make_plan(model)
    if plan.dense:
        return _predict_objects(
            model, plan, weights, images, backend, classes, out_dir, device, overwrite, settings
        )
    masks = mask_paths(images, out_dir, overwrite) if plan.head("mask") is not None else None
    be = make_backend(backend or backend_for_weights(weights), model, plan, 0, device=device)
    be.load([weights], optimizer=False)
    x = to_network(model, read_images(images, model.input_shape), weights)
    outs = be.predict(x)
    heads = {h.role: o for h, o in zip(plan.heads, outs)}
    results = []
    for i, path in enumerate(images):
        item: dict = {"image": path}
        if "class" in heads and plan.task == "classify":
            prob = heads["class"][i]
            names = classes or [str(k) for k in range(len(prob))]
            order = np.argsort(-prob)[:top]
            item["top"] = [
                {
                    "label": names[k] if k < len(names) else str(k),
                    "index": int(k),
                    "probability": float(prob[k]),
                }
                for k in order
            ]
        if "mask" in heads:
            prob = heads["mask"][i]
            mask = (prob[..., 0] > 0.5) if prob.shape[-1] == 1 else prob.argmax(-1)
            item["mask"] = _save_mask(mask, masks[i])
            item["classes_present"] = sorted(int(v) for v in np.unique(mask))
        if "present" in heads:
            item["present"] = float(heads["present"][i][0])
        if "box" in heads:
            h, w = model.input_shape[:2]
            box = heads["box"][i]
            item["box"] = [float(v) for v in box]
            item["box_pixels"] = [
                float(box[0] * w),
                float(box[1] * h),
                float(box[2] * w),
                float(box[3] * h),
            ]
        results.append(item)
    return results


def _predict_objects(
    model, plan, weights, images, backend, classes, out_dir, device, overwrite, settings
) -> list:
    """Dense detection heads: JSON and a drawn copy per image (train/detections.py)."""
    from ..detection.reading import Settings
    from .detections import predict_objects, read_object_images

    drawn = mask_paths(images, out_dir, overwrite, suffix="boxes")
    be = make_backend(backend or backend_for_weights(weights), model, plan, 0, device=device)
    be.load([weights], optimizer=False)
    pixels, frames = read_object_images(images, model.input_shape, plan.compile.resize)
    x = to_network(model, pixels, weights)
    names = classes or run_info(weights).get("classes")
    return predict_objects(plan, be, x, images, drawn, names, settings or Settings(), frames)


def mask_paths(
    images: list[str], out_dir: str | None, overwrite: bool = False, suffix: str = "mask"
) -> list[Path]:
    """Where each image's mask goes: FOLDER/STEM.mask.png, FOLDER/STEM.2.mask.png, ... so
    that two inputs with one stem (a/x.png, b/x.jpg into one --out) never share a file.
    An existing file is not replaced unless `overwrite` (raises DataError naming it)."""
    from ..data import DataError

    taken: set[Path] = set()
    paths = []
    for image in images:
        folder = Path(out_dir) if out_dir else Path(image).parent
        stem, k = Path(image).stem, 1
        path = folder / f"{stem}.{suffix}.png"
        while path.resolve() in taken:
            k += 1
            path = folder / f"{stem}.{k}.{suffix}.png"
        taken.add(path.resolve())
        if path.exists() and not overwrite:
            raise DataError(
                f"{path} exists: not replaced",
                hint="remove it, choose another --out, or pass --overwrite",
            )
        paths.append(path)
    return paths


def _save_mask(mask: np.ndarray, path: Path) -> str:
    """The mask as an 8-bit PNG, class k -> grey level k * (255 // max(K-1, 1)); written
    atomically (a full disk leaves no empty file)."""
    from PIL import Image

    from ..outputs import write_with

    k = max(int(mask.max()), 1)
    pixels = Image.fromarray((mask.astype(np.int64) * (255 // k)).astype(np.uint8))
    write_with(path, lambda tmp: pixels.save(tmp, format="PNG"))
    return str(path)


def dumps(value) -> str:
    return json.dumps(value, indent=2, default=float)


def fit(spec, data, backend: str = "torch", out=None, epochs: int | None = None, **options):
    """Train a spec (a path, spec text, or a compiled Model) on `data` and return the result
    that `cnnspec train` writes to result.json (held-out metrics of the kept checkpoint and of
    the last epoch, best epoch, ...).

    data: a source name ("digits", "shapes") or path, as `cnnspec train --data` takes;
          (x, y) numpy arrays; a torch Dataset or DataLoader; or a tf.data.Dataset
          (cnnspec.data.foreign says how each is read).
    out:  the run folder (checkpoints, history.csv, curves.png), or None to write nothing.
    options: seed, batch_size, resume, progress, workers, cache, device, log (a print-like
          function; None for silence). Raises SpecErrors or cnnspec.data.DataError."""
    from ..compiler import compile_file, compile_text

    if isinstance(spec, Model):
        model = spec
    elif isinstance(spec, (str, Path)) and "\n" not in str(spec) and Path(spec).is_file():
        model = compile_file(spec)
    else:
        model = compile_text(str(spec))
    if options.get("log", print) is None:
        options["log"] = lambda *args, **kwargs: None
    if "progress" not in options:
        options["progress"] = False
    return train(model, data, backend=backend, out=out, epochs=epochs, **options)
