"""Data-parallel training under ``torchrun``: ranks, collective flags and means, and stopping
every rank when rank 0 fails."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch

from ..core.devices import resolve_device


class OtherRankFailed(ValueError):
    """Raised on the other ranks when rank 0 fails: the cause is rank 0's (quoted), and rank 0
    reports it itself (as a bug or a user error, whichever it is)."""


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collective operations run

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, for every rank (all must stop at the same epoch)."""
        if self.world == 1:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        torch.distributed.broadcast(value, src=0)
        return bool(value.item())

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers (in place)."""
        if self.world > 1:
            for tensor in module.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)

    def sum_flags(self, *flags: bool) -> list[int]:
        """For each flag, on how many ranks it is set (every rank gets the same answer)."""
        values = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(values)
        return values.tolist()

    def run_on_main(self, work):
        """``work()`` on rank 0 while the others wait; its exception is raised on every rank
        (on the others as a RuntimeError quoting it), so no rank hangs waiting for a failed one.
        Returns rank 0's result on rank 0 and None elsewhere."""
        result, message = None, None
        if self.is_main:
            try:
                result = work()
            except Exception as error:
                if self.world == 1:
                    raise
                message = f"{type(error).__name__}: {error}"
                failure = error
        if self.world > 1:
            box = [message]
            torch.distributed.broadcast_object_list(box, src=0)
            if box[0] is not None:
                if self.is_main:
                    raise failure
                raise OtherRankFailed(f"rank 0 failed, so rank {self.rank} stops too: {box[0]}")
        return result

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return float(tensor.item()) / self.world


def _destroy_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _setup_distributed(device: str) -> tuple[Distributed, torch.device]:
    resolve_device(device)  # a missing GPU: one clear line, before any process group
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(), torch.device(device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
        # a group left to the interpreter's teardown can abort the process after the run
        # finished ("terminate called without an active exception", exit -6 under torchrun)
        atexit.register(_destroy_process_group)
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        return Distributed(rank, world, local_rank, device), device
    return Distributed(rank, world, local_rank), torch.device("cpu")
