"""Metrics in numpy, from the heads' activated outputs: the same code for every backend.

Each metric is a running sum over batches (`Meter.update` then `Meter.result`), so a whole
epoch is scored exactly, whatever the batch size or the number of processes.
    accuracy   classify: top-1; segment: pixel accuracy; detect: present at 0.5
    top5/top_k classify: true class among the 5 highest
    dice       segment: 2|P and T| / (|P| + |T|) per foreground class, summed over the
               epoch, then the mean over classes (Milletari et al. 2016, V-Net)
    mean_iou   segment: |P and T| / |P or T| per class, mean over the classes that occur;
               detect: mean box IoU over images that hold an object
    mae / mse  detect: box coordinates; generate: pixels
    map, map_50, map_75
               detect with dense heads: COCO box AP (pycocotools, detection.evaluate) of the
               decoded, NMS-filtered detections of the whole pass, against every object;
               kept in full (per-class AP, counts) as Meter.report. Scored on evaluation
               passes only (a training pass would pay NMS for a moving target); every pass
               reports objects_dropped, the objects augmentation moved out of the picture
"""

from __future__ import annotations

import numpy as np

from .plan import METRIC_ALIASES as ALIASES
from .plan import TrainingPlan


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes [x0, y0, x1, y1], row by row."""
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda r: np.clip(r[:, 2] - r[:, 0], 0, None) * np.clip(r[:, 3] - r[:, 1], 0, None)
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


class Meter:
    """Running sums for the plan's metrics over one epoch (or one evaluation)."""

    def __init__(self, plan: TrainingPlan, framework: str = "torch"):
        self.plan = plan
        self.names = [ALIASES.get(m, m) for m in plan.metrics]
        self.sums: dict[str, np.ndarray | float] = {}
        self.framework = framework  # whose NMS kernel a dense head's detections use
        self.train = False  # the driver sets it: no AP on training passes
        self.settings = None  # detection.reading.Settings (None: its defaults)
        self.truths: list = []
        self.detections: list = []
        self.report: dict | None = None

    def _add(self, key: str, value) -> None:
        # scalars stay Python numbers (cheap per batch); per-class counts are float64 arrays
        value = float(value) if np.ndim(value) == 0 else np.asarray(value, dtype=np.float64)
        self.sums[key] = self.sums.get(key, 0) + value

    def update(self, outputs: list[np.ndarray], batch: dict) -> None:
        """outputs: the heads' activated outputs (probabilities), in plan.heads order."""
        for head, out in zip(self.plan.heads, outputs):
            getattr(self, f"_{head.role}")(np.asarray(out), batch)

    def _class(self, prob, batch) -> None:
        y = batch["y"]
        if prob.shape[-1] == 1:  # one sigmoid unit: yes/no
            pred = (prob[:, 0] > 0.5).astype(np.int64)
            self._add("correct", np.sum(pred == y))
            self._add("top5", np.sum(pred == y))
        else:
            self._add("correct", np.count_nonzero(prob.argmax(-1) == y))
            if "top5" in self.names:
                k = min(5, prob.shape[-1])
                top = np.argpartition(-prob, k - 1, axis=-1)[:, :k]
                self._add("top5", np.sum(np.any(top == y[:, None], axis=1)))
        self._add("n", len(y))

    def _mask(self, prob, batch) -> None:
        masks = batch["masks"]
        k = max(prob.shape[-1], 2)
        pred = (prob[..., 0] > 0.5).astype(np.int64) if prob.shape[-1] == 1 else prob.argmax(-1)
        p = np.eye(k, dtype=bool)[pred].reshape(-1, k)
        t = np.eye(k, dtype=bool)[masks].reshape(-1, k)
        self._add("inter", (p & t).sum(0))
        self._add("psum", p.sum(0))
        self._add("tsum", t.sum(0))
        self._add("correct", np.sum(pred == masks))
        self._add("n", masks.size)

    def _present(self, prob, batch) -> None:
        self._add("correct", np.sum((prob[:, 0] > 0.5) == (batch["present"] > 0.5)))
        self._add("n", len(prob))

    def _box(self, box, batch) -> None:
        keep = batch["present"] > 0.5
        if keep.any():
            self._add("iou", box_iou(box[keep], batch["boxes"][keep]).sum())
            diff = box[keep] - batch["boxes"][keep]
            self._add("abs", np.abs(diff).sum())
            self._add("sq", np.square(diff).sum())
        self._add("nbox", keep.sum())

    def _image(self, out, batch) -> None:
        diff = out.reshape(len(out), -1) - batch["x"].reshape(len(out), -1)
        self._add("abs", np.abs(diff).sum())
        self._add("sq", np.square(diff).sum())
        self._add("nbox", diff.size)

    def _dense(self, out, batch) -> None:
        from cnnspec.data.object_samples import in_image_pixels, truths_of
        from cnnspec.detection.reading import Settings, detect

        self._add("dropped", float(np.sum(batch.get("object_dropped", 0))))
        if self.train:
            return
        head = next(h for h in self.plan.heads if h.role == "dense").info
        size = batch["x"].shape[1:3]
        raw = out.reshape(len(out), -1, head.columns)
        found = detect(
            head,
            raw,
            framework=self.framework,
            settings=self.settings or Settings(),
            image_size=size,
        )
        # both in each image's own pixels where the batch carries its frame (file data)
        self.detections += in_image_pixels(found, batch)
        self.truths += truths_of(batch, size)

    def gather(self, comm) -> None:
        """Under several processes (each evaluated its own shard), every process's ground
        truth and detections, so that AP scores the whole pass; images keep rank order."""
        if comm.world == 1 or self.train or not self.plan.dense:
            return
        from cnnspec.detection.objects import from_rows, to_rows

        sizes = comm.stack([[len(self.truths)]])[:, 0].astype(np.int64)
        truths, found = to_rows(self.truths, self.detections, int(sizes[: comm.rank].sum()))
        self.truths, self.detections = from_rows(
            comm.stack(truths), comm.stack(found), int(sizes.sum())
        )
        self.report = None

    def result(self) -> dict[str, float]:
        names = [n for n in self.names if not (self.train and n.startswith("map"))]
        found = {name: float(getattr(self, f"_r_{name}")()) for name in names}
        if self.plan.dense:
            found["objects_dropped"] = float(self._get("dropped"))
        return found

    def _scored(self) -> dict:
        if self.report is None:
            from cnnspec.detection.evaluate import evaluate
            from cnnspec.train.dense import object_classes

            head = next(h for h in self.plan.heads if h.role == "dense").info
            names = getattr(self.plan, "class_names", None) or [
                str(k) for k in range(object_classes(head))
            ]
            self.report = evaluate(self.truths, self.detections, names)
        return self.report

    def _r_map(self):
        return self._scored()["map"] or 0.0

    def _r_map_50(self):
        return self._scored()["map_50"] or 0.0

    def _r_map_75(self):
        return self._scored()["map_75"] or 0.0

    def _get(self, key):
        return self.sums.get(key, np.float64(0))

    def _r_accuracy(self):
        return self._get("correct") / max(float(self._get("n")), 1.0)

    def _r_top5(self):
        return self._get("top5") / max(float(self._get("n")), 1.0)

    def _r_dice(self):
        inter, psum, tsum = self._get("inter"), self._get("psum"), self._get("tsum")
        denom = (psum + tsum)[1:]
        occurs = denom > 0
        if not np.any(occurs):
            return 1.0
        return float(np.mean(2 * inter[1:][occurs] / denom[occurs]))

    def _r_mean_iou(self):
        if self.plan.task == "detect":
            return self._get("iou") / max(float(self._get("nbox")), 1.0)
        inter, psum, tsum = self._get("inter"), self._get("psum"), self._get("tsum")
        union = psum + tsum - inter
        occurs = union > 0
        return float(np.mean(inter[occurs] / union[occurs])) if np.any(occurs) else 1.0

    def _r_mae(self):
        n = max(float(self._get("nbox")), 1.0) * (4 if self.plan.task == "detect" else 1)
        return self._get("abs") / n

    def _r_mse(self):
        n = max(float(self._get("nbox")), 1.0) * (4 if self.plan.task == "detect" else 1)
        return self._get("sq") / n

    # --- several processes: the sums are all that needs reducing -------------------------
    def state(self) -> dict:
        return dict(self.sums)

    def merge(self, other: dict) -> None:
        for key, value in other.items():
            self._add(key, value)
