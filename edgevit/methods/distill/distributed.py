"""torch.distributed plumbing for torchrun: gloo on CPU, nccl on GPU; a single process needs no process group."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: str = "cpu"
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, logs epoch lines and writes checkpoints (the same answer as
        :func:`edgevit.progress.is_main_process` under torchrun)."""
        return self.rank == 0


def setup(device: str | None = None) -> DistInfo:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK and start a process group when there is more than one rank."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None or device == "auto":
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    info = DistInfo(rank=rank, world_size=world, local_rank=local, device=device)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world > 1:
        info.backend = "nccl" if device.startswith("cuda") else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=info.backend)
            info.initialized_here = True
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        if device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        log.info("rank %d/%d (%s on %s)", rank, world, info.backend, device)
    return info


def barrier(info: DistInfo) -> None:
    if info.distributed:
        import torch.distributed as dist

        if info.backend == "nccl":
            dist.barrier(device_ids=[info.local_rank])
        else:
            dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.initialized_here:
        import torch.distributed as dist

        dist.destroy_process_group()
        info.initialized_here = False
