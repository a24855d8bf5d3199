"""One short check of the torch trainer's CUDA paths, for when a GPU machine is at hand
(about 1-3 minutes there). On a machine without CUDA it says so and exits 0.

    python bench/gpu_check.py [--epochs 2] [--batch 64] [--size 224]

1. torch / CUDA / cuDNN versions and the GPUs.
2. `cnnspec train specs/lenet5.cnn --data digits --device cuda` for --epochs epochs, in
   float32 and with mixed_precision (float16 autocast + GradScaler), then evaluate and
   --resume on the GPU: held-out accuracy, seconds per epoch, the scaler in the checkpoint.
3. A process group over NCCL (TorchComm on cuda:0, world 1: an all-reduce through the GPU),
   and `cnnspec train` under torchrun with min(2, GPUs) processes, one GPU each (DDP with
   device_ids when there are 2).
4. cnnspec's ResNet-50 against torchvision's with the same weights, on the GPU, channels_last
   under float16 autocast: largest output difference and forward / forward+backward time.
Each step prints PASS or FAIL; the exit code is the number of failures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's cnnspec, not an installed one

FAILURES: list[str] = []
# --dry-run-cpu runs every step on the CPU (gloo, bfloat16) to test this script itself
DEVICE, HALF = "cuda", torch.float16


def sync() -> None:
    if DEVICE != "cpu":
        torch.cuda.synchronize()


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  {'PASS' if ok else 'FAIL'}  {name}{'  ' + detail if detail else ''}", flush=True)
    if not ok:
        FAILURES.append(name)


def step(title: str):
    """Run a step; an exception is one failure with its traceback, and the others go on."""

    def wrap(fn):
        def run(*a, **k):
            print(f"\n== {title}", flush=True)
            try:
                fn(*a, **k)
            except Exception:  # noqa: BLE001 (a check reports every failure and goes on)
                traceback.print_exc()
                check(f"{title}: no exception", False)

        return run

    return wrap


def versions() -> None:
    print(
        f"python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"CUDA (build) {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    )
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(
            f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, "
            f"compute capability {p.major}.{p.minor}"
        )


def cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cnnspec", *argv],
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
        check=False,
    )


def lenet_spec(folder: Path, mixed: bool, epochs: int) -> Path:
    text = (
        (ROOT / "specs" / "lenet5.cnn")
        .read_text()
        .replace("epochs 15;", f"mixed_precision {'true' if mixed else 'false'}; epochs {epochs};")
    )
    path = folder / f"lenet5_{'amp' if mixed else 'fp32'}.cnn"
    path.write_text(text)
    return path


@step("LeNet-5 on digits, --device cuda")
def lenet(folder: Path, epochs: int) -> None:
    for mixed in (False, True):
        spec = lenet_spec(folder, mixed, epochs)
        out = folder / spec.stem
        done = cli(
            "train",
            str(spec),
            "--data",
            "digits",
            "--device",
            DEVICE,
            "--out",
            str(out),
            "--progress",
            "off",
        )
        label = (
            ("float16 autocast + GradScaler" if DEVICE != "cpu" else "bfloat16 autocast")
            if mixed
            else "float32"
        )
        check(f"train {label}: exit 0", done.returncode == 0, done.stderr[-2000:])
        if done.returncode:
            continue
        result = json.loads((out / "result.json").read_text())
        rows = json.loads((out / "checkpoint.json").read_text())["history"]
        secs = [r["seconds"] for r in rows]
        acc = result["metrics"]["accuracy"]
        check(
            f"train {label}: held-out accuracy {acc:.3f} >= 0.85 after {epochs} epochs",
            acc >= 0.85,
            f"s/epoch {', '.join(f'{s:.2f}' for s in secs)}",
        )
        state = torch.load(out / "last.optim.pt", weights_only=True, map_location="cpu")
        if mixed and DEVICE != "cpu":  # bfloat16 on CPU needs no scaler
            scale = state.get("scaler", {}).get("scale")
            check("the checkpoint holds the loss scale", scale is not None, f"scale {scale}")
        ev = cli(
            "evaluate",
            str(spec),
            "--weights",
            str(out / "last.safetensors"),
            "--data",
            "digits",
            "--device",
            DEVICE,
            "--format",
            "json",
        )
        if ev.returncode == 0:
            got = json.loads(ev.stdout)["metrics"]["accuracy"]
            check(
                f"evaluate {label} on cuda reproduces the accuracy",
                abs(got - acc) < 1e-6,
                f"{got:.4f} vs {acc:.4f}",
            )
        else:
            check(f"evaluate {label}: exit 0", False, ev.stderr[-2000:])
    # resume on the GPU: one more epoch after the mixed-precision run
    spec = lenet_spec(folder, True, epochs)
    done = cli(
        "train",
        str(spec),
        "--data",
        "digits",
        "--device",
        DEVICE,
        "--out",
        str(folder / spec.stem),
        "--progress",
        "off",
        "--epochs",
        str(epochs + 1),
        "--resume",
    )
    check(
        "--resume with mixed precision on cuda",
        done.returncode == 0 and f"resuming after epoch {epochs}" in done.stdout,
        done.stderr[-2000:],
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@step("NCCL: a process group on the GPU, and torchrun")
def nccl(folder: Path, epochs: int) -> None:
    import torch.distributed as dist

    from cnnspec.train.torch_backend import TorchComm

    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        comm = TorchComm(torch.device(DEVICE if DEVICE == "cpu" else "cuda:0"))
        backend = dist.get_backend()
        total = comm.sum({"a": 1.5, "b": [1.0, 2.0]})
        want = "gloo" if DEVICE == "cpu" else "nccl"
        check(f"TorchComm on {DEVICE} uses {want}", backend == want, f"backend {backend}")
        check(
            "an all-reduce through the GPU",
            total["a"] == 1.5 and list(total["b"]) == [1.0, 2.0],
            str(total),
        )
        dist.destroy_process_group()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    n = min(2, torch.cuda.device_count()) if DEVICE != "cpu" else 1
    spec = lenet_spec(folder, True, epochs)
    out = folder / f"torchrun{n}"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={n}",
        "-m",
        "cnnspec",
        "train",
        str(spec),
        "--data",
        "digits",
        "--device",
        DEVICE,
        "--out",
        str(out),
        "--progress",
        "off",
    ]
    done = subprocess.run(
        cmd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
        capture_output=True,
        timeout=300,
        check=False,
    )
    check(
        f"torchrun with {n} process(es), --device cuda: exit 0",
        done.returncode == 0,
        done.stderr[-3000:],
    )
    if done.returncode == 0:
        result = json.loads((out / "result.json").read_text())
        check(
            f"result.json says {n} process(es)",
            result["processes"] == n,
            f"accuracy {result['metrics']['accuracy']:.3f}",
        )


def timed(fn, nets: dict, reps: int) -> dict[str, float]:
    """Median seconds of fn(net) per network, the repetitions interleaved between them."""
    times: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(reps):
        for name, net in nets.items():
            sync()
            t = time.perf_counter()
            fn(net)
            sync()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


@step("ResNet-50: cnnspec against torchvision on cuda (channels_last, float16 autocast)")
def resnet(batch: int, size: int) -> None:
    import torchvision

    import cnnspec
    from cnnspec.backends import torch as tb

    text = (ROOT / "specs" / "resnet50.cnn").read_text()
    model = cnnspec.compile_text(
        text.replace("input 224x224x3", f"input {size}x{size}x3"), "resnet50.cnn"
    )
    ref = torchvision.models.resnet50()
    ours = tb.build(model, logits=True)
    tb.load_torchvision_state_dict(ours, model, ref.state_dict())
    nets = {
        name: net.to(DEVICE).to(memory_format=torch.channels_last).eval()
        for name, net in (("torchvision", ref), ("cnnspec", ours))
    }
    x = torch.randn(batch, 3, size, size, device=DEVICE).to(memory_format=torch.channels_last)
    with torch.no_grad():
        want = nets["torchvision"](x).float()
        got = nets["cnnspec"](x).float()
        with torch.autocast(DEVICE, dtype=HALF):
            half = nets["cnnspec"](x).float()
            half_ref = nets["torchvision"](x).float()
    diff = (got - want).abs().max().item()
    check(
        "float32 outputs agree",
        diff < 1e-3 * max(1.0, want.abs().max().item()),
        f"max |diff| {diff:.2e}",
    )
    hdiff = (half - half_ref).abs().max().item()
    check(
        "float16 autocast outputs agree (both in float16)",
        hdiff < 5e-2 * max(1.0, want.abs().max().item()),
        f"max |diff| {hdiff:.2e}, vs float32 {(half - want).abs().max().item():.2e}",
    )

    def forward(net):
        with torch.no_grad(), torch.autocast(DEVICE, dtype=HALF):
            net(x)

    def forward_backward(net):
        with torch.autocast(DEVICE, dtype=HALF):
            out = net(x)
        out.float().sum().backward()

    for label, fn, train in (
        ("forward", forward, False),
        ("forward+backward", forward_backward, True),
    ):
        for net in nets.values():
            net.train(train)
            for _ in range(3):  # cuDNN picks its kernels on the first calls
                fn(net)
        times = timed(fn, nets, 10)
        ratio = times["cnnspec"] / times["torchvision"]
        print(
            f"  {label:17} batch {batch}: torchvision {times['torchvision'] * 1e3:.1f} ms, "
            f"cnnspec {times['cnnspec'] * 1e3:.1f} ms, ratio {ratio:.3f}"
        )
        check(f"{label} within 10% of torchvision", ratio <= 1.10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument(
        "--dry-run-cpu",
        action="store_true",
        help="run the steps on the CPU (gloo, bfloat16): a test of this script",
    )
    args = ap.parse_args(argv)
    versions()
    if args.dry_run_cpu:
        global DEVICE, HALF
        DEVICE, HALF = "cpu", torch.bfloat16
    elif not torch.cuda.is_available():
        print(
            "no CUDA, skipped: torch sees no CUDA device on this machine "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})"
        )
        return 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnnspec-gpu-") as tmp:
        lenet(Path(tmp), args.epochs)
        nccl(Path(tmp), args.epochs)
        resnet(args.batch, args.size)
    print(
        f"\n{len(FAILURES)} failure(s) in {time.perf_counter() - t0:.0f} s"
        + (": " + "; ".join(FAILURES) if FAILURES else "")
    )
    return len(FAILURES)


if __name__ == "__main__":
    sys.exit(main())
