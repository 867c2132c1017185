"""Worker of test_ntx_ent's 2-process check (a plain module: spawned children import it)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mhub_fmcib_train.loss import NTXentLoss


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.nn.Linear]:
    g = torch.Generator().manual_seed(seed)
    x0, x1, xb = torch.randn(8, 12, generator=g), torch.randn(8, 12, generator=g), torch.randn(6, 12, generator=g)
    torch.manual_seed(seed)
    return x0, x1, xb, torch.nn.Linear(12, 5)


def _worker(rank: int, world: int, port: int, q: mp.Queue) -> None:  # type: ignore[type-arg]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x0, x1, xb, lin = _data()
        n, m = x0.shape[0] // world, xb.shape[0] // world
        sl, sb = slice(rank * n, (rank + 1) * n), slice(rank * m, (rank + 1) * m)
        loss = NTXentLoss(0.1, gather_distributed=True)(lin(x0[sl]), lin(x1[sl]), lin(xb[sb]))
        loss.backward()
        grads = [p.grad.clone() for p in lin.parameters()]  # type: ignore[union-attr]
        for gr in grads:  # what DDP does: average parameter gradients over processes
            dist.all_reduce(gr)
            gr /= world
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        if rank == 0:
            q.put((float(mean_loss) / world, [gr.numpy() for gr in grads]))
    finally:
        dist.destroy_process_group()
