"""Per-step learning-rate schedules."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, final_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for ``step < warmup_steps``, then cosine
    decay ``final + (1 - final) * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))``
    reaching ``final_ratio`` at ``step == total_steps``.
    """
    if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps})")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps == warmup_steps:
        return 1.0
    progress = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, final_ratio: float = 0.0
) -> LambdaLR:
    """A scheduler to be stepped once per optimizer step (not per epoch)."""
    warmup_cosine(0, warmup_steps, total_steps, final_ratio)  # validate now

    def f(step: int) -> float:
        return warmup_cosine(step, warmup_steps, total_steps, final_ratio)

    return LambdaLR(optimizer, f)
