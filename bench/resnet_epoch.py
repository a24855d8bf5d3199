"""One epoch of ResNet-18 at 128x128 on a generated ImageFolder of JPEGs (issue 15, end to
end): cnnspec's torch trainer against a hand-written torch loop.

  cnnspec    run_epoch, what `cnnspec train` runs per epoch: the folder indexed as Samples,
             its DataLoader (Pillow decode, flip keyed by rows), the backend's train step
  reference  torchvision.datasets.ImageFolder + DataLoader with the same workers, batch
             size, shuffling, decode and flip, feeding cross-entropy, backward and step

Both train the same network (specs/resnet18.cnn with a 128x128x3 input and 10 classes,
built by cnnspec.backends.torch) with the same SGD, in this one process. The epochs alternate
(A B, then B A, ...) after one warm-up epoch each that starts the loaders' worker processes,
and the medians are compared, so a busy machine slows both alike. Target: ratio <= 1.05.

    python bench/resnet_epoch.py [--images 2000] [--workers 2] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
import torch.nn.functional as F
import torchvision
from data_pipeline import CLASSES, SIZE, tree_cpu, write_folder
from timing import ROOT, load_average, machine, target_row, write_json
from torchvision.transforms import v2

import cnnspec
from cnnspec.data import index, parse_ops
from cnnspec.train.driver import Comm, Options, run_epoch
from cnnspec.train.plan import make_plan
from cnnspec.train.torch_backend import TorchBackend

COMPILE = """
compile {
  loss sparse_categorical_crossentropy
  optimizer sgd lr=0.01 momentum=0.9
  augment flip
  epochs 1; batch_size %d; validation_split 0.0; seed 0
}
"""


def spec_text(batch_size: int) -> str:
    """specs/resnet18.cnn at SIZE x SIZE with CLASSES logits, and a compile section."""
    text = (ROOT / "specs" / "resnet18.cnn").read_text(encoding="utf-8")
    assert "input 224x224x3" in text and "dense 1000" in text, "specs/resnet18.cnn changed"
    text = text.replace("input 224x224x3", f"input {SIZE}x{SIZE}x3")
    return text.replace("dense 1000", f"dense {CLASSES}") + COMPILE % batch_size


def reference_epoch(net, opt, loader) -> tuple[float, float]:
    """What one writes by hand: batches in, cross-entropy on the logits, backward, step,
    running loss and accuracy."""
    net.train()
    total, correct, seen = 0.0, 0, 0
    for x, y in loader:
        out = net(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(y)
        correct += int((out.argmax(1) == y).sum())
        seen += len(y)
    return total / seen, correct / seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images in the folder")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, both sides")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs of each side")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "cnnspec-bench"))
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = write_folder(args.images, Path(args.root) / f"folder-{args.images}")
    model = cnnspec.compile_text(spec_text(args.batch))
    plan = make_plan(model)
    ours = TorchBackend(model, plan, seed=0)
    theirs = TorchBackend(model, plan, seed=0)  # the same network, driven by hand
    samples = index(str(folder), (SIZE, SIZE, 3), "classify")
    opts = Options(epochs=1, batch_size=args.batch, progress=False, workers=args.workers)
    ops = parse_ops(["flip"])
    transform = v2.Compose(
        [
            v2.Resize((SIZE, SIZE)),  # a no-op at SIZE, as cnnspec's
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    loader = torch.utils.data.DataLoader(
        torchvision.datasets.ImageFolder(str(folder), transform=transform),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    assert len(loader.dataset) == len(samples)

    def ours_epoch(epoch: int) -> None:
        ours.start_epoch(epoch)
        run_epoch(ours, plan, samples, opts, epoch, True, Comm(), ops)

    def reference(epoch: int) -> None:
        reference_epoch(theirs.net, theirs.opt, loader)

    runs = {"cnnspec": ours_epoch, "reference": reference}
    loads = [load_average()]
    # wall: elapsed; cpu: CPU seconds of this process and its loader workers, which do not
    # count the waits for a core that a shared machine adds (the steadier of the two)
    clocks = {"wall": time.perf_counter, "cpu": lambda: tree_cpu(os.getpid())}
    times = {clock: {k: [] for k in runs} for clock in clocks}
    for epoch in range(args.rounds + 1):  # epoch 0 warms up (workers start, memory grows)
        for k in ("cnnspec", "reference") if epoch % 2 == 0 else ("reference", "cnnspec"):
            start = {clock: f() for clock, f in clocks.items()}
            runs[k](epoch)
            for clock, f in clocks.items():
                times[clock][k].append(f() - start[clock])
        loads.append(load_average())
    med = {c: {k: statistics.median(v[1:]) for k, v in t.items()} for c, t in times.items()}
    ratio = {c: m["cnnspec"] / m["reference"] for c, m in med.items()}
    print(
        f"ResNet-18 at {SIZE}x{SIZE}, {len(samples)} JPEGs, batch {args.batch}, "
        f"{args.workers} workers, {torch.get_num_threads()} threads, median of {args.rounds} "
        f"epochs after a warm-up, load average {loads[0]} -> {loads[-1]}"
    )
    for clock in clocks:
        for k, v in times[clock].items():
            print(
                f"  {clock:4} {k:9} {med[clock][k]:.2f} s/epoch (all: "
                + ", ".join(f"{t:.2f}" for t in v)
                + ")"
            )
        print(f"  {clock:4} ratio cnnspec/reference = {ratio[clock]:.3f} (target <= 1.05)")
    write_json(
        args.json,
        {
            "machine": machine(),
            "images": len(samples),
            "workers": args.workers,
            "seconds": times,
            "load_average": loads,
            "report_rows": [
                target_row(
                    f"ResNet-18 epoch at {SIZE}px, {len(samples)} JPEGs: cnnspec trainer / "
                    f"hand-written torch loop ({clock} median)",
                    ratio[clock],
                    "<= 1.05",
                    ratio[clock] <= 1.05,
                )
                for clock in clocks
            ],
        },
    )


if __name__ == "__main__":
    main()
