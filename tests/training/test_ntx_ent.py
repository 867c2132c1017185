"""NT-Xent against a naive loop over the SimCLR formula, and 2 processes vs 1."""

from __future__ import annotations

import math
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
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


def test_two_processes_with_gathering_equal_one_process() -> None:
    # the worker lives in a plain module so that spawned children can import it by name
    # (pytest's importlib mode makes test modules unimportable there)
    sys.path.insert(0, str(Path(__file__).parent))
    from _ntxent_dist_worker import _data, _worker

    x0, x1, xb, lin = _data()
    loss = NTXentLoss(0.1)(lin(x0), lin(x1), lin(xb))
    loss.backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    got_loss, got_grads = q.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert got_loss == pytest.approx(float(loss.detach()), rel=1e-6)
    for g2, p in zip(got_grads, lin.parameters(), strict=True):
        torch.testing.assert_close(torch.from_numpy(g2), p.grad, rtol=1e-5, atol=1e-7)
    assert float(lin.weight.grad.abs().sum()) > 0  # type: ignore[union-attr]
