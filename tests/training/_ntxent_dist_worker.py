"""Workers of the 2-process loss checks (a plain module: spawned children import it by name).

One spawned process group computes every scenario at once (spawning is the slow part):
for each loss, the gathered loss and DDP-averaged gradients, the loss without gathering,
and the same with deliberately broken gathers, so the tests can show that their
tolerance still catches a wrong gather.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mhub_fmcib_train.loss import BackgroundInfoNCELoss, NTXentLoss
from mhub_fmcib_train.utils import dist as udist

N, M, D_IN, D_OUT = 8, 6, 12, 5


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.nn.Linear]:
    """Global batch: two lesion views (N, D_IN), NT-Xent background (M, D_IN), and the
    authors' two background views (N, D_IN) stacked as (2, N, D_IN); one linear layer."""
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(N, D_IN, generator=g), torch.randn(N, D_IN, generator=g)
    xb = torch.randn(M, D_IN, generator=g)
    bb = torch.randn(2, N, D_IN, generator=g)
    torch.manual_seed(seed)
    return x0, x1, xb, bb, torch.nn.Linear(D_IN, D_OUT)


class _NoReduceGather(udist.GatherLayer):
    """Broken: forward gathers (as GatherLayer), backward keeps only this process's own gradient."""

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> torch.Tensor:
        return grads[dist.get_rank()]


def _cat_no_reduce(x: torch.Tensor) -> torch.Tensor:
    return torch.cat(_NoReduceGather.apply(x), dim=0)


def _cat_reversed(x: torch.Tensor) -> torch.Tensor:
    """Broken: ranks concatenated in reverse order (offsets no longer match)."""
    return torch.cat(list(udist.gather(x))[::-1], dim=0)


BROKEN: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"no_reduce": _cat_no_reduce, "reversed": _cat_reversed}


def _one(loss_name: str, rank: int, world: int, gather: bool) -> tuple[float, list[Any]]:
    x0, x1, xb, bb, lin = _data()
    n, m = N // world, M // world
    sl, sb = slice(rank * n, (rank + 1) * n), slice(rank * m, (rank + 1) * m)
    if loss_name == "ntxent":
        loss = NTXentLoss(0.1, gather_distributed=gather)(lin(x0[sl]), lin(x1[sl]), lin(xb[sb]))
    else:
        loss = BackgroundInfoNCELoss(0.1, gather_distributed=gather)(lin(x0[sl]), lin(x1[sl]), lin(bb[0, sl]),
                                                                     lin(bb[1, sl]))  # fmt: skip
    loss.backward()
    grads = [p.grad.clone() for p in lin.parameters()]  # type: ignore[union-attr]
    for gr in grads:  # what DDP does: average parameter gradients over processes
        dist.all_reduce(gr)
        gr /= world
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    return float(mean_loss) / world, [gr.numpy() for gr in grads]


def _worker(rank: int, world: int, port: int, q: mp.Queue) -> None:  # type: ignore[type-arg]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results: dict[str, tuple[float, list[Any]]] = {}
        for loss_name in ("ntxent", "background_infonce"):
            results[f"{loss_name}/gather"] = _one(loss_name, rank, world, True)
            results[f"{loss_name}/no_gather"] = _one(loss_name, rank, world, False)
            good = udist.cat_all
            for broken, fn in BROKEN.items():
                udist.cat_all = fn  # type: ignore[assignment]
                try:
                    results[f"{loss_name}/broken_{broken}"] = _one(loss_name, rank, world, True)
                finally:
                    udist.cat_all = good  # type: ignore[assignment]
        if rank == 0:
            q.put(results)
    finally:
        dist.destroy_process_group()
