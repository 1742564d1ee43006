"""torchrun / DistributedDataParallel helpers (the torchvision references pattern).

``torchrun --nproc_per_node N -m esseg train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them and starts a process group with ``nccl`` on
CUDA and ``gloo`` on CPU. Without them (or with ``WORLD_SIZE=1``) everything runs in one process.
Only rank 0 logs, prints and saves: ask :func:`is_main_process`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from esseg.errors import ConfigError


@dataclass
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto" | "cpu" | "cuda"`` -> a device; ``cuda`` without a GPU is a ConfigError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device cuda requested but no CUDA GPU is available (torch.cuda.is_available() is False); use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda")


def env_info() -> DistInfo:
    """This process's place in a torchrun launch, from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
    (one process, rank 0, when ``WORLD_SIZE`` is unset or 1 or ``RANK`` is unset)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or "RANK" not in os.environ:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """True in rank 0 of a torchrun launch (or of the started process group) and in a single
    process: the one process that prints, logs and writes files."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_info().is_main


def init_distributed(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if the environment asks for one; return (info, device)."""
    info = env_info()
    if not info.enabled:
        return info, resolve_device(device_name)
    device = resolve_device(device_name, info.local_rank)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return info, device


def cleanup_distributed() -> None:
    """Leave the process group (safe to call when none was started)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for all ranks (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank (no-op in one process).

    DDP broadcasts buffers at the start of each training forward, after which every rank updates
    its BatchNorm statistics from its own batch; call this before evaluating so that all ranks
    evaluate the same network, the one rank 0 saves.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src)


def all_true(flag: bool, device: torch.device) -> bool:
    """True on every rank iff ``flag`` is True on every rank."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([0 if flag else 1], device=device)
    dist.all_reduce(t)
    return int(t.item()) == 0


__all__ = [
    "DistInfo", "all_true", "barrier", "broadcast_buffers", "cleanup_distributed", "env_info", "init_distributed",
    "is_main_process", "resolve_device",
]
