"""Device choice and torch.distributed set-up (torchrun), kept out of the training loop."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .config import ConfigError


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, naming the config key."""
    if device in ("auto", "cpu"):
        return
    if device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"config key 'train.device' must be auto, cpu, cuda or cuda:N, got {device!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"config key 'train.device' is {device!r}, but no CUDA GPU is available here; "
                          "use train.device=auto or cpu")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"config key 'train.device' is {device!r}, but this machine has "
                          f"{torch.cuda.device_count()} GPU(s)")


def uses_cuda(device: str) -> bool:
    """Whether the ``train.device`` setting ("auto", "cpu", "cuda", "cuda:N") trains on a GPU here."""
    return torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")


def evaluation_device(config: dict, requested: str | None = None) -> torch.device:
    """Where an evaluation runs a trained network: ``requested`` (evaluate.py --device) or else the run's own
    ``train.device`` ("auto": the GPU when there is one)."""
    setting = requested or config["train"]["device"]
    try:
        check_device(setting)
    except ConfigError as err:
        if requested is not None:
            raise ConfigError(str(err).replace("config key 'train.device'", "--device")
                              .replace("train.device=", "--device ")) from None
        raise ConfigError(f"{err} (the run was trained with it); evaluate it here with --device cpu") from None
    if uses_cuda(setting):
        return torch.device(setting if setting.startswith("cuda:") else "cuda")
    return torch.device("cpu")


def setup(device: str = "auto") -> torch.device:
    """Initialise the process group under torchrun (nccl on GPUs, gloo on CPUs) and pick the device."""
    check_device(device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cuda = uses_cuda(device)
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        index = int(os.environ.get("LOCAL_RANK", "0")) if distributed or device in ("auto", "cuda") else None
        chosen = torch.device(device if device.startswith("cuda:") else f"cuda:{index or 0}")
        torch.cuda.set_device(chosen)
        return chosen
    return torch.device("cpu")


def from_rank0(compute):
    """``compute()`` evaluated on rank 0 only and sent to every rank (e.g. a fresh run directory, so
    no rank can pick another); plain ``compute()`` outside torchrun."""
    rank, size = world()
    if size == 1:
        return compute()
    box = [compute() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (no-op outside torchrun)."""
    if world()[1] == 1:
        return
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


def average_gradients(model: torch.nn.Module) -> None:
    """Replace each parameter's gradient by its mean over the ranks, in one all-reduce (no-op outside
    torchrun).  Called once per step after every backward pass of the step (fidelity, then penalty),
    so each pass frees its graph before the next one builds its own."""
    size = world()[1]
    if size == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= size
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p))


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

