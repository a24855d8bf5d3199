"""Dense detection: cnnspec's training epoch against a hand-written torch loop, and cnnspec's
decode + NMS per image against torchvision's FCOS post-processing.

1. Training: the same network (specs/yolo_shapes.cnn, a small YOLO-style detector with an
   anchor-free two-level `detect` head with objectness), the same multi-object shapes images in the same order, the same assignment
   (detection.assign) and loss (train/dense_torch.DenseLoss), the same optimizer. The plain
   loop is what one writes by hand: tensors in, assign, loss, backward, step. Epochs
   alternate (which goes first alternates too); medians of wall and CPU time are compared.
2. Inference: the same raw outputs of an FCOS-like head (3 levels, centre-ness) decoded and
   filtered by detection.reading.detect (framework torch) and by torchvision's
   FCOS.postprocess_detections with the same thresholds and top-k (torchvision's 1,000
   candidates a level); time per image.

    python bench/detection_epoch.py [--images 512] [--epochs 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import types
from pathlib import Path

import numpy as np
import torch

from cnnspec.compiler import compile_file
from cnnspec.data import index
from cnnspec.detection.assign import assign
from cnnspec.detection.priors import Geometry, HeadInfo, points, strides
from cnnspec.detection.reading import Settings, detect
from cnnspec.train.dense_torch import DenseLoss
from cnnspec.train.driver import Comm, Options, run_epoch
from cnnspec.train.plan import make_plan
from cnnspec.train.torch_backend import TorchBackend

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
SPEC = Path(__file__).resolve().parents[1] / "specs" / "yolo_shapes.cnn"


def plain_epoch(net, opt, loss, head, x, boxes, classes, order, batch_size) -> float:
    net.train()
    total = 0.0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        targets = assign(head, boxes[rows], classes[rows])
        out = net(x[torch.from_numpy(rows)])
        value = loss(out, {k: torch.from_numpy(v) for k, v in targets._asdict().items()})["loss"]
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        total += float(value.detach()) * len(rows)
    return total / len(order)


def bench_training(args) -> None:
    model = compile_file(SPEC)
    plan = make_plan(model)
    head = plan.heads[0].info
    samples = index("shapes_multi", model.input_shape, "objects", n=args.images)
    batch = samples.batch(np.arange(len(samples)))
    x = torch.from_numpy(batch["x"]).permute(0, 3, 1, 2).contiguous()
    boxes = batch["object_boxes"] * 96
    classes = np.where(batch["object_crowd"], -1, batch["object_classes"])
    ours = TorchBackend(model, plan, seed=0)
    plain = TorchBackend(model, plan, seed=0)
    loss = DenseLoss(head, classification="bce")
    opts = Options(epochs=args.epochs, batch_size=32, progress=False)

    def plain_run(epoch):
        order = np.random.default_rng([0, epoch]).permutation(len(samples))
        plain_epoch(plain.net, plain.opt, loss, head, x, boxes, classes, order, 32)

    def ours_run(epoch):
        ours.start_epoch(epoch)
        run_epoch(ours, plan, samples, opts, epoch, True, Comm())

    runs = {"plain": plain_run, "cnnspec": ours_run}
    times = {clock: {k: [] for k in runs} for clock in CLOCKS}
    for epoch in range(args.epochs):
        for k in ("plain", "cnnspec") if epoch % 2 == 0 else ("cnnspec", "plain"):
            start = {clock: f() for clock, f in CLOCKS.items()}
            runs[k](epoch)
            for clock, f in CLOCKS.items():
                times[clock][k].append(f() - start[clock])
    print(f"training: {len(samples)} images 96x96, batch 32, {torch.get_num_threads()} threads")
    for clock in CLOCKS:
        med = {k: statistics.median(v[1:] or v) for k, v in times[clock].items()}
        print(
            f"  {clock:4} plain {med['plain']:.3f} s  cnnspec {med['cnnspec']:.3f} s  "
            f"ratio {med['cnnspec'] / med['plain']:.3f}"
        )


def bench_inference(args) -> None:
    from torchvision.models.detection._utils import BoxLinearCoder
    from torchvision.models.detection.fcos import FCOS

    size, levels = 320, (8, 16, 32)
    geometry = Geometry(levels, tuple((size // s, size // s) for s in levels))
    head = HeadInfo("out", 20, geometry, extra="centerness")
    rng = np.random.default_rng(0)
    raw = rng.normal(-4.0, 1.5, (args.batch, geometry.count, head.columns)).astype(np.float32)
    raw[..., :4] = np.abs(raw[..., :4])
    settings = Settings(score_threshold=0.2, iou_threshold=0.6, max_detections=100, top_k=1000)
    half = strides(geometry)[:, None] / 2
    anchors = torch.from_numpy(
        np.concatenate([points(geometry) - half, points(geometry) + half], 1).astype(np.float32)
    )
    counts = [h * w for h, w in geometry.shapes]
    fake = types.SimpleNamespace(
        box_coder=BoxLinearCoder(normalize_by_size=True),
        score_thresh=0.2,
        nms_thresh=0.6,
        detections_per_img=100,
        topk_candidates=settings.top_k,
    )
    t = torch.from_numpy(raw)

    def torchvision_run():
        outputs = {
            "cls_logits": list(t[..., 4:24].split(counts, 1)),
            "bbox_regression": list(t[..., :4].split(counts, 1)),
            "bbox_ctrness": list(t[..., 24:].split(counts, 1)),
        }
        per_level = [list(anchors.split(counts))] * len(raw)
        FCOS.postprocess_detections(fake, outputs, per_level, [(size, size)] * len(raw))

    def ours_run():
        detect(head, raw, framework="torch", settings=settings, image_size=(size, size))

    runs = {"torchvision": torchvision_run, "cnnspec": ours_run}
    times = {k: [] for k in runs}
    for i in range(args.rounds):
        for k in runs if i % 2 == 0 else reversed(list(runs)):
            start = time.process_time()
            runs[k]()
            times[k].append((time.process_time() - start) / len(raw))
    med = {k: statistics.median(v[1:] or v) for k, v in times.items()}
    print(f"decode + NMS: {geometry.count} priors, 20 classes, CPU time per image")
    print(
        f"  torchvision {med['torchvision'] * 1e3:.2f} ms  cnnspec {med['cnnspec'] * 1e3:.2f} ms"
        f"  ratio {med['cnnspec'] / med['torchvision']:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8, help="images per decode call")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", choices=("training", "inference"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only != "inference":
        bench_training(args)
    if args.only != "training":
        bench_inference(args)


if __name__ == "__main__":
    main()
