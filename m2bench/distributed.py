"""Data-parallel runs under ``torchrun`` (torch.distributed): one process per GPU, or gloo on CPUs.

``torchrun --nproc-per-node N -m m2bench run ...`` starts N copies of the run; each reads its
rank from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
:func:`init` joins the process group (NCCL on CUDA, gloo on CPU). Multi-node runs use torchrun's
usual rendezvous flags (``--nnodes``, ``--node-rank``, ``--rdzv-endpoint``). Without torchrun
(``WORLD_SIZE`` unset or 1) everything here is a no-op and runs are single-process.

What m2bench does with the ranks:

- training (:func:`m2bench.loop.train`): the model is wrapped in DistributedDataParallel
  (``--parallel ddp``, the default) or sharded with FSDP (``--parallel fsdp``: PyTorch's
  ``fully_shard`` on every block of each ``nn.ModuleList`` and on the root, for models whose
  weights, gradients and optimizer state do not fit on one GPU); every rank walks the same
  shuffled global batches and computes the loss on its contiguous slice of each
  (:func:`split_batch`), weighted by its share, so that the gradient average over ranks equals
  the gradient of the whole batch: a deterministic run gives the same weights as one process;
- evaluation: under DDP :func:`shard` gives each rank a contiguous slice of the examples and
  :func:`gather` puts the per-rank results back together in order on every rank, so each
  example is scored exactly once (tasks that do not shard evaluate everything on every rank,
  identically, and only rank 0's numbers are recorded). Under FSDP every forward pass is a
  collective, so every rank evaluates every example in lockstep (no sharding);
- tracking: only rank 0 talks to MLflow and writes files; throughput counts the global batch,
  i.e. the samples of all ranks.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch

from m2bench.errors import ConfigError


@dataclass(frozen=True)
class State:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True on rank 0, the only rank that logs and writes."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when there is more than one process."""
        return self.world > 1


def state() -> State:
    """The current process's rank and world size (single-process when not under torchrun)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return State(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                     int(os.environ.get("LOCAL_RANK", 0)))  # fmt: skip
    return State(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))  # fmt: skip


def init(device: str = "auto") -> State:
    """Join the process group when launched by torchrun (idempotent); pin this rank's GPU.

    Raises:
        ConfigError: torchrun asked for more processes per node than there are GPUs.
    """
    s = state()
    if not s.active or torch.distributed.is_initialized():
        return s
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        if s.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"torchrun started local rank {s.local_rank} but this node has "
                f"{torch.cuda.device_count()} GPU(s); lower --nproc-per-node"
            )
        torch.cuda.set_device(s.local_rank)
    torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    atexit.register(_leave)  # NCCL warns (and may leak) when a process exits still in the group
    return state()


def _leave() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


STRATEGIES = ("ddp", "fsdp")


def strategy() -> str:
    """``ddp`` or ``fsdp``, from ``M2BENCH_PARALLEL`` (set by ``m2bench run --parallel``).

    Raises:
        ConfigError: an unknown value.
    """
    value = os.environ.get("M2BENCH_PARALLEL", "ddp")
    if value not in STRATEGIES:
        raise ConfigError(f"M2BENCH_PARALLEL={value!r} is not one of {', '.join(STRATEGIES)}")
    return value


def fsdp() -> bool:
    """True when several ranks train with FSDP."""
    return state().active and strategy() == "fsdp"


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DDP (or sharded in place by FSDP) when there are several ranks, else as is.

    DDP runs with ``static_graph=True``: parameters a step never uses (e.g. a Hugging Face
    encoder's pooler under CLS pooling) are found once, in the first iteration, instead of
    failing the second one; the set must stay the same from step to step.
    ``M2BENCH_DDP_FIND_UNUSED=1`` instead searches for them on every step (DDP's
    ``find_unused_parameters``), for models whose unused set changes.
    """
    s = state()
    if not s.active:
        return model
    if strategy() == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in list(model.modules()):
            if isinstance(module, torch.nn.ModuleList):
                for block in module:
                    if any(p.requires_grad for p in block.parameters()):
                        fully_shard(block)
        return fully_shard(model)
    dev = next(model.parameters()).device
    find = os.environ.get("M2BENCH_DDP_FIND_UNUSED", "0") == "1"
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[dev.index] if dev.type == "cuda" else None,
        find_unused_parameters=find, static_graph=not find,
    )  # fmt: skip


def _length(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else None
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            n = _length(item)
            if n is not None:
                return n
    return None


def _slice(batch: Any, lo: int, hi: int, n: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi] if batch.dim() and batch.shape[0] == n else batch
    if isinstance(batch, dict):
        return {k: _slice(v, lo, hi, n) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_slice(v, lo, hi, n) for v in batch)
    if (
        isinstance(batch, list)
        and len(batch) == n
        and not any(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in batch)
    ):
        return batch[lo:hi]
    if isinstance(batch, list):
        return [_slice(v, lo, hi, n) for v in batch]
    return batch


def bounds(n: int, s: State | None = None) -> tuple[int, int]:
    """This rank's contiguous slice [lo, hi) of n items (the first n % world ranks get one more)."""
    s = s or state()
    base, extra = divmod(n, s.world)
    lo = s.rank * base + min(s.rank, extra)
    return lo, lo + base + (1 if s.rank < extra else 0)


def split_batch(batch: Any) -> tuple[Any, float]:
    """(this rank's slice of a global batch, loss weight) for data-parallel training.

    Tensors (and lists of plain items) whose first dimension is the batch size are sliced;
    everything else is passed whole. The weight is world * (slice size / batch size): DDP
    averages gradients over ranks, so the weighted slice losses average to the whole batch's
    mean loss. A batch smaller than the world size is processed whole on every rank (weight 1).
    """
    s = state()
    n = _length(batch)
    if not s.active or n is None or n < s.world:
        return batch, 1.0
    lo, hi = bounds(n, s)
    return _slice(batch, lo, hi, n), s.world * (hi - lo) / n


def sharded() -> bool:
    """True when evaluation is split over ranks (several ranks under DDP; never under FSDP)."""
    return state().active and not fsdp()


def shard(items: list) -> list:
    """This rank's contiguous slice of ``items`` (all of them single-process or under FSDP)."""
    if fsdp():
        return items
    lo, hi = bounds(len(items))
    return items[lo:hi]


def gather(part: Any) -> list:
    """Every rank's ``part`` (any picklable object), in rank order, on every rank.

    Pairs with :func:`shard`: under FSDP (no sharding) it returns this rank's part alone.
    """
    s = state()
    if not s.active or fsdp():
        return [part]
    out: list = [None] * s.world
    torch.distributed.all_gather_object(out, part)
    return out


def all_sum(value: float) -> float:
    """The sum of ``value`` over ranks (the value itself when single-process)."""
    s = state()
    if not s.active:
        return value
    on_gpu = torch.distributed.get_backend() == "nccl"
    t = torch.tensor([value], dtype=torch.float64, device="cuda" if on_gpu else "cpu")
    torch.distributed.all_reduce(t)
    return float(t.item())


def barrier() -> None:
    """Wait for every rank (no-op when single-process)."""
    if state().active and torch.distributed.is_initialized():
        torch.distributed.barrier()
