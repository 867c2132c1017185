"""Projection head (pre-training), classifier head (fine-tuning) and the SimCLR model."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """SimCLR projection: Linear(in, hidden) → BatchNorm → ReLU → Linear(hidden, out).

    FMCIB: 4096 → 2048 → 128. Input (B, in) → output (B, out).
    """

    def __init__(self, in_dim: int = 4096, hidden_dim: int = 2048, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

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
    """``trunk`` (encoder) followed by a projection head. (B, 1, D, H, W) → (B, out)."""

    def __init__(self, trunk: nn.Module, head: ProjectionHead) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))
