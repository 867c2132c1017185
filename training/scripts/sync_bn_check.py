"""Sync-BN check on CUDA (run by gpu_check.sh under torchrun with 2 processes).

One real pre-training step (``pretrain._train_step``: per-view forward, the authors' loss
gathered across processes, LARS) on a fixed global batch, three ways:

* 2 processes, batch norm converted to SyncBatchNorm (each rank holds half the batch);
* 2 processes, plain batch norm (each rank normalises its own half);
* 1 process (rank 0 alone, after the others), plain batch norm on the whole batch.

Sync BN must equal the 1-process step (relative gradient difference ≤ ``--tol``, fp32,
TF32 off); plain BN in 2 processes is printed to show the difference sync BN removes.
Exit status 0 when the check passes, 1 otherwise. Writes ``OUT/sync_bn.json``.

    torchrun --standalone --nproc_per_node 2 training/scripts/sync_bn_check.py OUT [--backend gloo]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from mhub_fmcib_train.config import DataConfig, EncoderConfig, PretrainConfig
from mhub_fmcib_train.pretrain import (
    _place_model,
    _set_train_mode,
    _train_step,
    build_criterion,
    build_model,
    build_optimizer,
)

N_GLOBAL = 8


def _cfg(sync: bool, world: int) -> PretrainConfig:
    return PretrainConfig(
        data=DataConfig(seeds_csv=Path("unused.csv"), cache_dir=Path("unused")), output_dir=Path("unused"),
        encoder=EncoderConfig(widen_factor=0.25, layers=(1, 1, 1, 1)), projection_hidden=128, projection_dim=64,
        batch_size=N_GLOBAL // world, lr=0.5, trust_coefficient=0.02, sync_batchnorm=sync, device="cuda",
    )  # fmt: skip


def _batch(device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {"views": torch.rand(N_GLOBAL, 2, 1, 50, 50, 50, generator=g).to(device),
            "background": torch.rand(N_GLOBAL, 2, 1, 50, 50, 50, generator=g).to(device)}  # fmt: skip


def _step(cfg: PretrainConfig, world: int, rank: int, local_rank: int) -> dict[str, torch.Tensor]:
    device = torch.device("cuda", local_rank)
    model = _place_model(build_model(cfg), cfg, world, device, local_rank)
    opt, _ = build_optimizer(cfg, model, cfg.batch_size * world)
    _set_train_mode(model, "train")
    b = _batch(device)
    n = N_GLOBAL // world
    local = {k: v[rank * n : (rank + 1) * n] for k, v in b.items()}
    _train_step(model, build_criterion(cfg), opt, local, device, False, True)
    inner = model.module if hasattr(model, "module") else model
    return {k: p.grad.detach().double().cpu() for k, p in inner.named_parameters()}  # type: ignore[union-attr]


def _rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = sum(float((a[k] - b[k]).norm() ** 2) for k in a) ** 0.5
    return num / max(sum(float(v.norm() ** 2) for v in b.values()) ** 0.5, 1e-30)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--backend", default="nccl")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.device_count() < 2:
        local_rank = 0  # both ranks share the one GPU (gloo backend)
    torch.cuda.set_device(local_rank)
    dist.init_process_group(a.backend)
    world, rank = dist.get_world_size(), dist.get_rank()
    sync = _step(_cfg(True, world), world, rank, local_rank)
    plain = _step(_cfg(False, world), world, rank, local_rank)
    dist.barrier()
    status = 0
    if rank == 0:
        one = _step(dataclasses.replace(_cfg(False, 1), batch_size=N_GLOBAL), 1, 0, local_rank)
        res = {"world_size": world, "backend": a.backend, "gpus": torch.cuda.device_count(),
               "device": torch.cuda.get_device_name(local_rank), "tolerance": a.tol,
               "sync_bn_vs_one_process": _rel(sync, one), "plain_bn_vs_one_process": _rel(plain, one)}  # fmt: skip
        res["passed"] = res["sync_bn_vs_one_process"] <= a.tol < res["plain_bn_vs_one_process"]
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "sync_bn.json").write_text(json.dumps(res, indent=2))
        print(f"sync BN vs 1 process: relative gradient difference {res['sync_bn_vs_one_process']:.2e} "
              f"(tolerance {a.tol:g}); plain BN in {world} processes: {res['plain_bn_vs_one_process']:.2e}; "
              f"{'PASSED' if res['passed'] else 'FAILED'}")  # fmt: skip
        status = 0 if res["passed"] else 1
    flag = torch.tensor([status], device=torch.device("cuda", local_rank))
    dist.broadcast(flag, 0)
    dist.destroy_process_group()
    return int(flag.item())


if __name__ == "__main__":
    raise SystemExit(main())
