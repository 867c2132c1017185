"""Projection head (pre-training), classifier head (fine-tuning) and the SimCLR model."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """SimCLR projection on the features. (B, in) → (B, out).

    ``batch_norm=False`` (the authors': lightly ``SimCLRProjectionHead(4096, 2048, 128,
    batch_norm=False)``): Linear(in, hidden) → ReLU → Linear(hidden, out), both with bias.
    ``batch_norm=True`` (ours before): Linear(in, hidden, no bias) → BatchNorm1d → ReLU →
    Linear(hidden, out). FMCIB: 4096 → 2048 → 128.
    """

    def __init__(
        self, in_dim: int = 4096, hidden_dim: int = 2048, out_dim: int = 128, batch_norm: bool = False
    ) -> None:
        super().__init__()
        first: list[nn.Module] = (
            [nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim)]
            if batch_norm
            else [nn.Linear(in_dim, hidden_dim)]
        )
        self.net = nn.Sequential(*first, nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ClassifierHead(nn.Module):
    """MLP on the features: (Linear → ReLU → Dropout) per hidden size, then Linear(n_out).

    ``n_out`` is 1 for a binary task (one logit) or the number of classes.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], n_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            d = h
        layers.append(nn.Linear(d, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SimCLRModel(nn.Module):
    """``trunk`` (encoder) followed by a projection head. (B, 1, D, H, W) → (B, out).

    Given a list of batches, each goes through the model on its own (its own batch-norm
    statistics, as the authors' ``ExNegSimCLR`` forwards each view separately) and the
    outputs are concatenated in order.
    """

    def __init__(self, trunk: nn.Module, head: ProjectionHead) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if isinstance(x, list):
            return torch.cat([self.head(self.trunk(xi)) for xi in x])
        return self.head(self.trunk(x))
