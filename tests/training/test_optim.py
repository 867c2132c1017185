"""Per-step warm-up + cosine schedule and LARC against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from mhub_fmcib_train.optim import LARC, warmup_cosine, warmup_cosine_scheduler


def test_schedule_values_follow_formula_per_step() -> None:
    p = torch.nn.Parameter(torch.ones(2, 2))
    opt = torch.optim.SGD([p], lr=0.3)
    sched = warmup_cosine_scheduler(opt, warmup_steps=4, total_steps=20)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.3 * (s + 1) / 4 for s in range(4)]
    expected += [0.3 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 16)) for s in range(4, 20)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[3] == pytest.approx(0.3)  # warm-up ends at the base rate
    assert warmup_cosine(20, 4, 20) == pytest.approx(0.0)


def test_schedule_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError, match="warmup"):
        warmup_cosine(0, 30, 20)


def _hand_larc(
    p: torch.Tensor, grads: list[torch.Tensor], lr: float, mom: float, wd: float, tc: float, clip: bool
) -> torch.Tensor:
    p = p.double().clone()
    buf = None
    for g in grads:
        g = g.double()
        pn, gn = float(p.norm()), float(g.norm())
        local = tc * pn / (gn + wd * pn + 1e-8)
        if clip:
            local = min(local / lr, 1.0)
        d = (g + wd * p) * local
        buf = d if buf is None else mom * buf + d
        p = p - lr * buf
    return p


@pytest.mark.parametrize("clip", [True, False])
def test_larc_two_steps_match_hand_computation(clip: bool) -> None:
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(3, 4, generator=g)
    b0 = torch.randn(3, generator=g)
    grads_w = [torch.randn(3, 4, generator=g) for _ in range(2)]
    grads_b = [torch.randn(3, generator=g) for _ in range(2)]
    w, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(b0.clone())
    lr, mom, wd, tc = 0.5, 0.9, 1e-2, 1e-3 if clip else 0.2
    opt = LARC([w, b], lr=lr, momentum=mom, weight_decay=wd, trust_coefficient=tc, clip=clip)
    for gw, gb in zip(grads_w, grads_b, strict=True):
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
    expected_w = _hand_larc(w0, grads_w, lr, mom, wd, tc, clip)
    torch.testing.assert_close(w.detach().double(), expected_w, rtol=1e-6, atol=1e-7)
    # 1-D tensors: plain SGD with momentum, no adaptation, no weight decay
    expected_b = b0.double() - lr * (grads_b[0].double() * (1 + mom) + grads_b[1].double())
    torch.testing.assert_close(b.detach().double(), expected_b, rtol=1e-6, atol=1e-7)
