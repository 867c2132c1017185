"""NT-Xent (SimCLR) with extra negatives: background patches join every denominator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import dist as udist


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross-entropy over two views plus extra negatives.

    For each of the 2N anchors (N lesions, two views, all processes) with cosine
    similarity ``s``::

        l_i = -log( exp(s(i, p(i)) / t) /
                    ( sum_{k != i} exp(s(i, k) / t)  +  sum_m exp(s(i, b_m) / t) ) )

    where ``k`` runs over the other 2N - 1 views and ``b_m`` over the M background
    embeddings. The loss is the mean of ``l_i`` over this process's 2n anchors; with
    ``gather_distributed`` the candidates come from all processes (differentiably), so the
    mean over processes equals the one-process loss on the global batch.

    Args:
        temperature: ``t``, 0.1 in FMCIB.
        gather_distributed: gather embeddings from all processes before the loss.
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z0: torch.Tensor, z1: torch.Tensor, negatives: torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``z0``, ``z1`` (n, D) projections of the two views of this process's n
        lesions (row i of both is lesion i); ``negatives`` (m, D) background projections or
        None. Every process must pass the same n and m. Returns a scalar (float32)."""
        if z0.shape != z1.shape or z0.ndim != 2:
            raise ValueError(f"views must both be (n, D), got {tuple(z0.shape)} and {tuple(z1.shape)}")
        n = z0.shape[0]
        z0 = F.normalize(z0.float(), dim=1)
        z1 = F.normalize(z1.float(), dim=1)
        gather = self.gather_distributed and udist.world_size() > 1
        if gather:
            z0_all, z1_all = udist.cat_all(z0), udist.cat_all(z1)
            offset = udist.rank() * n
        else:
            z0_all, z1_all, offset = z0, z1, 0
        big_n = z0_all.shape[0]
        cands = [z0_all, z1_all]
        if negatives is not None and negatives.numel() > 0:
            if negatives.ndim != 2 or negatives.shape[1] != z0.shape[1]:
                raise ValueError(f"negatives must be (m, {z0.shape[1]}), got {tuple(negatives.shape)}")
            neg = F.normalize(negatives.float(), dim=1)
            cands.append(udist.cat_all(neg) if gather else neg)
        candidates = torch.cat(cands, dim=0)
        anchors = torch.cat([z0, z1], dim=0)  # (2n, D)
        logits = anchors @ candidates.T / self.temperature
        idx = torch.arange(n, device=z0.device) + offset
        self_idx = torch.cat([idx, idx + big_n])
        pos_idx = torch.cat([idx + big_n, idx])
        rows = torch.arange(2 * n, device=z0.device)
        logits = logits.index_put((rows, self_idx), torch.tensor(float("-inf"), device=z0.device))
        return F.cross_entropy(logits, pos_idx)
