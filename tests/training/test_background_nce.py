"""The authors' background-only InfoNCE against re-derivations of its formula, 1 vs 2 processes."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mhub_fmcib_train.loss import BackgroundInfoNCELoss

sys.path.insert(0, str(Path(__file__).parent))
from _ntxent_dist_worker import _data
from test_ntx_ent import assert_close_float32


def naive(z0: torch.Tensor, z1: torch.Tensor, b0: torch.Tensor, b1: torch.Tensor, t: float) -> float:
    """Straight from the formula, in float64 loops: for lesion i and view v, the numerator
    is exp(s(v_i, other view of i) / t); the denominator adds exp(s(v_i, b) / t) for both
    background views b of every *other* lesion j != i; mean over the 2N anchors."""
    unit = [[v / v.norm() for v in x.double()] for x in (z0, z1, b0, b1)]
    lesion, bg = unit[:2], unit[2:]
    n = z0.shape[0]
    total = 0.0
    for i in range(n):
        for v in range(2):
            a = lesion[v][i]
            num = math.exp(float(a @ lesion[1 - v][i]) / t)
            den = num + sum(math.exp(float(a @ bg[w][j]) / t) for j in range(n) if j != i for w in range(2))
            total += -math.log(num / den)
    return total / (2 * n)


def masked_per_rank(z0: torch.Tensor, z1: torch.Tensor, b0: torch.Tensor, b1: torch.Tensor, t: float,
                    world: int) -> float:  # fmt: skip
    """The criterion as the authors lay it out: rank r holds n lesions and its embedding
    block [view0 (n), view1 (n), bg0 (n), bg1 (n)]; blocks are gathered in rank order
    (4nW rows). Anchor row k < 2n of rank r: positive mask on the other view of the same
    lesion in r's block; negative mask on every background row of every block except the
    two of the anchor's own lesion. Loss per rank = -mean log(pos / (pos + neg)); the
    result is the mean over ranks (what DDP's gradient averaging optimises)."""
    n = z0.shape[0] // world
    blocks = [torch.cat([x[r * n : (r + 1) * n] for x in (z0, z1, b0, b1)]).double() for r in range(world)]
    buf = torch.nn.functional.normalize(torch.cat(blocks), dim=1)
    losses = []
    for r in range(world):
        emb = buf[4 * n * r : 4 * n * (r + 1)]
        sim = torch.exp(emb @ buf.T / t)
        pos_mask = torch.zeros_like(sim)
        neg_mask = torch.zeros_like(sim)
        bg_cols = [4 * n * q + 2 * n + k for q in range(world) for k in range(2 * n)]
        for v in range(2):
            for i in range(n):
                row = v * n + i
                pos_mask[row, 4 * n * r + (1 - v) * n + i] = 1
                own = {4 * n * r + 2 * n + i, 4 * n * r + 3 * n + i}
                for c in bg_cols:
                    if c not in own:
                        neg_mask[row, c] = 1
        assert int(neg_mask[0].sum()) == 2 * (z0.shape[0] - 1)  # 2(N - 1) negatives per anchor
        pos = (sim * pos_mask).sum(1)[: 2 * n]
        neg = (sim * neg_mask).sum(1)[: 2 * n]
        losses.append(float(-torch.log(pos / (pos + neg)).mean()))
    return float(np.mean(losses))


def _random(n: int, d: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g) for _ in range(4)]


@pytest.mark.parametrize(("n", "t"), [(2, 0.1), (5, 0.1), (7, 0.5)])
def test_equals_the_formula(n: int, t: float) -> None:
    z = _random(n, 16, n)
    got = float(BackgroundInfoNCELoss(t)(*z))
    assert got == pytest.approx(naive(*z, t), rel=1e-5)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_equals_the_authors_mask_layout_for_any_world_size(world: int) -> None:
    z = _random(8, 16, 3)
    got = float(BackgroundInfoNCELoss(0.1)(*z))
    assert got == pytest.approx(masked_per_rank(*z, 0.1, world), rel=1e-5)


