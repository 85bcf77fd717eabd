"""Device choice and torch.distributed set-up (torchrun), kept out of the training loop."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup(device: str = "auto") -> torch.device:
    """Initialise the process group under torchrun (nccl on GPUs, gloo on CPUs) and pick the device."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        index = int(os.environ.get("LOCAL_RANK", "0")) if distributed or device in ("auto", "cuda") else None
        chosen = torch.device(device if device.startswith("cuda:") else f"cuda:{index or 0}")
        torch.cuda.set_device(chosen)
        return chosen
    return torch.device("cpu")


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

