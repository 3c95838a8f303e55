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
- ``train.distributed=fsdp`` shards parameters, gradients and optimizer state (FSDP2 ``fully_shard``); the
  full weights are gathered (a collective) whenever they are saved or validated, so the run directory is
  the same as with DDP or one process.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from bigseq.errors import BigseqError, ConfigError

# How long the other ranks wait for rank 0 to prepare a run (train a tokenizer, tokenize a corpus into shards):
# hours on a large corpus, far past the collectives' timeout. A rank 0 that dies is torchrun's to clean up.
PREPARE_TIMEOUT = datetime.timedelta(days=7)
_prepare_count = itertools.count()


class StoppedOnRankZero(BigseqError):
    """Raised on the other ranks when rank 0 stopped with a user error while preparing: rank 0 prints it,
    they exit with the same status and say nothing (one message, not one per rank)."""

    quiet = True


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
        return self.sums(value)[0]

    def sums(self, *values: float) -> tuple[float, ...]:
        """Each number summed over all ranks, in one all-reduce (identity for a world of one)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=_device())
        dist.all_reduce(t)
        return tuple(t.tolist())

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

    def gather(self, obj: object) -> list[object]:
        """Every rank's ``obj`` (a picklable value), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[object] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Around work that rank 0 alone does (its body guarded by ``is_main``) and the others need done:
        they wait at the end of the block, with no collective's time limit, for rank 0's word through the
        process group's store; if rank 0 stopped with a user error they raise :class:`StoppedOnRankZero`
        (rank 0 reports it) rather than a broken collective's traceback."""
        key = f"bigseq/main_first/{next(_prepare_count)}"  # every rank makes the same sequence of calls
        store = dist.distributed_c10d._get_default_store() if self.distributed else None
        try:
            yield
        except BigseqError as e:
            if store is not None and self.is_main:
                store.set(key, f"error: {e}")
            raise
        if store is None:
            return
        if self.is_main:
            store.set(key, "ok")
            return
        store.wait([key], PREPARE_TIMEOUT)
        word = store.get(key).decode()
        if word != "ok":
            raise StoppedOnRankZero(word.removeprefix("error: "))


def setup(device: str = "auto", timeout_minutes: float = 30.0) -> World:
    """Join the process group torchrun describes in the environment, once; a world of one otherwise.
    NCCL when training is to run on GPUs, gloo for ``device="cpu"`` (also on a machine with GPUs: NCCL and
    the DDP of a CPU model on it failed there)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return World(rank=rank, size=size, local_rank=local_rank)


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, world: World | None = None) -> torch.device:
    """``auto``: this rank's CUDA device when CUDA is available, else the CPU; ``cpu``; ``cuda`` (an error
    naming the problem when no CUDA device is visible). Under torchrun, rank r of a node uses GPU LOCAL_RANK."""
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}; got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda, but torch sees no CUDA device (a CPU-only torch build, or no GPU)")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", world.local_rank if world is not None and world.distributed else 0)


def _device() -> torch.device:
    """Where the tensors of collectives live: the GPU under NCCL, else the CPU."""
    nccl = dist.is_initialized() and dist.get_backend() == "nccl"
    return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


STRATEGIES = ("ddp", "fsdp")


def wrap(model: nn.Module, world: World, strategy: str = "ddp") -> nn.Module:
    """The module the loop runs. A world of one: ``model`` itself. ``ddp``: a DistributedDataParallel
    wrapper (a full replica per rank, gradients all-reduced in backward). ``fsdp``: FSDP2's ``fully_shard``
    applied in place, each encoder / decoder layer a unit and the root the rest, so parameters, gradients
    and optimizer state are sharded across ranks, for models that do not fit one device. With ``fsdp`` the
    optimizer must be built after wrapping (the parameters become sharded DTensors) and weights are read
    and written through :func:`full_model` / :func:`full_optimizer_state`."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"train.distributed must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if not world.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [world.local_rank] if next(model.parameters()).is_cuda else None  # a CPU model takes none
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    # Each Transformer layer is its own unit, gathered only while it runs (training calls only the layers'
    # forward); the root unit holds the rest (embeddings, final norms, head). The GRU shards as one unit.
    for stack in (getattr(model, "encoder", None), getattr(model, "decoder", None)):
        if isinstance(stack, nn.ModuleList):
            for layer in stack:
                fully_shard(layer)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_model(model: nn.Module, world: World, build: Callable[[], nn.Module]) -> nn.Module | None:
    """A plain (unsharded, CPU) copy of a sharded ``model`` on rank 0, None on the other ranks; ``model``
    itself when it is not sharded. Every rank must call it: gathering the shards is a collective.
    ``build()`` makes an empty plain model of the same architecture."""
    if not is_sharded(model):
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not world.is_main:
        return None
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the training RNG
        plain = build()
    plain.load_state_dict(state)
    return plain


def full_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The optimizer state to checkpoint: ``opt.state_dict()``, or for a sharded model the full state keyed
    by parameter name (a collective; complete on rank 0)."""
    if not is_sharded(model):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def load_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """Inverse of :func:`full_optimizer_state` (every rank passes the full state it read from disk)."""
    if not is_sharded(model):
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state = _keyed_by_name(model, opt, state)
    set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True))


def _keyed_by_name(model: nn.Module, opt: torch.optim.Optimizer, state: dict) -> dict:
    """``state`` keyed by parameter name, as FSDP's loader reads it. One process and DDP save
    ``opt.state_dict()``, keyed by each parameter's position in the optimizer's groups: map the positions
    to the names of the parameters at those places in ``opt`` (built by the same ``make_optimizer``), so a
    run started on one process or with DDP resumes sharded."""
    groups = state["param_groups"]
    if all(isinstance(i, str) for g in groups for i in g["params"]):
        return state
    if len(groups) != len(opt.param_groups):
        raise ValueError(f"{len(groups)} parameter groups saved, {len(opt.param_groups)} in the optimizer")
    names = {id(p): n for n, p in model.named_parameters()}
    name_of = {}
    for saved, live in zip(groups, opt.param_groups, strict=True):
        for i, p in zip(saved["params"], live["params"], strict=True):  # ValueError: another model
            name_of[i] = names[id(p)]
    return {
        "state": {name_of[i]: v for i, v in state["state"].items()},
        "param_groups": [{**g, "params": [name_of[i] for i in g["params"]]} for g in groups],
    }
