"""The authors' pre-training criterion: InfoNCE whose negatives are background views only.

After ``NegativeMiningInfoNCECriterion`` of the FMCIB code (VISSL-derived). Every lesion
``i`` (N lesions over all processes) comes with two views of its patch, ``z0[i]``,
``z1[i]``, and two views of one *background* patch drawn afresh, at random, from the same
scan, ``b0[i]``, ``b1[i]``. For each of the 2N lesion views ``a`` (anchor) with positive
``p`` (the other view of the same lesion) and cosine similarity ``s``::

    l_a = -log( exp(s(a, p) / t) /
                ( exp(s(a, p) / t) + sum_{j != i, v in {0, 1}} exp(s(a, b_v[j]) / t) ) )

The denominator holds the positive and the 2(N - 1) background views of the *other*
lesions' samples: never another lesion, never the anchor's own sample's background views
(N positive pairs and N·2(N−1) negative pairs per step). Background views are never
anchors. The loss is the mean of ``l_a`` over this process's 2n anchors; with
``gather_distributed`` the background views of all processes are gathered
(differentiably), so with DDP's gradient averaging the mean over processes equals the
one-process loss on the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import dist as udist


class BackgroundInfoNCELoss(nn.Module):
    """InfoNCE over lesion positives with background-only negatives (see module docstring).

    Args:
        temperature: ``t``, 0.1 in FMCIB.
        gather_distributed: gather the background views from all processes.
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z0: torch.Tensor, z1: torch.Tensor, b0: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
        """Args: ``z0``, ``z1`` (n, D) projections of the two views of this process's n
        lesions; ``b0``, ``b1`` (n, D) projections of the two views of each lesion's
        background patch (row i belongs to lesion i). Every process passes the same n.
        Returns a scalar (float32)."""
        shapes = {tuple(t.shape) for t in (z0, z1, b0, b1)}
        if len(shapes) != 1 or z0.ndim != 2:
            raise ValueError(
                f"lesion and background views must all be (n, D); got {[tuple(t.shape) for t in (z0, z1, b0, b1)]}"
            )
        n = z0.shape[0]
        z0, z1 = F.normalize(z0.float(), dim=1), F.normalize(z1.float(), dim=1)
        b0, b1 = F.normalize(b0.float(), dim=1), F.normalize(b1.float(), dim=1)
        if self.gather_distributed and udist.world_size() > 1:
            b0_all, b1_all = udist.cat_all(b0), udist.cat_all(b1)
            offset = udist.rank() * n
        else:
            b0_all, b1_all, offset = b0, b1, 0
        anchors = torch.cat([z0, z1])  # (2n, D)
        positives = torch.cat([z1, z0])
        pos = (anchors * positives).sum(1, keepdim=True) / self.temperature  # (2n, 1)
        neg = anchors @ torch.cat([b0_all, b1_all]).T / self.temperature  # (2n, 2N)
        big_n = b0_all.shape[0]
        own = torch.arange(n, device=z0.device) + offset
        own = torch.cat([own, own])  # anchor row -> its lesion's global index
        rows = torch.arange(2 * n, device=z0.device)
        neg = neg.index_put((rows, own), torch.tensor(float("-inf"), device=z0.device))
        neg = neg.index_put((rows, own + big_n), torch.tensor(float("-inf"), device=z0.device))
        logits = torch.cat([pos, neg], dim=1)
        return (torch.logsumexp(logits, dim=1) - pos[:, 0]).mean()


__all__ = ["BackgroundInfoNCELoss"]
