"""Worker of test_distributed_step: one real pre-training step in 1 or 2 gloo processes.

The global batch (4 lesions, two views each, two background views each) is fixed; with
W processes rank r takes lesions [r·4/W, (r+1)·4/W). Every rank builds the model from the
same seed, wraps it in DDP, and runs ``pretrain._train_step`` (per-view forward, the
authors' loss gathered across processes, LARS) once per BN mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mhub_fmcib_train.config import DataConfig, EncoderConfig, PretrainConfig
from mhub_fmcib_train.pretrain import (
    _place_model,
    _set_train_mode,
    _train_step,
    build_criterion,
    build_model,
    build_optimizer,
)

MODES = ("train", "eval", "groupnorm")
N_GLOBAL = 4


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {"views": torch.rand(N_GLOBAL, 2, 1, 50, 50, 50, generator=g),
            "background": torch.rand(N_GLOBAL, 2, 1, 50, 50, 50, generator=g)}  # fmt: skip


def config(mode: str, world: int) -> PretrainConfig:
    return PretrainConfig(
        data=DataConfig(seeds_csv=Path("unused.csv"), cache_dir=Path("unused")), output_dir=Path("unused"),
        encoder=EncoderConfig(widen_factor=0.0625, layers=(1, 1, 1, 1)), projection_hidden=32, projection_dim=16,
        batch_size=N_GLOBAL // world, lr=0.5, trust_coefficient=0.02, bn_mode=mode,  # type: ignore[arg-type]
        device="cpu",
    )  # fmt: skip


def one_step(mode: str, world: int, rank: int) -> dict[str, Any]:
    """Parameters after one step and the first-step gradients (rank 0's, after DDP's averaging)."""
    cfg = config(mode, world)
    model = _place_model(build_model(cfg), cfg, world, torch.device("cpu"), 0)
    b = batch()
    if mode == "eval":  # frozen statistics: those of the whole global batch, the same on every rank
        inner = model.module if hasattr(model, "module") else model
        bns = [m for m in inner.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        inner.train()
        with torch.no_grad():
            inner.trunk(torch.cat([b["views"][:, 0], b["views"][:, 1]]))
    opt, _ = build_optimizer(cfg, model, cfg.batch_size * world)
    _set_train_mode(model, mode)
    n = N_GLOBAL // world
    local = {k: v[rank * n : (rank + 1) * n] for k, v in b.items()}
    loss, _ = _train_step(model, build_criterion(cfg), opt, local, torch.device("cpu"), False, True)
    inner = model.module if hasattr(model, "module") else model
    grads = {k: p.grad.detach().clone() for k, p in inner.named_parameters()}  # type: ignore[union-attr]
    params = {k: p.detach().clone() for k, p in inner.named_parameters()}
    mean_loss = loss.detach().clone()
    if world > 1:
        dist.all_reduce(mean_loss)
        mean_loss /= world
    return {"loss": float(mean_loss), "grads": grads, "params": params}


def _worker(rank: int, world: int, port: int, q: mp.Queue) -> None:  # type: ignore[type-arg]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        out = {mode: one_step(mode, world, rank) for mode in MODES}
        if rank == 0:  # numpy: tensors would travel as shared memory that dies with this process
            q.put({m: {"loss": r["loss"], "grads": {k: v.numpy() for k, v in r["grads"].items()},
                       "params": {k: v.numpy() for k, v in r["params"].items()}} for m, r in out.items()})  # fmt: skip
    finally:
        dist.destroy_process_group()
