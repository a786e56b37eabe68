"""torch.distributed under torchrun; a single process without torchrun never touches it.

``torchrun --nproc-per-node N -m robustdeq ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`init` (called once by the CLI entry point) then joins the process group:
gloo on CPU, and gloo for CPU tensors plus nccl for CUDA tensors when CUDA is present, where
each rank takes the GPU ``cuda:LOCAL_RANK`` (which ``--device auto`` or ``cuda`` then resolves to,
:func:`robustdeq.device.resolve`): one rank per GPU. Everything else asks this module for its
rank and the world size and calls the wrappers below, which are no-ops in a single process.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from robustdeq.errors import RobustdeqError


def launched() -> bool:
    """Whether torchrun started this process as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> None:
    """Join the process group when launched by torchrun with several processes; else do nothing."""
    if not launched() or dist.is_initialized():
        return
    if not dist.is_available():
        raise RobustdeqError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RobustdeqError(f"WORLD_SIZE > 1 but {', '.join(missing)} not set: launch with torchrun")
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0, the only process that writes entries, tables and checkpoints (True without torchrun)."""
    return rank() == 0


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in a single process."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def rows(n: int) -> slice:
    """This rank's contiguous share of ``n`` rows: sizes differ by at most one, lower ranks first."""
    size, extra = divmod(n, world_size())
    r = rank()
    start = r * size + min(r, extra)
    return slice(start, start + size + (1 if r < extra else 0))


def data_parallel(model: nn.Module) -> nn.Module:
    """``model`` in DistributedDataParallel; its buffers are synced from rank 0 at construction only.

    The only buffers training refines (the power-iteration vectors of
    :class:`~robustdeq.models.blocks.ContractiveConv`) are functions of the weights, which DDP keeps
    equal, so re-broadcasting them before every forward would only cost time.
    """
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_resync = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"  # torch >= 2.14
    options: dict[str, Any] = {no_resync: False}
    return DistributedDataParallel(model, **options)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model
