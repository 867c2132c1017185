"""Learning-rate schedules, as multipliers of the base rate at optimizer step ``step``.

* ``warmup_cosine`` (default; the paper's "linear warm-up then cosine decay"): computed
  and applied **per optimizer step**.
* ``authors_code_cosine``: what the authors' released config does —
  ``CosineAnnealingLR(T_max = epochs · steps_per_epoch)`` with no warm-up, stepped by
  Lightning once per **epoch** — so after E epochs the multiplier is
  ``0.5 (1 + cos(pi E / T_max))``: with T_max counted in steps but stepped in epochs the
  rate hardly moves (DeepLesion: 100 epochs of 179 steps; it ends at 0.99992 of the base rate).
"""

from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

#: Names of the schedules (``PretrainConfig.schedule``).
Schedule = Literal["warmup_cosine", "authors_code_cosine"]


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


def authors_code_cosine(step: int, steps_per_epoch: int, t_max: int) -> float:
    """Multiplier at optimizer step ``step`` of a ``CosineAnnealingLR(T_max=t_max)``
    (eta_min 0) that is stepped once per epoch: ``0.5 (1 + cos(pi · epoch / t_max))`` with
    ``epoch = step // steps_per_epoch``."""
    if steps_per_epoch < 1 or t_max < 1:
        raise ValueError(f"need steps_per_epoch ({steps_per_epoch}) >= 1 and t_max ({t_max}) >= 1")
    epoch = step // steps_per_epoch
    return 0.5 * (1.0 + math.cos(math.pi * epoch / t_max))


def warmup_cosine_scheduler(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, final_ratio: float = 0.0
) -> LambdaLR:
    """A scheduler to be stepped once per optimizer step (not per epoch)."""
    warmup_cosine(0, warmup_steps, total_steps, final_ratio)  # validate now

    def f(step: int) -> float:
        return warmup_cosine(step, warmup_steps, total_steps, final_ratio)

    return LambdaLR(optimizer, f)


def build_scheduler(
    optimizer: Optimizer,
    schedule: str,
    warmup_steps: int,
    total_steps: int,
    steps_per_epoch: int,
    final_ratio: float = 0.0,
) -> LambdaLR:
    """The named schedule as a ``LambdaLR`` stepped once per optimizer step.

    ``authors_code_cosine`` uses ``T_max = total_steps`` (the authors' ``max_epochs ·
    len(dataset) // global_batch``) and ignores ``warmup_steps`` and ``final_ratio``.
    """
    if schedule == "warmup_cosine":
        return warmup_cosine_scheduler(optimizer, min(warmup_steps, total_steps), total_steps, final_ratio)
    if schedule == "authors_code_cosine":
        authors_code_cosine(0, steps_per_epoch, total_steps)  # validate now

        def f(step: int) -> float:
            return authors_code_cosine(step, steps_per_epoch, total_steps)

        return LambdaLR(optimizer, f)
    raise ValueError(f"unknown schedule {schedule!r}; use 'warmup_cosine' or 'authors_code_cosine'")
