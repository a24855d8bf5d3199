"""cnnspec's PyTorch networks against torchvision's: forward and forward+backward time.

    python bench/torch_models.py [--models resnet50 vgg16] [--batch 8] [--size 224]
                                 [--reps 5] [--channels-last] [--compile]

Both models run in the same process on the same input, with the same weights (torchvision's
state_dict loaded into the cnnspec network), their repetitions interleaved so that drifts in
machine load hit both alike; the median of the repetitions is reported, and the ratio
cnnspec / torchvision (target: at most 1.03). Forward runs in eval mode under no_grad;
forward+backward in train mode, backward of the output's sum. cnnspec's network is built with
logits=True, since torchvision returns logits.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's cnnspec, not an installed one
cnnspec = importlib.import_module("cnnspec")
tb = importlib.import_module("cnnspec.backends.torch")

TARGET = 1.03
TORCHVISION = {
    "resnet50": torchvision.models.resnet50,
    "vgg16": torchvision.models.vgg16,
    "resnet18": torchvision.models.resnet18,
    "mobilenet_v2": torchvision.models.mobilenet_v2,
}


def pair(name: str, size: int, channels_last: bool, compile_: bool):
    ref = TORCHVISION[name]()
    text = (ROOT / "specs" / f"{name}.cnn").read_text()
    model = cnnspec.compile_text(
        text.replace("input 224x224x3", f"input {size}x{size}x3"), f"{name}.cnn"
    )
    ours = tb.build(model, logits=True)
    tb.load_torchvision_state_dict(ours, model, ref.state_dict())
    # A second torchvision copy with the same weights: what ref vs ref2 differs by is the
    # noise floor of the measurement, printed beside the ratio.
    twin = TORCHVISION[name]()
    twin.load_state_dict(ref.state_dict())
    nets = []
    for net in (ref, ours, twin):
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        nets.append(torch.compile(net) if compile_ else net)
    return nets


# wall: elapsed time; cpu: this process's CPU time (all threads), steadier on a shared machine
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def forward(net, x):
    net.eval()
    with torch.no_grad():
        net(x)


def forward_backward(net, x):
    net.train()
    net.zero_grad(set_to_none=True)
    net(x).sum().backward()


def timed(fn, net, x, clock) -> float:
    start = clock()
    fn(net, x)
    return clock() - start


def bench(name: str, args) -> list[tuple]:
    ref, ours, twin = pair(name, args.size, args.channels_last, args.compile)
    x = torch.randn(args.batch, 3, args.size, args.size)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rows = []
    for label, fn in (("forward", forward), ("forward+backward", forward_backward)):
        for net in (ref, ours, twin):  # warm-up (and compilation, with --compile)
            for _ in range(args.warmup):
                fn(net, x)
        times: dict[str, list[float]] = {"torchvision": [], "cnnspec": [], "control": []}
        order = [("torchvision", ref), ("cnnspec", ours), ("control", twin)]
        for rep in range(args.reps):  # each model takes each place in turn
            k = rep % len(order)
            for key, net in order[k:] + order[:k]:
                times[key].append(timed(fn, net, x, CLOCKS[args.clock]))
        t_ref, t_ours, t_twin = (
            statistics.median(times[k]) for k in ("torchvision", "cnnspec", "control")
        )
        rows.append((name, label, t_ref * 1e3, t_ours * 1e3, t_ours / t_ref))
        print(
            f"{name:10s} {label:17s} torchvision {t_ref * 1e3:9.1f} ms   cnnspec "
            f"{t_ours * 1e3:9.1f} ms   ratio {t_ours / t_ref:.3f}   (control: torchvision "
            f"copy {t_twin / t_ref:.3f})",
            flush=True,
        )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet50", "vgg16"], choices=TORCHVISION)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or the process's CPU time (steadier on a busy machine)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{args.size}x{args.size}, median of {args.reps}, channels_last="
        f"{args.channels_last}, compile={args.compile}, clock={args.clock}, load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = [row for name in args.models for row in bench(name, args)]
    worst = max(r[4] for r in rows)
    print(f"worst ratio {worst:.3f} (target <= {TARGET})")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        Path(args.json).write_text(
            json.dumps(
                {
                    "settings": settings,
                    "rows": [
                        dict(zip(("model", "pass", "torchvision_ms", "cnnspec_ms", "ratio"), r))
                        for r in rows
                    ],
                    "report_rows": _report_rows(rows, args),
                },
                indent=2,
            )
        )
    return 0 if worst <= TARGET else 1


def _report_rows(rows: list[tuple], args) -> list[dict]:
    """BENCHMARKS.md's rows (bench/run_all.py): one per model and pass."""
    return [
        {
            "target": f"torch {name} {label}: cnnspec / torchvision (batch {args.batch}, "
            f"{args.size}px, median of {args.reps})",
            "measured": f"{ratio:.3f}",
            "goal": f"<= {TARGET}",
            "met": ratio <= TARGET,
        }
        for name, label, _, _, ratio in rows
    ]


if __name__ == "__main__":
    sys.exit(main())
