"""Rank logic in one place (after ``lightly.utils.dist``).

Every function works without an initialised process group (one process, rank 0).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

F = TypeVar("F", bound=Callable[..., Any])


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    """Wait for every process (no-op in one process)."""
    if is_distributed():
        dist.barrier()


class GatherLayer(torch.autograd.Function):
    """``all_gather`` that lets gradients flow back to the process that produced each slice.

    Forward: every process gets the list of all processes' tensors (equal shapes).
    Backward: the gradients that all processes computed for each slice are summed
    (``all_reduce``) and each process keeps the sum for its own slice, so that with DDP's
    gradient averaging the parameters see the gradient of the mean loss over all processes.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> torch.Tensor:
        all_grads = torch.stack(grads)
        dist.all_reduce(all_grads)
        return all_grads[dist.get_rank()]


def gather(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All processes' ``x`` (equal shapes), differentiable; ``(x,)`` in one process."""
    if not is_distributed() or world_size() == 1:
        return (x,)
    return GatherLayer.apply(x)


def cat_all(x: torch.Tensor) -> torch.Tensor:
    """All processes' ``x`` (N, ...) concatenated in rank order to (world*N, ...), with gradients."""
    parts = gather(x)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over processes (no gradient; for logging)."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size()


def rank_zero_only(fn: F) -> F:
    """Decorator: run ``fn`` on rank 0 only; other ranks get ``None``."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if rank() == 0:
            return fn(*args, **kwargs)
        return None

    return wrapped  # type: ignore[return-value]
