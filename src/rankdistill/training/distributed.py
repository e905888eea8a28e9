"""DDP plumbing: one code path for 1 or N processes launched by ``torchrun`` / ``accelerate launch``.

The launcher sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with ``WORLD_SIZE > 1`` the process group is
initialised here (NCCL on GPUs, gloo on CPUs). Cross-device in-batch negatives use an autograd-aware all-gather
(:class:`_GatherWithGrad`): in the backward pass the gradients of the gathered tensor are summed over
processes (an all-reduce, which every backend has) and each process keeps its own slice, so the gradient
of every rank's loss reaches the embeddings it came from. With DDP's gradient averaging the update then
equals that of one process holding the whole batch (no world-size correction of the loss is needed).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the world."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, value: Tensor) -> Tensor:
        """The mean of a tensor over processes (``SUM / world`` works on every backend)."""
        if not self.active:
            return value
        out = value.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size

    def gather(self, value: Tensor) -> Tensor:
        """Concatenate ``value`` from all processes along dim 0, keeping gradients to every source."""
        if not self.active:
            return value
        return _GatherWithGrad.apply(value, self.world_size, self.rank)

    def all_gather_ints(self, values: np.ndarray, device: torch.device) -> list[np.ndarray]:
        """Every process's 1-D integer array (lengths may differ), in rank order. ``device`` is this process's
        (NCCL gathers CUDA tensors only)."""
        if not self.active:
            return [np.asarray(values, dtype=np.int64)]
        mine = torch.as_tensor(np.asarray(values, dtype=np.int64), device=device)
        size = torch.tensor([mine.numel()], dtype=torch.int64, device=device)
        sizes = [torch.empty_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        counts = [int(s.item()) for s in sizes]
        padded = torch.zeros(max(counts), dtype=torch.int64, device=device)
        padded[:mine.numel()] = mine
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return [part[:n].cpu().numpy() for part, n in zip(parts, counts)]

    def close(self) -> None:
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """``cat(all_gather(x))`` whose backward sums the incoming gradients over processes and returns this
    process's slice (equal shapes on every process)."""

    @staticmethod
    def forward(ctx, tensor: Tensor, world_size: int, rank: int) -> Tensor:  # type: ignore[override]
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None, None


def init_distributed(device: str = "auto") -> tuple[DistContext, torch.device]:
    """Read the launcher's environment, initialise the process group if needed, pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        dev = torch.device("cuda", local) if world > 1 or device in ("auto", "cuda") else torch.device(device)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu" if device == "auto" else device)
    here = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        here = True
    if world > 1:
        logger.info("process %d of %d on %s", rank, world, dev)
    return DistContext(rank, world, local, here), dev
