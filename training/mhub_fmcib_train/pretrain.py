"""SimCLR pre-training with lesion negatives, DDP under torchrun.

One step: every process takes ``batch_size`` lesions (two views each) and
``batch_size · background_per_lesion`` background views, runs them through the encoder
and projection head in one forward pass, and computes NT-Xent over the embeddings gathered
from all processes (background embeddings only in the denominators). LARC SGD; the
learning rate warms up linearly and decays by a cosine **per step**. Checkpoints hold the
model, optimizer, scheduler, RNG states and step; a relaunch resumes exactly.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mhub_fmcib.errors import ConfigError
from mhub_fmcib.model.device import resolve_device

from .config import PretrainConfig, to_toml
from .data.cache import build_cache
from .data.datasets import PretrainDataset, ResumableBatchSampler
from .loss import NTXentLoss
from .models import ProjectionHead, SimCLRModel, build_encoder, export_trunk
from .optim import LARC, warmup_cosine_scheduler
from .transforms import SimCLRView
from .utils import dist as udist
from .utils.checkpoint import CsvLog, load_checkpoint, rng_state, save_atomic, set_rng_state

log = logging.getLogger(__name__)

LOG_FIELDS = ("step", "epoch", "lr", "loss", "data_s", "compute_s", "views_per_s")


@dataclass(frozen=True)
class PretrainResult:
    """What a pre-training launch did.

    Attributes:
        first_loss / last_loss: mean loss over processes at the first and last step of
            this launch (NaN if no step ran).
        start_step / end_step: optimizer steps done before and after this launch.
        total_steps: planned steps of the whole run.
        data_fraction: time waiting for data / (waiting + compute), this launch, rank 0.
        encoder_path: exported trunk (``None`` if the run is not finished).
    """

    first_loss: float
    last_loss: float
    start_step: int
    end_step: int
    total_steps: int
    data_fraction: float
    encoder_path: Path | None


def _unwrap(model: nn.Module) -> SimCLRModel:
    m = model.module if isinstance(model, DistributedDataParallel) else model
    if not isinstance(m, SimCLRModel):
        raise TypeError(f"expected a SimCLRModel, got {type(m).__name__}")
    return m


def build_model(cfg: PretrainConfig) -> SimCLRModel:
    """Encoder + projection head, initialised from ``cfg.seed`` (same on every rank)."""
    torch.manual_seed(cfg.seed)
    trunk = build_encoder(cfg.encoder)
    head = ProjectionHead(cfg.encoder.n_features, cfg.projection_hidden, cfg.projection_dim)
    return SimCLRModel(trunk, head)


def run_pretrain(cfg: PretrainConfig, local_rank: int = 0) -> PretrainResult:
    """Pre-train (or resume) as configured. Call inside an initialised process group when
    launched by torchrun; works in a single process without one."""
    world, rank = udist.world_size(), udist.rank()
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    out = Path(cfg.output_dir)
    ckpt_path = out / "checkpoints" / "last.pt"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(to_toml(cfg))

    cache = build_cache(cfg.data)
    train = cache.table.select("train", cfg.data.fraction, cfg.data.fraction_seed)
    train_rows = [r.index for r in train]
    train_images = {str(r.image_path) for r in train}
    bg_rows = [i for i, s in enumerate(cache.background_splits) if s == "train"]
    sampler = ResumableBatchSampler(len(train_rows), cfg.batch_size, world, rank, cfg.seed)
    spe = sampler.steps_per_epoch
    if spe < 1:
        raise ConfigError(
            f"{len(train_rows)} training lesions are fewer than one global batch "
            f"({cfg.batch_size} x {world} processes); lower batch_size or use more data"
        )
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * spe
    dataset = PretrainDataset(cache, train_rows, bg_rows, SimCLRView(cfg.augment), cfg.background_per_lesion, cfg.seed)
    model: nn.Module = build_model(cfg)
    if cfg.sync_batchnorm and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if world > 1:
        model = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    global_batch = cfg.batch_size * world
    lr = cfg.lr if cfg.lr > 0 else 0.3 * global_batch / 256
    optimizer = LARC(
        model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        trust_coefficient=cfg.trust_coefficient, clip=cfg.lars_clip,
    )  # fmt: skip
    scheduler = warmup_cosine_scheduler(optimizer, min(cfg.warmup_steps, total), total, cfg.final_lr_ratio)
    criterion = NTXentLoss(cfg.temperature, gather_distributed=True)

    step = 0
    if ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        _unwrap(model).load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        step = int(ck["step"])
        if rank == 0:
            log.info("resumed from %s at step %d", ckpt_path, step)
    start_step = step
    csv_log = CsvLog(out / "log.csv", LOG_FIELDS, resume_step=step) if rank == 0 else None
    tb = None
    if cfg.tensorboard and rank == 0:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency

        tb = SummaryWriter(str(out / "tensorboard"))
    use_bf16 = cfg.bf16 and device.type == "cuda"
    losses: list[float] = []
    data_time = compute_time = 0.0

    def save(step_: int) -> None:
        if rank == 0:
            save_atomic(
                {
                    "model": _unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_state(),
                    "step": step_,
                    "world_size": world,
                    "global_batch": global_batch,
                },
                ckpt_path,
            )
        udist.barrier()

    model.train()
    while step < total:
        epoch, in_epoch = divmod(step, spe)
        sampler.set_position(epoch, in_epoch)
        loader = DataLoader(
            dataset, batch_sampler=sampler, num_workers=cfg.data.workers,
            pin_memory=device.type == "cuda",
        )  # fmt: skip
        t0 = time.perf_counter()
        for batch in loader:
            t1 = time.perf_counter()
            views = batch["views"].to(device, non_blocking=True)
            bg = batch["background"].to(device, non_blocking=True)
            n = views.shape[0]
            x = torch.cat([views[:, 0], views[:, 1], bg.flatten(0, 1)])
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                z = model(x)
            loss = criterion(z[:n], z[n : 2 * n], z[2 * n :])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            cur_lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            mean_loss = float(udist.all_reduce_mean(loss.detach()))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t2 = time.perf_counter()
            data_time += t1 - t0
            compute_time += t2 - t1
            losses.append(mean_loss)
            if csv_log is not None and (step % cfg.log_every == 0 or step == total):
                row = {
                    "step": step, "epoch": epoch, "lr": f"{cur_lr:.6g}", "loss": f"{mean_loss:.6f}",
                    "data_s": f"{t1 - t0:.4f}", "compute_s": f"{t2 - t1:.4f}",
                    "views_per_s": f"{x.shape[0] * world / (t2 - t0):.2f}",
                }  # fmt: skip
                csv_log.write(row)
                if tb is not None:
                    tb.add_scalar("loss", mean_loss, step)
                    tb.add_scalar("lr", cur_lr, step)
            if step % cfg.checkpoint_every == 0 or step == total:
                save(step)
            if step >= total:
                break
            t0 = time.perf_counter()
    encoder_path = None
    if rank == 0:
        encoder_path = export_trunk(_unwrap(model).trunk, cfg.encoder, out / "encoder.pt")
        summary = {
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "start_step": start_step,
            "end_step": step,
            "total_steps": total,
            "world_size": world,
            "global_batch": global_batch,
            "lr": lr,
            "data_fraction": data_time / max(data_time + compute_time, 1e-12),
            "train_images": len(train_images),
            "train_lesions": len(train_rows),
            "background_cubes": len(bg_rows),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if tb is not None:
        tb.close()
    udist.barrier()
    return PretrainResult(
        first_loss=losses[0] if losses else float("nan"),
        last_loss=losses[-1] if losses else float("nan"),
        start_step=start_step,
        end_step=step,
        total_steps=total,
        data_fraction=data_time / max(data_time + compute_time, 1e-12),
        encoder_path=encoder_path,
    )


def init_distributed(world_size: int, backend: str | None = None) -> None:
    """Join the torchrun process group (``env://``); gloo on CPU, nccl on CUDA."""
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))


__all__ = ["PretrainResult", "build_model", "init_distributed", "run_pretrain"]
