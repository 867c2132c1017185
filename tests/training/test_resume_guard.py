"""Resume refuses a checkpoint of another world size or global batch; sync BN refuses CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mhub_fmcib_train.config import DataConfig, EncoderConfig, PretrainConfig
from mhub_fmcib_train.optim import build_scheduler
from mhub_fmcib_train.pretrain import _checkpoint, _place_model, _resume, build_model, build_optimizer

from mhub_fmcib.errors import ConfigError


def _cfg(**kw: object) -> PretrainConfig:
    return PretrainConfig(data=DataConfig(seeds_csv=Path("x.csv"), cache_dir=Path("c")), output_dir=Path("o"),
                          encoder=EncoderConfig(widen_factor=0.0625, layers=(1, 1, 1, 1)), projection_hidden=16,
                          projection_dim=8, device="cpu", **kw)  # type: ignore[arg-type]  # fmt: skip


def _parts(cfg: PretrainConfig, global_batch: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, object]:
    model = build_model(cfg)
    opt, _ = build_optimizer(cfg, model, global_batch)
    return model, opt, build_scheduler(opt, "warmup_cosine", 2, 10, 5)


def test_resume_takes_its_own_checkpoint_and_refuses_another_world_or_batch(tmp_path: Path) -> None:
    cfg = _cfg(batch_size=4)
    model, opt, sched = _parts(cfg, 8)
    ckpt = tmp_path / "last.pt"
    _checkpoint(model, opt, sched, 3, 2, 8, ckpt)  # type: ignore[arg-type]
    assert _resume(tmp_path / "missing.pt", model, opt, sched, 2, 8) == 0  # type: ignore[arg-type]
    assert _resume(ckpt, model, opt, sched, 2, 8) == 3  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"world size 2 and global batch 8; this launch has world size 1 and global batch 8"
    ):
        _resume(ckpt, model, opt, sched, 1, 8)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"global batch 16"):
        _resume(ckpt, model, opt, sched, 2, 16)  # type: ignore[arg-type]


def test_sync_batchnorm_on_cpu_says_which_mode_to_use_instead() -> None:
    cfg = _cfg(sync_batchnorm=True)
    with pytest.raises(ConfigError, match="bn_mode"):
        _place_model(build_model(cfg), cfg, 2, torch.device("cpu"), 0)


def test_groupnorm_mode_has_no_batch_norm_left() -> None:
    model = build_model(_cfg(bn_mode="groupnorm"))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
