"""`cnnspec train --nproc N [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT]`: N
data-parallel torch processes per machine, on M machines, started by torchrun.

Each process builds the same network from the same seed, wraps it in
DistributedDataParallel (NCCL with one GPU per process, cuda:LOCAL_RANK, when --device
resolves to CUDA; gloo on CPUs: cnnspec.train.devices) and reads its own shard of the data:
torch's DistributedSampler strides one permutation over the ranks, so the ranks' batches
together are the one-process batches of the same global size, and a run with N processes
follows the one-process run up to floating-point reduction order (and the padding the
sampler adds to the last batch). Losses and metric sums are all-reduced; rank 0 alone
writes history, checkpoints and the result.

Across machines torchrun's static rendezvous is used: every machine runs the same command
with its own --node-rank; node 0 hosts the rendezvous at --rdzv-endpoint, and the global
rank is node_rank * nproc + local_rank, so the shards are fixed by the command lines.
"""

from __future__ import annotations

import subprocess
import sys


def launch(
    nproc: int, argv: list[str], nnodes: int = 1, node_rank: int = 0, endpoint: str | None = None
) -> int:
    """Re-run `cnnspec <argv>` under torchrun with nproc processes on this machine (one of
    nnodes, meeting at `endpoint`); its exit code."""
    where = (
        ["--standalone"]
        if nnodes == 1
        else [
            f"--nnodes={nnodes}",
            f"--node-rank={node_rank}",
            "--rdzv-backend=static",
            f"--rdzv-endpoint={endpoint}",
        ]
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *where,
        f"--nproc_per_node={nproc}",
        "-m",
        "cnnspec",
        *argv,
    ]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130


def worker_argv(args, out: str) -> list[str]:
    """The command line each worker runs: this one, with --out fixed and --nproc 1."""
    argv = [
        "train",
        args.file,
        "--backend",
        args.backend,
        "--data",
        args.data,
        "--out",
        out,
        "--progress",
        args.progress,
        "--device",
        args.device,
    ]
    for item in args.data_option:
        argv += ["--data-option", item]
    for flag, value in (
        ("--epochs", args.epochs),
        ("--batch-size", args.batch_size),
        ("--seed", args.seed),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.workers is not None:
        argv += ["--workers", str(args.workers)]
    argv += ["--cache", args.cache]
    if args.resume:
        argv.append("--resume")
    return argv


def check_endpoint(text: str) -> str | None:
    """What is wrong with a --rdzv-endpoint HOST:PORT, or None."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"--rdzv-endpoint must be HOST:PORT (e.g. node0.cluster:29500); received {text!r}"
    return None
