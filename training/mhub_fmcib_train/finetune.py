"""Fine-tuning: encoder + MLP head on one label, all layers trained.

Augmentations: ±``translate`` voxel translations, axis flips, 90° rotations. SGD with
momentum, learning rate × ``gamma`` every ``step_size`` epochs. After every epoch the
model is scored on the tune set (AUC for binary tasks, balanced accuracy otherwise); the
best epoch's weights are kept in ``best.pt`` (``trunk_state_dict`` + ``head_state_dict``)
and scored once on the test set. Initialisation: foundation weights, random (supervised
baseline) or another task's ``best.pt`` (its trunk).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mhub_fmcib.model.device import resolve_device

from .config import FinetuneConfig, to_toml
from .data.cache import build_cache
from .data.datasets import LabelledDataset, ResumableBatchSampler
from .labels import TaskLabels
from .models import ClassifierHead, build_encoder, load_trunk
from .models.stem import use_fast_stem
from .probe import score
from .transforms import FinetuneAugment
from .utils.checkpoint import save_atomic

#: Patches per forward pass when scoring tune and test (eval mode: results do not depend on it).
EVAL_BATCH = 16


@dataclass(frozen=True)
class FinetuneResult:
    """Best epoch (1-based), its tune metric, the test metric, the checkpoint path and the
    test predictions (probability of class 1 (n,) for binary tasks, (n, C) otherwise)."""

    best_epoch: int
    metric_name: str
    best_tune_metric: float
    test_metric: float
    checkpoint: Path
    test_probabilities: npt.NDArray[np.float64]
    test_targets: npt.NDArray[np.int64]


class FinetuneModel(nn.Module):
    """``trunk`` then ``head``: (B, 1, 50, 50, 50) → (B, n_out) logits."""

    def __init__(self, trunk: nn.Module, head: ClassifierHead) -> None:
        super().__init__()
        self.trunk, self.head = trunk, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


@torch.inference_mode()
def _predict(model: nn.Module, loader: DataLoader, device: torch.device, binary: bool) -> npt.NDArray[np.float64]:
    model.eval()
    out = []
    for x, _ in loader:
        logits = model(x.to(device)).float()
        out.append((torch.sigmoid(logits[:, 0]) if binary else torch.softmax(logits, 1)).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def run_finetune(cfg: FinetuneConfig) -> FinetuneResult:
    """Train, keep the best tune checkpoint, score it on test; see module docstring."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    cache = build_cache(cfg.data)
    recs = {s: cache.table.select(s, cfg.data.fraction, cfg.data.fraction_seed) for s in ("train", "tune", "test")}
    labels = TaskLabels.from_records(recs["train"], cfg.data.label_column, cfg.task)
    ys = {s: labels.encode(recs[s]) for s in recs}
    binary = cfg.task == "binary"
    if cfg.init == "random":
        trunk, enc_cfg = build_encoder(cfg.encoder), cfg.encoder
    else:
        if cfg.weights is None:  # guarded by FinetuneConfig
            raise ValueError("weights missing")
        trunk, enc_cfg = load_trunk(cfg.weights)
    hidden = cfg.head_hidden if cfg.head_hidden is not None else (enc_cfg.n_features // 2,)
    head = ClassifierHead(enc_cfg.n_features, hidden, 1 if binary else len(labels.class_names), cfg.dropout)
    model = FinetuneModel(trunk, head).to(device)
    if device.type == "cpu":
        use_fast_stem(model.trunk)
    use_bf16 = cfg.bf16 and device.type == "cuda"
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    train_ds = LabelledDataset(cache, [r.index for r in recs["train"]], ys["train"],
                               FinetuneAugment(cfg.translate, cfg.translate_p, cfg.flip_p, cfg.flip, cfg.rotate_p,
                                               cfg.smooth_p), cfg.seed, binary)  # fmt: skip
    bs = min(cfg.batch_size, len(train_ds))
    sampler = ResumableBatchSampler(len(train_ds), bs, 1, 0, cfg.seed)

    def eval_loader(split: str) -> DataLoader:
        ds = LabelledDataset(cache, [r.index for r in recs[split]], ys[split], None, cfg.seed, binary)
        keys = [(0, i) for i in range(len(ds))]
        batches = [keys[k : k + EVAL_BATCH] for k in range(0, len(keys), EVAL_BATCH)]  # the tail too
        return DataLoader(ds, batch_sampler=batches, num_workers=0)

    tune_loader, test_loader = eval_loader("tune"), eval_loader("test")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(to_toml(cfg))
    best = (-np.inf, 0)
    ckpt = out / "best.pt"
    metric = "auc" if binary else "balanced_accuracy"
    with open(out / "log.csv", "w", newline="") as f:
        csv.writer(f).writerow(["epoch", "lr", "train_loss", "tune_" + metric])
    for epoch in range(cfg.epochs):
        model.train()
        sampler.set_position(epoch)
        losses = []
        lr = opt.param_groups[0]["lr"]
        for x, y in DataLoader(train_ds, batch_sampler=sampler, num_workers=cfg.data.workers):
            x, y = x.to(device), y.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(x).float()
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], y) if binary else F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        tune_score = score(cfg.task, np.asarray(ys["tune"]), _predict(model, tune_loader, device, binary))
        with open(out / "log.csv", "a", newline="") as f:
            csv.writer(f).writerow([epoch + 1, f"{lr:.6g}", f"{np.mean(losses):.6f}", f"{tune_score:.6f}"])
        if (np.isfinite(tune_score) and tune_score > best[0]) or best[1] == 0:
            best = (tune_score, epoch + 1)
            enc = asdict(enc_cfg)
            enc["layers"] = list(enc_cfg.layers)
            save_atomic(
                {"trunk_state_dict": {k: v.detach().cpu() for k, v in model.trunk.state_dict().items()},
                 "head_state_dict": {k: v.detach().cpu() for k, v in model.head.state_dict().items()},
                 "encoder": enc, "class_names": list(labels.class_names), "task": cfg.task,
                 "epoch": epoch + 1, "tune_metric": tune_score},
                ckpt,
            )  # fmt: skip
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model.trunk.load_state_dict(state["trunk_state_dict"])
    model.head.load_state_dict(state["head_state_dict"])
    test_p = _predict(model, test_loader, device, binary)
    test_score = score(cfg.task, np.asarray(ys["test"]), test_p)
    (out / "metrics.json").write_text(json.dumps(
        {"metric": metric, "best_epoch": best[1], "tune": best[0], "test": test_score,
         "init": cfg.init, "fraction": cfg.data.fraction}, indent=2))  # fmt: skip
    return FinetuneResult(best[1], metric, float(best[0]), test_score, ckpt, test_p,
                          np.asarray(ys["test"], dtype=np.int64))  # fmt: skip
