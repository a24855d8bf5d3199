"""Time per training epoch: cnnspec's torch trainer against a plain hand-written loop.

Both train the same network (specs/lenet5.cnn built by cnnspec.backends.torch, on logits)
on the same digits images in the same batch order with the same optimizer, in this one
process; the plain loop is what one would write by hand (tensors in, cross-entropy,
backward, step, running loss and accuracy). Epochs alternate between the two (which one
goes first alternates too), and the medians are compared, so a busy machine slows both
alike; both wall time and this process's CPU time are reported (CPU time does not count
the waits for a core that a shared machine adds, so it is the steadier of the two).

    python bench/train_loop.py [--spec specs/lenet5.cnn] [--epochs 21] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import cnnspec
from cnnspec.data import load
from cnnspec.train.driver import Comm, Options, run_epoch
from cnnspec.train.plan import make_plan
from cnnspec.train.torch_backend import TorchBackend

# wall: elapsed time; cpu: this process's CPU time (all threads), steadier on a shared machine
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def plain_epoch(
    net, opt, x_nchw: torch.Tensor, y: torch.Tensor, order: np.ndarray, batch_size: int
) -> tuple[float, float]:
    net.train()
    total, correct = 0.0, 0
    for start in range(0, len(order), batch_size):
        idx = torch.from_numpy(order[start : start + batch_size])
        xb, yb = x_nchw[idx], y[idx]
        out = net(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
        correct += int((out.argmax(1) == yb).sum())
    return total / len(order), correct / len(order)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/lenet5.cnn")
    ap.add_argument("--epochs", type=int, default=21)  # 0.1-0.2 s each: a median of many
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = cnnspec.compile_file(args.spec)
    plan = make_plan(model)
    data = load("digits", model.input_shape, "classify")
    ours = TorchBackend(model, plan, seed=0)
    plain = TorchBackend(model, plan, seed=0)  # the same network, driven by hand
    net, opt = plain.net, plain.opt
    x_nchw = torch.from_numpy(data.x).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(data.y)
    opts = Options(epochs=args.epochs, batch_size=args.batch_size, progress=False)

    def plain_run(epoch):
        order = np.random.default_rng([0, epoch]).permutation(len(data))
        plain_epoch(net, opt, x_nchw, y, order, args.batch_size)

    def ours_run(epoch):
        ours.start_epoch(epoch)
        run_epoch(ours, plan, data, opts, epoch, True, Comm())

    runs = {"plain": plain_run, "cnnspec": ours_run}
    times = {clock: {k: [] for k in runs} for clock in CLOCKS}
    for epoch in range(args.epochs):
        for k in ("plain", "cnnspec") if epoch % 2 == 0 else ("cnnspec", "plain"):
            start = {clock: f() for clock, f in CLOCKS.items()}
            runs[k](epoch)
            for clock, f in CLOCKS.items():
                times[clock][k].append(f() - start[clock])
    print(
        f"{args.spec}: {len(data)} images, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, median of {args.epochs - 1} epochs"
    )
    for clock in CLOCKS:
        med = {k: statistics.median(v[1:] or v) for k, v in times[clock].items()}  # 0 warms up
        for k in runs:
            print(
                f"  {clock:4} {k:8} {med[k]:.4f} s/epoch   (all: "
                + ", ".join(f"{t:.3f}" for t in times[clock][k])
                + ")"
            )
        print(f"  {clock:4} ratio cnnspec/plain = {med['cnnspec'] / med['plain']:.3f}")


if __name__ == "__main__":
    main()
