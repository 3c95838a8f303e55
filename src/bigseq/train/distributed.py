"""Scale-out on torch.distributed: the same command under ``torchrun --nproc_per_node N bigseq train ...``.

torchrun sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT``; :func:`setup` reads
them and joins the process group (NCCL on CUDA, gloo on CPU). Without them (a plain ``bigseq train``) it is a
world of one and nothing here costs anything. No launcher, rendezvous or collective is written here: they
are torch's.

How the loop uses a world of N (train/loop.py):

- Data: every rank computes the same epoch batch list (a pure function of seed and epoch) and takes
  batches ``pos * N + rank`` — each batch trains exactly once per epoch on exactly one rank. When the list
  does not divide by N, the ranks left without a batch in the last round run a zero-weight step so that
  every rank joins every gradient all-reduce (DDP would hang otherwise); nothing is dropped or repeated.
- Loss: each rank's summed token loss is divided by the *global* number of target tokens of the step, then
  multiplied by N to undo DDP's gradient averaging: the update equals a 1-process step over the same
  batches (``grad_accum`` = N), which the 2-process test pins.
- Only rank 0 writes checkpoints, metrics and TensorBoard events, and validates (the other ranks wait for
  its verdict); a resume restores every rank from rank 0's checkpoint.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place in the job. ``rank`` 0 is the one that writes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def sum(self, value: float) -> float:
        """Sum a number over all ranks (identity for a world of one)."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=_device())
        dist.all_reduce(t)
        return float(t.item())

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag OR-ed over all ranks, in one all-reduce (identity for a world of one)."""
        if not self.distributed:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([float(f) for f in flags], device=_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def share(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (a picklable value: a verdict, a dict of metrics)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup(timeout_minutes: float = 30.0) -> World:
    """Join the process group torchrun describes in the environment, once; a world of one otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return World(rank=rank, size=size, local_rank=local_rank)


def _device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )


def wrap(model: nn.Module, world: World) -> nn.Module:
    """The module the loop trains: ``model`` itself in a world of one, otherwise DDP (a full replica per
    rank, gradients all-reduced during backward). Checkpoints hold the unwrapped ``model``.

    FSDP (``fully_shard``) for models larger than one device is not wired yet: it needs the sharded
    state gathered for the safetensors checkpoint and the optimizer state; until then a model must fit one
    device."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [world.local_rank] if torch.cuda.is_available() else None
    return DistributedDataParallel(model, device_ids=ids)


def rank_batches(n_batches: int, pos: int, world: World) -> int | None:
    """Index of this rank's batch in round ``pos`` of an epoch of ``n_batches``, or None when the epoch has
    no batch left for it (it then runs a zero-weight step)."""
    i = pos * world.size + world.rank
    return i if i < n_batches else None


def rounds(n_batches: int, world: World) -> int:
    """Rounds (one batch per rank each) needed to use every batch of an epoch once."""
    return -(-n_batches // world.size)