def test_denominator_holds_exactly_two_n_minus_one_background_views() -> None:
    # every embedding identical: each exp term is e^(1/t), so l = log(1 + 2(N - 1))
    n = 6
    z = [torch.ones(n, 4) for _ in range(4)]
    assert float(BackgroundInfoNCELoss(0.1)(*z)) == pytest.approx(math.log(1 + 2 * (n - 1)), rel=1e-6)


def test_other_lesions_are_never_negatives() -> None:
    z0, z1, b0, b1 = _random(5, 8, 1)
    base = float(BackgroundInfoNCELoss(0.1)(z0, z1, b0, b1))
    # moving lesion 0's views changes only lesion 0's own two terms, never another
    # anchor's denominator (the module's loss is the mean of these per-anchor terms)
    z0b, z1b = z0.clone(), z1.clone()
    z0b[0], z1b[0] = torch.randn(8), torch.randn(8)
    moved = float(BackgroundInfoNCELoss(0.1)(z0b, z1b, b0, b1))
    per_anchor = []
    for zz0, zz1 in ((z0, z1), (z0b, z1b)):
        t = []
        for i in range(5):
            for a, p in ((zz0[i], zz1[i]), (zz1[i], zz0[i])):
                a, p = a / a.norm(), p / p.norm()
                num = math.exp(float(a @ p) / 0.1)
                den = num + sum(math.exp(float(a @ (b[j] / b[j].norm())) / 0.1)
                                for j in range(5) if j != i for b in (b0, b1))  # fmt: skip
                t.append(-math.log(num / den))
        per_anchor.append(t)
    assert per_anchor[0][2:] == pytest.approx(per_anchor[1][2:], rel=1e-12)
    assert base == pytest.approx(np.mean(per_anchor[0]), rel=1e-5)
    assert moved == pytest.approx(np.mean(per_anchor[1]), rel=1e-5)


def _one_process() -> tuple[float, list[torch.Tensor]]:
    x0, x1, _, bb, lin = _data()
    loss = BackgroundInfoNCELoss(0.1)(lin(x0), lin(x1), lin(bb[0]), lin(bb[1]))
    loss.backward()
    return float(loss.detach()), [p.grad for p in lin.parameters()]  # type: ignore[misc]


def test_two_processes_with_gathering_equal_one_process(two_process_losses: dict) -> None:  # type: ignore[type-arg]
    want_loss, want_grads = _one_process()
    got_loss, got_grads = two_process_losses["background_infonce/gather"]
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    for g2, g1 in zip(got_grads, want_grads, strict=True):
        assert_close_float32(torch.from_numpy(g2), g1)


def test_two_processes_without_gathering_use_only_local_negatives(two_process_losses: dict) -> None:  # type: ignore[type-arg]
    x0, x1, _, bb, lin = _data()
    with torch.no_grad():
        z = [lin(x) for x in (x0, x1, bb[0], bb[1])]
    n = x0.shape[0] // 2
    want = np.mean([naive(*[t[r * n : (r + 1) * n] for t in z], 0.1) for r in range(2)])
    assert two_process_losses["background_infonce/no_gather"][0] == pytest.approx(want, rel=1e-5)
    assert two_process_losses["background_infonce/no_gather"][0] != pytest.approx(_one_process()[0], rel=1e-3)


@pytest.mark.parametrize("scenario", ["broken_no_reduce", "broken_reversed"])
def test_the_tolerance_catches_a_wrong_gather(two_process_losses: dict, scenario: str) -> None:  # type: ignore[type-arg]
    want_loss, want_grads = _one_process()
    got_loss, got_grads = two_process_losses[f"background_infonce/{scenario}"]
    off = abs(got_loss - want_loss) > 1e-5 * abs(want_loss)
    for g2, g1 in zip(got_grads, want_grads, strict=True):
        try:
            assert_close_float32(torch.from_numpy(g2), g1)
        except AssertionError:
            off = True
    assert off
