"""NT-Xent against a naive loop over the SimCLR formula, and 2 processes vs 1."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from mhub_fmcib_train.loss import NTXentLoss


def naive_ntxent(z0: torch.Tensor, z1: torch.Tensor, neg: torch.Tensor | None, t: float) -> float:
    """Straight from the formula: anchors are the 2N views; denominators run over the
    other 2N - 1 views and every background embedding."""
    views = [v / v.norm() for v in torch.cat([z0, z1]).double()]
    negs = [v / v.norm() for v in neg.double()] if neg is not None else []
    n = z0.shape[0]
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        num = math.exp(float(views[i] @ views[pos]) / t)
        den = sum(math.exp(float(views[i] @ views[k]) / t) for k in range(2 * n) if k != i)
        den += sum(math.exp(float(views[i] @ b) / t) for b in negs)
        total += -math.log(num / den)
    return total / (2 * n)


@pytest.mark.parametrize(("n", "m", "t"), [(4, 0, 0.1), (6, 5, 0.1), (3, 8, 0.5)])
def test_ntxent_equals_naive_formula(n: int, m: int, t: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + m)
    z0, z1 = torch.randn(n, 16, generator=g), torch.randn(n, 16, generator=g)
    neg = torch.randn(m, 16, generator=g) if m else None
    got = float(NTXentLoss(temperature=t)(z0, z1, neg))
    assert got == pytest.approx(naive_ntxent(z0, z1, neg, t), rel=1e-5)


def test_ntxent_perfect_pairs_have_low_loss() -> None:
    z = torch.eye(4, 8) * 10
    loss = NTXentLoss(0.1)(z, z.clone(), None)
    # positives cos 1, others cos 0: -log(e^10 / (e^10 + 6))
    assert float(loss) == pytest.approx(-math.log(math.exp(10) / (math.exp(10) + 6)), rel=1e-3)


def assert_close_float32(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to float32 summation order: relative 1e-5 of the tensor's scale."""
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


def _one_process() -> tuple[float, list[torch.Tensor]]:
    sys.path.insert(0, str(Path(__file__).parent))
    from _ntxent_dist_worker import _data

    x0, x1, xb, _, lin = _data()
    loss = NTXentLoss(0.1)(lin(x0), lin(x1), lin(xb))
    loss.backward()
    return float(loss.detach()), [p.grad for p in lin.parameters()]  # type: ignore[misc]


def test_two_processes_with_gathering_equal_one_process(two_process_losses: dict) -> None:  # type: ignore[type-arg]
    want_loss, want_grads = _one_process()
    got_loss, got_grads = two_process_losses["ntxent/gather"]
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    for g2, g1 in zip(got_grads, want_grads, strict=True):
        assert_close_float32(torch.from_numpy(g2), g1)
    assert float(want_grads[0].abs().sum()) > 0


@pytest.mark.parametrize("scenario", ["no_gather", "broken_no_reduce", "broken_reversed"])
def test_the_tolerance_still_catches_a_wrong_gather(two_process_losses: dict, scenario: str) -> None:  # type: ignore[type-arg]
    """The comparison above fails (beyond its tolerance) for no gather, a gather whose
    backward does not sum the processes' gradients, and ranks gathered out of order."""
    want_loss, want_grads = _one_process()
    got_loss, got_grads = two_process_losses[f"ntxent/{scenario}"]
    loss_off = abs(got_loss - want_loss) > 1e-5 * abs(want_loss)
    grads_off = False
    for g2, g1 in zip(got_grads, want_grads, strict=True):
        try:
            assert_close_float32(torch.from_numpy(g2), g1)
        except AssertionError:
            grads_off = True
    assert loss_off or grads_off
