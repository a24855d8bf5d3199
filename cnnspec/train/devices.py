"""Where the torch trainer runs: the --device option, the process-group backend, the
mixed-precision policy. The choices are pure functions of what the machine has (so they
are tested without a GPU); `resolve` asks torch what that is.

    --device auto     cuda when torch sees a CUDA device, else cpu
    --device cuda     cuda:LOCAL_RANK under torchrun (one GPU per process), else cuda:0
    --device cuda:N   that GPU (one process)
    --device cpu|mps

Data-parallel processes talk over NCCL on CUDA and gloo otherwise (torch.distributed's
advice: NCCL for GPUs, gloo for CPUs). Mixed precision is float16 autocast with a
GradScaler on CUDA and MPS (float16 gradients underflow without loss scaling: Micikevicius
et al. 2018, "Mixed Precision Training"), bfloat16 autocast without one on CPU (bfloat16
keeps float32's exponent range, so nothing underflows that float32 would keep).
"""

from __future__ import annotations

import argparse
import re

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
CHOICES = "auto, cpu, cuda, cuda:N or mps"


class DeviceError(ValueError):
    """The device asked for is not on this machine."""


def parse(text: str) -> str:
    """argparse `type=` for --device: the spelling only (what exists is checked later)."""
    value = str(text).strip().lower()
    if not DEVICE_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"expected {CHOICES}. Received: {text!r}")
    return value


def choose(
    text: str,
    cuda_count: int,
    mps: bool = False,
    local_rank: int | None = None,
    world: int = 1,
    cuda_built: bool = True,
) -> str:
    """The torch device string for --device `text` on a machine with `cuda_count` GPUs.

    >>> choose("auto", 0), choose("auto", 2), choose("cuda", 2, local_rank=1, world=2)
    ('cpu', 'cuda:0', 'cuda:1')
    """
    text = parse(text)
    if text == "auto":
        text = "cuda" if cuda_count else "cpu"
    if text == "mps" and not mps:
        raise DeviceError("--device mps: torch sees no Apple GPU (MPS) on this machine")
    if not text.startswith("cuda"):
        return text
    if cuda_count == 0:
        why = (
            "this torch build has no CUDA support"
            if not cuda_built
            else "torch sees no CUDA device"
        )
        raise DeviceError(f"--device {text}: {why}; use --device cpu (or auto)")
    if ":" in text:
        if world > 1:
            raise DeviceError(
                f"--device {text} with {world} processes: each process takes "
                "the GPU of its local rank; use --device cuda"
            )
        index = int(text.split(":")[1])
    else:
        index = local_rank or 0
    if index >= cuda_count:
        raise DeviceError(
            f"--device {text}: this machine has {cuda_count} CUDA "
            f"device(s), cuda:0..cuda:{cuda_count - 1}"
        )
    return f"cuda:{index}"


def process_group_backend(device: str) -> str:
    """torch.distributed's backend for processes on `device`: NCCL for GPUs, else gloo."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def amp_policy(device: str) -> tuple[str, bool]:
    """(autocast dtype, use a GradScaler) for mixed precision on `device`."""
    kind = str(device).split(":")[0]
    if kind in ("cuda", "mps"):
        return "float16", True
    return "bfloat16", False


def available(text: str = "auto", local_rank: int | None = None, world: int = 1) -> str:
    """`choose` with what torch sees on this machine (starts no CUDA context)."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return choose(
        text,
        torch.cuda.device_count() if torch.cuda.is_available() else 0,
        mps=bool(mps and mps.is_available()),
        local_rank=local_rank,
        world=world,
        cuda_built=torch.backends.cuda.is_built(),
    )


def resolve(text: str = "auto", local_rank: int | None = None, world: int = 1):
    """The torch.device for --device `text` here, made the current CUDA device when it is
    one; DeviceError when it is not available."""
    import torch

    device = torch.device(available(text, local_rank, world))
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL and new tensors use the current device
    return device


def from_env(text: str = "auto"):
    """`resolve` with torchrun's LOCAL_RANK and WORLD_SIZE, when it started this process."""
    import os

    rank = os.environ.get("LOCAL_RANK")
    return resolve(
        text, int(rank) if rank is not None else None, int(os.environ.get("WORLD_SIZE", "1"))
    )
