"""`cnnspec train --nproc N`: N data-parallel torch processes started by torchrun.

Each process builds the same network from the same seed, wraps it in
DistributedDataParallel (NCCL with one GPU per process, cuda:LOCAL_RANK, when --device
resolves to CUDA; gloo on CPUs: cnnspec.train.devices) and takes every N-th row of each global
batch; the global batches are the single-process ones (same seed, same order), so a run
with N processes follows the one-process run up to floating-point reduction order (the
role a DistributedSampler plays for a DataLoader). Losses and metric sums are all-reduced;
rank 0 alone writes history, checkpoints and the result.
"""

from __future__ import annotations

import subprocess
import sys


def launch(nproc: int, argv: list[str]) -> int:
    """Re-run `cnnspec <argv>` under torchrun with nproc processes; its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "cnnspec", *argv]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130


def worker_argv(args, out: str) -> list[str]:
    """The command line each worker runs: this one, with --out fixed and --nproc 1."""
    argv = ["train", args.file, "--backend", args.backend, "--data", args.data,
            "--out", out, "--progress", args.progress, "--device", args.device]
    for item in args.data_option:
        argv += ["--data-option", item]
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--seed", args.seed)):
        if value is not None:
            argv += [flag, str(value)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.resume:
        argv.append("--resume")
    return argv
