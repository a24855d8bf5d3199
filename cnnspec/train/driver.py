"""The training loop every backend shares: epochs, history, schedules, early stopping,
checkpoints, resume, progress, Ctrl-C. A backend only knows how to run one batch.

A backend (cnnspec.train.torch_backend / keras_backend) provides:
    weights_suffix                 '.safetensors' | '.weights.h5'
    set_lr(lr), start_epoch(epoch) (seeds its random streams from (seed, epoch))
    train_step(batch) / eval_step(batch) -> ({loss name: mean over the batch}, outputs)
        batch: numpy dict from cnnspec.data.loading; outputs: the heads' activated outputs,
        NHWC, in plan.heads order, as numpy (or what the backend's own meter takes); a
        loss may be a number or a scalar tensor (added up where it is, read once an epoch)
    batches(samples, batch_size, train=, seed=, epoch=, ops=, workers=) (optional) -> the
        epoch's batches from the framework's own loader, this process's shard only
    meter(plan) (optional) -> a metrics.Meter for its outputs (default: the numpy Meter)
    start_eval() (optional) -> called by every process before each held-out pass
    save(prefix) -> [files written under prefix], load(files, optimizer: bool)
A Comm sums numbers over processes (one process: nothing to do).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from .metrics import Meter
from .plan import TrainingPlan
from .schedule import LRSchedule, mode_of


class Comm:
    """One process. The torch backend has a subclass over torch.distributed."""

    rank, world = 0, 1

    def sum(self, values: dict) -> dict:
        return values

    def barrier(self) -> None:
        pass

    def stack(self, rows) -> np.ndarray:
        """Every process's (n, k) rows, rank 0's first, then rank 1's...: one sum of the
        row counts, then one of a zero slab in which each process fills its own stretch
        (adding zeros is exact: the rows arrive unchanged, as float64). Every process calls
        it at the same point, as sum() requires."""
        rows = np.asarray(rows, np.float64)
        if self.world == 1:
            return rows
        counts = np.zeros(self.world)
        counts[self.rank] = len(rows)
        counts = np.asarray(self.sum({"counts": counts})["counts"]).astype(np.int64)
        slab = np.zeros((int(counts.sum()), rows.shape[1]))
        if not len(slab):
            return slab
        start = int(counts[: self.rank].sum())
        slab[start : start + len(rows)] = rows
        return np.asarray(self.sum({"rows": slab.ravel()})["rows"]).reshape(slab.shape)


@dataclass
class Options:
    epochs: int
    batch_size: int
    seed: int = 0
    out: Path | None = None
    resume: bool = False
    augment: list[str] = field(default_factory=list)
    progress: bool | None = None  # None: a bar when stderr is a terminal
    log: Callable = print  # one line per epoch
    workers: int | None = None  # decoding processes (None: cnnspec.data.loading's default)


def augment_ops(words: list[str]) -> list[str]:
    """The compile section's `augment flip crop 4 normalize` arrives as words; the data
    package takes one string per op ("crop 4"), so arguments join the op before them."""
    ops: list[str] = []
    for word in map(str, words):
        if ops and not word[:1].isalpha():
            ops[-1] += f" {word}"
        else:
            ops.append(word)
    return ops


def fitted_ops(words: list[str], train) -> list | None:
    """The augmentation ops, a bare `normalize` fitted to the training images (all of
    them in memory, else a seeded subset streamed: Samples.channel_stats); mixup/cutmix
    told the number of classes their soft labels span."""
    from ..data import parse_ops
    from ..data.augmentation import needs_stats

    if not words:
        return None
    ops = parse_ops(augment_ops(words), classes=len(getattr(train, "classes", None) or []))
    if not needs_stats(ops):
        return ops
    if hasattr(train, "channel_stats"):
        return parse_ops(ops, stats=train.channel_stats())
    return parse_ops(ops, train.x)


def eval_ops(ops) -> list | None:
    """What evaluation applies: normalisation only (the random ops are for training)."""
    kept = [op for op in ops or [] if op.name == "normalize"]
    return kept or None


def normalization(ops) -> dict | None:
    """The fitted normalisation as JSON, for predict to apply to new images."""
    for op in ops or []:
        if op.name == "normalize":
            return {"mean": list(op.mean), "std": list(op.std)}
    return None


class Interrupted(Exception):
    """Ctrl-C during training, after the last finished epoch was saved."""

    def __init__(self, epoch: int):
        super().__init__(f"interrupted during epoch {epoch + 1}")
        self.epoch = epoch


def run_epoch(
    backend,
    plan: TrainingPlan,
    data,
    opts: Options,
    epoch: int,
    train: bool,
    comm: Comm,
    ops=None,
    bar_label: str = "",
    report: dict | None = None,
) -> dict[str, float]:
    """One pass over `data`; returns {loss names..., metric names...} over the whole set.
    Under several processes each one reads its own shard (feed)."""
    from ..data.augmentation import is_mixed

    if not train and hasattr(backend, "start_eval"):  # every process, at the same point
        backend.start_eval()
    meter = backend.meter(plan) if hasattr(backend, "meter") else Meter(plan)
    meter.train = train  # dense detection heads score AP on evaluation passes only
    meter.settings = getattr(backend, "detection_settings", None)  # evaluate --top-k
    sums: dict[str, float] = {}
    count = metered = 0
    stream = feed(backend, data, opts, epoch, train, comm, ops)
    total = len(stream) if hasattr(stream, "__len__") else math.ceil(len(data) / opts.batch_size)
    bar = _bar(total, bar_label, opts, comm) if train else None
    step = backend.train_step if train else backend.eval_step
    for batch in stream:
        losses, outputs = step(batch)
        n = len(batch["x"])
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v * n
        count += n
        if not is_mixed(batch):  # mixup/cutmix's soft labels: scored by the loss alone
            meter.update(outputs, _numpy(batch))
            metered += n
        if bar is not None:  # the bar reads the sums every batch; without it, once
            bar.update(1)
            bar.set_postfix(
                {k: f"{float(v) / count:.4f}" for k, v in sums.items() if k == "loss"}
                | _short(meter.result()),
                refresh=False,
            )
    if bar is not None:
        bar.close()
    sums = {k: float(v) for k, v in sums.items()}
    totals = comm.sum(
        {
            "_count": float(count),
            "_metered": float(metered),
            **sums,
            **{f"_m_{k}": v for k, v in meter.state().items()},
        }
    )
    count = max(totals["_count"], 1.0)
    meter.sums = {k[3:]: v for k, v in totals.items() if k.startswith("_m_")}
    meter.gather(comm)  # AP over every process's images, not one shard's
    result = {k: totals[k] / count for k in sums}
    if totals["_metered"] or not totals["_count"]:  # mixed batches only: no metrics
        result.update(meter.result())
    if report is not None and getattr(meter, "report", None):  # COCO AP in full
        report.update(meter.report)
    return result


def feed(backend, data, opts: Options, epoch: int, train: bool, comm: Comm, ops=None):
    """The batches of one pass over `data` (Samples, or an in-memory Dataset), decoded and
    augmented by the backend's loader (backend.batches: torch's DataLoader, tf.data for
    Keras) or, for a backend without one, in this process."""
    from ..data.dataset import Dataset
    from ..data.loading import plain_batches
    from ..data.samples import from_dataset

    samples = from_dataset(data) if isinstance(data, Dataset) else data
    kwargs = {"train": train, "seed": opts.seed, "epoch": epoch, "ops": ops}
    if hasattr(backend, "batches"):
        return backend.batches(samples, opts.batch_size, workers=opts.workers, **kwargs)
    if comm.world > 1:
        raise ValueError("several processes need a backend with its own loader")
    return plain_batches(samples, opts.batch_size, **kwargs)


def _numpy(batch: dict) -> dict:
    # a loader that pins memory for CUDA hands over CPU tensors; the metrics read numpy
    return {k: v if isinstance(v, np.ndarray) else v.numpy() for k, v in batch.items()}


def _short(metrics: dict) -> dict:
    return {k: f"{v:.4f}" for k, v in metrics.items()}


def _bar(total: int, label: str, opts: Options, comm: Comm):
    show = opts.progress if opts.progress is not None else sys.stderr.isatty()
    if not show or comm.rank != 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=label, file=sys.stderr, leave=False, dynamic_ncols=True)


class Trainer:
    """Fit `backend` on `train`, validating on `val` each epoch."""

    def __init__(
        self,
        backend,
        plan: TrainingPlan,
        opts: Options,
        comm: Comm | None = None,
        info: dict | None = None,
    ):
        self.backend, self.plan, self.opts = backend, plan, opts
        self.comm = comm or Comm()
        self.info = info or {}
        spec = plan.compile
        self.monitor = plan.monitor
        self.mode = mode_of(self.monitor)
        self.schedule = LRSchedule(spec.schedule, spec.optimizer.lr, opts.epochs, self.mode)
        self.history: list[dict] = []
        self.best: float | None = None
        self.best_epoch = -1
        self.bad_epochs = 0
        self.files: dict[str, list[str]] = {"last": [], "best": []}
        self.start = 0
        self.seconds = 0.0

    # --- state -----------------------------------------------------------------------------
    @property
    def writer(self) -> bool:
        return self.opts.out is not None and self.comm.rank == 0

    def resume(self) -> bool:
        """Load the last checkpoint of opts.out; False when there is none."""
        try:
            state = ckpt.read_state(self.opts.out) if self.opts.out else None
        except ValueError:
            raise ValueError(
                f"{Path(self.opts.out) / ckpt.STATE} is corrupt (not JSON); "
                "start again with --overwrite"
            ) from None
        if state is None:
            return False
        saved = state.get("backend")
        if saved and saved != self.info.get("backend", saved):
            raise ValueError(
                f"{self.opts.out} holds a {saved} run; resume it with --backend {saved}"
            )
        try:
            self.history = state["history"]
            self.best, self.best_epoch = state["best"], state["best_epoch"]
            self.bad_epochs = state["bad_epochs"]
            self.schedule.load(state["schedule"])
            self.files = state["files"]
            self.seconds = state.get("seconds", 0.0)
            self.start = state["epoch"] + 1
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{Path(self.opts.out) / ckpt.STATE} is damaged (no {exc}); "
                "start again with --overwrite"
            ) from None
        if hasattr(self.backend, "end_epoch"):  # transfer: unfrozen before the stop?
            self.backend.end_epoch(self.start)
        try:
            self.backend.load(
                [str(Path(self.opts.out) / f) for f in self.files["last"]], optimizer=True
            )
        except (KeyError, ValueError, RuntimeError) as exc:
            # another spec's run: torch's size-mismatch report, Keras' layer-count error
            spec = state.get("spec") or "another spec"
            detail = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())
            raise ValueError(
                f"{self.opts.out} holds a run of {spec}, whose weights do not "
                f"fit {self.info.get('spec') or 'this spec'} "
                f"({detail[:300]}); train into another --out, or replace the "
                "run with --overwrite"
            ) from None
        return True

    def _state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "history": self.history,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "schedule": self.schedule.state(),
            "files": self.files,
            "seconds": self.seconds,
            "monitor": self.monitor,
            **self.info,
        }

    def _save(self, epoch: int, improved: bool) -> None:
        out = Path(self.opts.out)
        files = self.backend.save(str(out / ckpt.epoch_prefix(epoch)))
        rel = [str(Path(f).relative_to(out)) for f in files]
        self.files["last"] = rel
        if improved:
            self.files["best"] = rel
        # last.* / best.* first: once checkpoint.json names an epoch, they hold it too
        ckpt.publish(out, self.files["last"], "last")
        if improved:
            ckpt.publish(out, self.files["best"], "best")
        ckpt.write_state(out, self._state(epoch))
        ckpt.prune(out, set(self.files["last"]) | set(self.files["best"]))
        from .report import write_history

        write_history(out, self.history)

    # --- the loop --------------------------------------------------------------------------
    def fit(self, train, val) -> dict:
        ops = fitted_ops(self.opts.augment, train)
        val_ops = eval_ops(ops)
        epoch = self.start
        try:
            for epoch in range(self.start, self.opts.epochs):
                if self._stopped():
                    break
                self._epoch(epoch, train, val, ops, val_ops)
        except KeyboardInterrupt:
            # Whatever was under way, the files must agree with the last saved checkpoint.
            if self.writer:
                state = ckpt.read_state(self.opts.out)
                self.history = state["history"] if state else []
            raise Interrupted(epoch) from None
        return self.history[-1] if self.history else {}

    def _epoch(self, epoch: int, train, val, ops, val_ops) -> None:
        lr = self.schedule.lr(epoch)
        self.backend.set_lr(lr)
        self.backend.start_epoch(epoch)
        t0 = time.perf_counter()
        tr = run_epoch(
            self.backend,
            self.plan,
            train,
            self.opts,
            epoch,
            True,
            self.comm,
            ops,
            f"epoch {epoch + 1}/{self.opts.epochs}",
        )
        va = (
            run_epoch(self.backend, self.plan, val, self.opts, epoch, False, self.comm, val_ops)
            if len(val)
            else {}
        )
        took = time.perf_counter() - t0
        self.seconds += took
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "seconds": round(took, 3),
            **{f"train_{k}": v for k, v in tr.items()},
            **{f"val_{k}": v for k, v in va.items()},
        }
        self.history.append(row)
        if hasattr(self.backend, "end_epoch"):  # transfer: unfreeze_at
            self.backend.end_epoch(epoch + 1)
        improved = self._track(row, epoch)
        self.schedule.observe(row.get(self.monitor))
        if self.writer:
            self._save(epoch, improved)
        if self.comm.rank == 0:
            self.opts.log(_line(row, self.opts.epochs))

    def _track(self, row: dict, epoch: int) -> bool:
        value = row.get(self.monitor, row.get("train_loss"))
        es = self.plan.compile.early_stopping
        delta = es.min_delta if es else 0.0
        if value is None or not math.isfinite(value):
            better = self.best is None
        elif self.best is None:
            better = True
        else:
            better = value < self.best - delta if self.mode == "min" else value > self.best + delta
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    def _stopped(self) -> bool:
        es = self.plan.compile.early_stopping
        # Keras' EarlyStopping: stop once `patience` epochs in a row did not improve.
        return es is not None and self.bad_epochs > 0 and self.bad_epochs >= es.patience

    @property
    def stopped_early(self) -> bool:
        return self._stopped() and len(self.history) < self.opts.epochs

    def restore_best(self) -> bool:
        """Load the best epoch's weights when early stopping asks for it."""
        es = self.plan.compile.early_stopping
        if not (
            es
            and es.restore_best
            and self.files["best"]
            and self.opts.out
            and self.best_epoch != len(self.history) - 1
        ):
            return False
        self.backend.load(
            [str(Path(self.opts.out) / f) for f in self.files["best"]], optimizer=False
        )
        return True


def _line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for k, v in row.items():
        if k in ("epoch", "seconds"):
            continue
        parts.append(f"{k} {v:.4g}" if k == "lr" else f"{k} {v:.4f}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


def evaluate(
    backend,
    plan: TrainingPlan,
    data,
    batch_size: int,
    comm: Comm | None = None,
    ops=None,
    workers: int | None = None,
    report: dict | None = None,
) -> dict[str, float]:
    """Loss and metrics of one pass over `data`; `report`, when given, receives the full
    COCO evaluation of dense detection heads (per-class AP, counts)."""
    opts = Options(epochs=1, batch_size=batch_size, progress=False, workers=workers)
    return run_epoch(backend, plan, data, opts, 0, False, comm or Comm(), ops, report=report)
