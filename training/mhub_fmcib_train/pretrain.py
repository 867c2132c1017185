"""SimCLR pre-training with background negatives, DDP under torchrun.

One step: every process takes ``batch_size`` lesions (two views each) and their negatives,
runs them through the encoder and projection head in one forward pass, and computes the
configured loss over embeddings gathered from all processes:

* ``background_infonce`` (default, the authors'): per lesion two views of a fresh random
  50³ patch of its own scan; denominators hold only the other lesions' background views.
* ``ntxent+background`` (ours): NT-Xent over the lesion views plus
  ``background_per_lesion`` views of cached background cubes per lesion.

LARS (authors', scale mode) or LARC (clip mode); the learning rate follows the named
schedule, applied **per step**. Checkpoints hold the model, optimizer, scheduler, RNG
states, step, world size and global batch; a relaunch resumes exactly, and refuses a
checkpoint written with another world size or global batch.

The run is a sequence of named steps (:func:`run_pretrain` calls them in order):
``_prepare_data`` → ``build_model`` / ``_place_model`` → ``build_optimizer`` /
``build_scheduler`` → ``build_criterion`` → ``_resume`` → ``_train`` (``_train_step`` per
batch) → ``_finish``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from mhub_fmcib.errors import ConfigError
from mhub_fmcib.model.device import resolve_device

from .config import PretrainConfig, to_toml
from .data.cache import PatchCache, build_cache
from .data.datasets import PretrainDataset, ResumableBatchSampler
from .loss import BackgroundInfoNCELoss, NTXentLoss
from .models import ProjectionHead, SimCLRModel, build_encoder, export_trunk
from .models.stem import use_fast_stem
from .optim import LARC, LARS, build_scheduler
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


@dataclass(frozen=True)
class _Data:
    """The training data of one launch: cache, sampler, dataset and the step plan."""

    cache: PatchCache
    sampler: ResumableBatchSampler
    dataset: PretrainDataset
    train_rows: tuple[int, ...]
    n_images: int
    n_background_cubes: int
    steps_per_epoch: int
    total_steps: int


@dataclass
class _Progress:
    """Mutable counters of one launch (rank-local)."""

    step: int
    start_step: int
    losses: list[float] = field(default_factory=list)
    data_time: float = 0.0
    compute_time: float = 0.0

    @property
    def data_fraction(self) -> float:
        return self.data_time / max(self.data_time + self.compute_time, 1e-12)


def _unwrap(model: nn.Module) -> SimCLRModel:
    m = model.module if isinstance(model, DistributedDataParallel) else model
    if not isinstance(m, SimCLRModel):
        raise TypeError(f"expected a SimCLRModel, got {type(m).__name__}")
    return m


def _device(cfg: PretrainConfig, local_rank: int) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def _prepare_data(cfg: PretrainConfig, world: int, rank: int) -> _Data:
    """Build/open the cache, select the training lesions, plan the steps."""
    cache = build_cache(cfg.data)
    train = cache.table.select("train", cfg.data.fraction, cfg.data.fraction_seed)
    train_rows = tuple(r.index for r in train)
    bg_rows = [i for i, s in enumerate(cache.background_splits) if s == "train"]
    sampler = ResumableBatchSampler(len(train_rows), cfg.batch_size, world, rank, cfg.seed)
    spe = sampler.steps_per_epoch
    if spe < 1:
        raise ConfigError(
            f"{len(train_rows)} training lesions are fewer than one global batch "
            f"({cfg.batch_size} x {world} processes); lower batch_size or use more data"
        )
    negatives = "scan_random" if cfg.loss == "background_infonce" else "cached_cubes"
    dataset = PretrainDataset(cache, train_rows, bg_rows, SimCLRView(cfg.augment), cfg.background_per_lesion,
                              cfg.seed, negatives)  # fmt: skip
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * spe
    return _Data(cache, sampler, dataset, train_rows, len({str(r.image_path) for r in train}), len(bg_rows),
                 spe, total)  # fmt: skip


def _to_groupnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm by a GroupNorm (gcd(C, 32) groups) with the same affine init."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            c = child.num_features
            setattr(module, name, nn.GroupNorm(math.gcd(c, 32), c, eps=child.eps))
        else:
            _to_groupnorm(child)
    return module


def build_model(cfg: PretrainConfig) -> SimCLRModel:
    """Encoder + projection head, initialised from ``cfg.seed`` (same on every rank)."""
    torch.manual_seed(cfg.seed)
    trunk = build_encoder(cfg.encoder)
    head = ProjectionHead(cfg.encoder.n_features, cfg.projection_hidden, cfg.projection_dim,
                          batch_norm=cfg.projection_batch_norm)  # fmt: skip
    model = SimCLRModel(trunk, head)
    if cfg.bn_mode == "groupnorm":
        _to_groupnorm(model)
    return model


def _place_model(
    model: SimCLRModel, cfg: PretrainConfig, world: int, device: torch.device, local_rank: int
) -> nn.Module:
    """Sync BN (CUDA, several processes), device, CPU stem speed-up, DDP."""
    if cfg.sync_batchnorm and world > 1:
        if device.type != "cuda":
            raise ConfigError("sync_batchnorm needs CUDA (SyncBatchNorm does not run on CPU); "
                              "use bn_mode = \"eval\" or \"groupnorm\" for an exact CPU comparison")  # fmt: skip
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if device.type == "cpu":
        use_fast_stem(model.trunk)
    if world > 1:
        return DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    return model


def build_optimizer(cfg: PretrainConfig, model: nn.Module, global_batch: int) -> tuple[Optimizer, float]:
    """LARS (one group, every tensor) or LARC; ``lr = 0.3 × global batch / 256`` unless set."""
    lr = cfg.lr if cfg.lr > 0 else 0.3 * global_batch / 256
    if cfg.optimizer == "lars":
        return LARS(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    trust_coefficient=cfg.trust_coefficient), lr  # fmt: skip
    return LARC(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                trust_coefficient=cfg.trust_coefficient, clip=True), lr  # fmt: skip


def build_criterion(cfg: PretrainConfig) -> nn.Module:
    """The configured loss, gathering across processes."""
    if cfg.loss == "background_infonce":
        return BackgroundInfoNCELoss(cfg.temperature, gather_distributed=True)
    return NTXentLoss(cfg.temperature, gather_distributed=True)


def _resume(
    path: Path, model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler, world: int, global_batch: int
) -> int:
    """Load ``path`` if it exists and return its step (0 otherwise). Refuses a checkpoint of
    another world size or global batch: its data order, batch statistics and learning rate
    belong to a different run."""
    if not path.is_file():
        return 0
    ck = load_checkpoint(path)
    seen = (int(ck.get("world_size", -1)), int(ck.get("global_batch", -1)))
    if seen != (world, global_batch):
        raise ConfigError(
            f"{path} was written by a run with world size {seen[0]} and global batch {seen[1]}; "
            f"this launch has world size {world} and global batch {global_batch}. Relaunch with "
            "the same number of processes and batch_size, or use a new output_dir"
        )
    _unwrap(model).load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    set_rng_state(ck["rng"])
    if udist.rank() == 0:
        log.info("resumed from %s at step %d", path, int(ck["step"]))
    return int(ck["step"])


def _set_train_mode(model: nn.Module, bn_mode: str) -> None:
    model.train()
    if bn_mode == "eval":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _train_step(
    model: nn.Module, criterion: nn.Module, optimizer: Optimizer, batch: dict[str, torch.Tensor],
    device: torch.device, use_bf16: bool, per_view: bool,
) -> tuple[torch.Tensor, int]:  # fmt: skip
    """One forward (``per_view``: each view group on its own, as the authors; else all
    views in one pass), loss, backward and optimizer step.
    Returns the loss and the number of views processed by this rank."""
    views = batch["views"].to(device, non_blocking=True)
    bg = batch["background"].to(device, non_blocking=True)
    n = views.shape[0]
    groups = [views[:, 0], views[:, 1], *bg.transpose(0, 1)]
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
        z = model(groups) if per_view else model(torch.cat(groups))
    if isinstance(criterion, BackgroundInfoNCELoss):
        loss = criterion(z[:n], z[n : 2 * n], z[2 * n : 3 * n], z[3 * n : 4 * n])
    else:
        loss = criterion(z[:n], z[n : 2 * n], z[2 * n :])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, sum(int(g.shape[0]) for g in groups)


def _checkpoint(model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler, step: int, world: int,
                global_batch: int, path: Path) -> None:  # fmt: skip
    if udist.rank() == 0:
        save_atomic(
            {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": rng_state(), "step": step,
             "world_size": world, "global_batch": global_batch},
            path,
        )  # fmt: skip
    udist.barrier()


@dataclass
class _Run:
    """Everything the training loop needs."""

    cfg: PretrainConfig
    data: _Data
    model: nn.Module
    criterion: nn.Module
    optimizer: Optimizer
    scheduler: LRScheduler
    device: torch.device
    world: int
    global_batch: int
    ckpt_path: Path
    csv_log: CsvLog | None
    tb: Any


def _log_step(run: _Run, prog: _Progress, epoch: int, lr: float, loss: float, times: tuple[float, float, float],
              n_views: int) -> None:  # fmt: skip
    t0, t1, t2 = times
    if run.csv_log is None or not (prog.step % run.cfg.log_every == 0 or prog.step == run.data.total_steps):
        return
    run.csv_log.write({
        "step": prog.step, "epoch": epoch, "lr": f"{lr:.6g}", "loss": f"{loss:.6f}",
        "data_s": f"{t1 - t0:.4f}", "compute_s": f"{t2 - t1:.4f}",
        "views_per_s": f"{n_views * run.world / max(t2 - t0, 1e-12):.2f}",
    })  # fmt: skip
    if run.tb is not None:
        run.tb.add_scalar("loss", loss, prog.step)
        run.tb.add_scalar("lr", lr, prog.step)


def _train_epoch(run: _Run, prog: _Progress) -> bool:
    """Train from the current step to the end of its epoch (or the run). Returns False when
    the launch must stop (``stop_after`` reached or the run finished)."""
    cfg, data = run.cfg, run.data
    epoch, in_epoch = divmod(prog.step, data.steps_per_epoch)
    data.sampler.set_position(epoch, in_epoch)
    loader = DataLoader(data.dataset, batch_sampler=data.sampler, num_workers=cfg.data.workers,
                        pin_memory=run.device.type == "cuda")  # fmt: skip
    use_bf16 = cfg.bf16 and run.device.type == "cuda"
    t0 = time.perf_counter()
    for batch in loader:
        t1 = time.perf_counter()
        loss, n_views = _train_step(run.model, run.criterion, run.optimizer, batch, run.device, use_bf16,
                                    cfg.forward == "per_view")  # fmt: skip
        lr = run.optimizer.param_groups[0]["lr"]
        run.scheduler.step()
        prog.step += 1
        mean_loss = float(udist.all_reduce_mean(loss.detach()))
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        t2 = time.perf_counter()
        prog.data_time += t1 - t0
        prog.compute_time += t2 - t1
        prog.losses.append(mean_loss)
        _log_step(run, prog, epoch, lr, mean_loss, (t0, t1, t2), n_views)
        if prog.step % cfg.checkpoint_every == 0 or prog.step == data.total_steps:
            _checkpoint(run.model, run.optimizer, run.scheduler, prog.step, run.world, run.global_batch, run.ckpt_path)
        if prog.step >= data.total_steps or (cfg.stop_after and prog.step - prog.start_step >= cfg.stop_after):
            return False
        t0 = time.perf_counter()
    return True


def _finish(run: _Run, prog: _Progress, lr: float) -> Path | None:
    """Rank 0: export the trunk and write ``summary.json`` (only once the run is complete)."""
    if udist.rank() != 0 or prog.step < run.data.total_steps:
        return None
    out = Path(run.cfg.output_dir)
    encoder_path = export_trunk(_unwrap(run.model).trunk, run.cfg.encoder, out / "encoder.pt")
    summary = {
        "first_loss": prog.losses[0] if prog.losses else None,
        "last_loss": prog.losses[-1] if prog.losses else None,
        "start_step": prog.start_step, "end_step": prog.step, "total_steps": run.data.total_steps,
        "world_size": run.world, "global_batch": run.global_batch, "lr": lr,
        "loss": run.cfg.loss, "optimizer": run.cfg.optimizer, "schedule": run.cfg.schedule,
        "data_fraction": prog.data_fraction, "train_images": run.data.n_images,
        "train_lesions": len(run.data.train_rows), "background_cubes": run.data.n_background_cubes,
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return encoder_path


def run_pretrain(cfg: PretrainConfig, local_rank: int = 0) -> PretrainResult:
    """Pre-train (or resume) as configured. Call inside an initialised process group when
    launched by torchrun; works in a single process without one."""
    world, rank = udist.world_size(), udist.rank()
    device = _device(cfg, local_rank)
    out = Path(cfg.output_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(to_toml(cfg))
    data = _prepare_data(cfg, world, rank)
    model = _place_model(build_model(cfg), cfg, world, device, local_rank)
    global_batch = cfg.batch_size * world
    optimizer, lr = build_optimizer(cfg, model, global_batch)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.warmup_steps, data.total_steps, data.steps_per_epoch,
                                cfg.final_lr_ratio)  # fmt: skip
    ckpt_path = out / "checkpoints" / "last.pt"
    step = _resume(ckpt_path, model, optimizer, scheduler, world, global_batch)
    tb = None
    if cfg.tensorboard and rank == 0:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency

        tb = SummaryWriter(str(out / "tensorboard"))
    csv_log = CsvLog(out / "log.csv", LOG_FIELDS, resume_step=step) if rank == 0 else None
    run = _Run(cfg, data, model, build_criterion(cfg), optimizer, scheduler, device, world, global_batch,
               ckpt_path, csv_log, tb)  # fmt: skip
    prog = _Progress(step=step, start_step=step)
    _set_train_mode(model, cfg.bn_mode)
    while prog.step < data.total_steps and _train_epoch(run, prog):
        pass
    encoder_path = _finish(run, prog, lr)
    if tb is not None:
        tb.close()
    udist.barrier()
    return PretrainResult(
        first_loss=prog.losses[0] if prog.losses else float("nan"),
        last_loss=prog.losses[-1] if prog.losses else float("nan"),
        start_step=prog.start_step,
        end_step=prog.step,
        total_steps=data.total_steps,
        data_fraction=prog.data_fraction,
        encoder_path=encoder_path,
    )


def init_distributed(world_size: int, backend: str | None = None) -> None:
    """Join the torchrun process group (``env://``); gloo on CPU, nccl on CUDA."""
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))


__all__ = ["PretrainResult", "build_criterion", "build_model", "build_optimizer", "init_distributed", "run_pretrain"]
