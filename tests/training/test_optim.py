"""Schedules (per-step warm-up + cosine; the authors' per-epoch cosine), LARS and LARC against formulas."""

from __future__ import annotations

import math

import pytest
import torch
from mhub_fmcib_train.optim import (
    LARC,
    LARS,
    authors_code_cosine,
    build_scheduler,
    warmup_cosine,
    warmup_cosine_scheduler,
)


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


def _hand_lars(p: torch.Tensor, grads: list[torch.Tensor], lr: float, mom: float, wd: float, tc: float) -> torch.Tensor:
    """The authors' LARS from its formula: d = (g + wd p) · tc ‖p‖ / (‖g‖ + wd ‖p‖ + eps),
    no clip, buf = mom · buf + d, p -= lr · buf (float64)."""
    p = p.double().clone()
    buf = None
    for g in grads:
        g = g.double()
        pn, gn = float(p.norm()), float(g.norm())
        d = (g + wd * p) * (tc * pn / (gn + wd * pn + 1e-8)) if pn > 0 and gn > 0 else g
        buf = d if buf is None else mom * buf + d
        p = p - lr * buf
    return p


def test_lars_scale_mode_steps_match_the_formula_for_every_tensor() -> None:
    g = torch.Generator().manual_seed(1)
    w0, b0 = torch.randn(3, 4, generator=g), torch.randn(3, generator=g)
    gw = [torch.randn(3, 4, generator=g) for _ in range(3)]
    gb = [torch.randn(3, generator=g) for _ in range(3)]
    w, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(b0.clone())
    lr, mom, wd, tc = 0.075, 0.9, 1e-6, 1e-3
    opt = LARS([w, b], lr=lr, momentum=mom, weight_decay=wd, trust_coefficient=tc)
    assert len(opt.param_groups) == 1
    for a, c in zip(gw, gb, strict=True):
        w.grad, b.grad = a.clone(), c.clone()
        opt.step()
    # biases are adapted too (one group, no exclusion), unlike LARC's exclude_1d
    torch.testing.assert_close(w.detach().double(), _hand_lars(w0, gw, lr, mom, wd, tc), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(b.detach().double(), _hand_lars(b0, gb, lr, mom, wd, tc), rtol=1e-6, atol=1e-9)


def test_lars_first_step_is_lr_times_trust_times_norm_ratio_without_clip() -> None:
    p = torch.nn.Parameter(torch.full((10,), 2.0, dtype=torch.float64))
    p.grad = torch.full((10,), 0.01, dtype=torch.float64)
    lr, tc = 0.075, 1e-3
    LARS([p], lr=lr, momentum=0.9, weight_decay=0.0 + 1e-12, trust_coefficient=tc).step()
    pn, gn = 2.0 * 10**0.5, 0.01 * 10**0.5
    step = lr * tc * pn / gn * 0.01  # per element: lr · trust · ‖p‖/‖g‖ · g
    assert float(2.0 - p.detach()[0]) == pytest.approx(step, rel=1e-6)
    # LARC clip mode caps the same rate at lr: min(lr, tc ‖p‖/‖g‖) = min(0.075, 0.2)
    q = torch.nn.Parameter(torch.full((4, 10), 2.0, dtype=torch.float64))
    q.grad = torch.full((4, 10), 0.01, dtype=torch.float64)
    LARC([q], lr=lr, momentum=0.9, weight_decay=1e-12, trust_coefficient=tc, clip=True).step()
    assert float(2.0 - q.detach()[0, 0]) == pytest.approx(lr * 0.01, rel=1e-6)
    # scale mode / clip mode = trust · ‖p‖/‖g‖ (= 0.2 here) whenever trust ‖p‖/‖g‖ >= 1 · lr
    assert step / (lr * 0.01) == pytest.approx(tc * pn / gn, rel=1e-6)


def test_lars_with_zero_weight_decay_is_plain_sgd_as_in_the_authors_code() -> None:
    p = torch.nn.Parameter(torch.ones(5))
    p.grad = torch.full((5,), 0.5)
    LARS([p], lr=0.1, momentum=0.9, weight_decay=0.0).step()
    torch.testing.assert_close(p.detach(), torch.full((5,), 1 - 0.05))


def test_authors_code_cosine_is_stepped_per_epoch_with_t_max_in_steps() -> None:
    spe, epochs = 179, 100
    total = spe * epochs
    p = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=0.075)
    sched = build_scheduler(opt, "authors_code_cosine", warmup_steps=10, total_steps=total, steps_per_epoch=spe)
    seen = []
    for _ in range(2 * spe + 1):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(0.075)  # no warm-up
    assert seen[spe - 1] == pytest.approx(0.075)  # constant within an epoch
    assert seen[spe] == pytest.approx(0.075 * 0.5 * (1 + math.cos(math.pi / total)))
    # the same as torch's CosineAnnealingLR stepped once per epoch
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.075)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=total)
    for e in range(epochs):
        assert authors_code_cosine(e * spe, spe, total) * 0.075 == pytest.approx(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert authors_code_cosine(total - 1, spe, total) > 0.9999  # the rate hardly moves
