"""Data-parallel training on many processes: who this process is, and the few collectives the fit
loop needs (design decision 10: PyTorch's DDP, launched by torchrun; nothing home-made).

    torchrun --nproc_per_node 2 -m synthloom train config.yaml    # or: synthloom train config.yaml --nproc 2
    world, device = join(device)        # torchrun's environment -> a process group (gloo on CPU, nccl on GPU)
    world.sum([loss_sum, tokens])       # all-reduce, every rank gets the totals
    world.any(stop)                     # a stop one rank saw, agreed by all
    world.on_main(fn)                   # rank 0 does it; an error it raises is raised on every rank

At world size 1 (no torchrun) every method is a no-op that returns its input, so the fit loop has
one code path. What is shared and what is not: every rank reads the records and the work dir (so
output_dir must be on storage all nodes see); only rank 0 writes (model dir, checkpoints, logs,
progress); the tokenizer is trained once, on rank 0, and read back by the others.
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from .errors import ConfigError, SynthloomError, TrainingError

log = logging.getLogger("synthloom")
T = TypeVar("T")
TIMEOUT = timedelta(minutes=30)  # a collective waits this long for a rank (tokenizer training on rank 0)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; the defaults are one process alone."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collectives' tensors live (nccl: this rank's GPU)
    owned: bool = False  # join() made the process group, so leave() ends it

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over all ranks (float64: token counts stay exact)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any."""
        if not self.distributed:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank (a small Python object: indices, a seed, a state)."""
        if not self.distributed:
            return value
        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's value, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def on_main(self, fn: Callable[[], T]) -> T | None:
        """fn() on rank 0 (None elsewhere). An error a user can cause there is raised on every rank with
        the same message, so all of them stop cleanly instead of waiting for a rank that is gone."""
        if not self.distributed:
            return fn()
        result, failure = None, None
        if self.main:
            try:
                result = fn()
            except SynthloomError as exc:
                failure = (type(exc).__name__, str(exc))
                self.broadcast(failure)
                raise
            except BaseException:
                self.broadcast(("TrainingError", "rank 0 failed; its message says why"))
                raise
        failure = self.broadcast(failure)
        if failure is not None and not self.main:
            raise self.mirrored(_error_class(failure[0])(failure[1]))
        return result

    def mirrored(self, error: BaseException) -> BaseException:
        """`error`, marked on ranks other than 0 as one rank 0 raises too: the CLI says it once, there."""
        if not self.main:
            error.mirrored = True
        return error

    def sync_parameters(self, net: torch.nn.Module) -> None:
        """Every rank starts from rank 0's weights (DDP does this itself; DP-SGD runs without DDP)."""
        if self.distributed:
            with torch.no_grad():
                for p in net.parameters():
                    dist.broadcast(p.data, src=0)


ALONE = World()


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def join(device: torch.device) -> tuple[World, torch.device]:
    """The world torchrun started this process in (or ALONE), and the device this rank trains on:
    on GPUs, the one of its LOCAL_RANK. Makes the process group unless one exists."""
    size = world_size_from_env()
    if size <= 1:
        return ALONE, device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            error = ConfigError(
                f"data-parallel training: rank {rank} wants GPU {local} but {torch.cuda.device_count()} are visible; "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
            raise error
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(
            f"train.device: data-parallel training runs on CPUs (gloo) or CUDA GPUs (nccl), not {device.type}"
        )
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    comm = device if device.type == "cuda" else torch.device("cpu")
    return World(rank, size, local, comm, owned), device


def leave(world: World) -> None:
    """End the process group join() made (a process that made its own keeps it)."""
    if world.owned and dist.is_initialized():
        gc.collect()  # DDP's reducer (often in a reference cycle) goes before its process group, not at exit
        dist.destroy_process_group()


def _error_class(name: str) -> type[SynthloomError]:
    from . import errors

    cls = getattr(errors, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, SynthloomError) else TrainingError


class LossOf(torch.nn.Module):
    """A model whose forward is its `loss` (what DDP wraps: DDP syncs gradients of what its forward ran)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, inputs, targets, positions=None):
        return self.net.loss(inputs, targets, positions)


def data_parallel(net: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module | None:
    """DDP around net.loss, or None alone. Buffers (the field slots' masks) are constant: not re-broadcast."""
    if not world.distributed:
        return None
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    params = inspect.signature(DistributedDataParallel).parameters
    quiet = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DistributedDataParallel(LossOf(net), device_ids=ids, **quiet)
