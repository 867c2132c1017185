"""Layer-wise adaptive rate control: the authors' LARS (scale mode) and LARC (Apex clip mode)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer


def _check_hyperparameters(lr: float, momentum: float, weight_decay: float, trust_coefficient: float) -> None:
    if lr <= 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if weight_decay < 0 or trust_coefficient <= 0:
        raise ValueError("weight_decay must be >= 0 and trust_coefficient > 0")


class _TrustRatioSGD(Optimizer):
    """SGD with momentum on a per-tensor direction ``_direction(p, group)`` (the subclass's rule)::

    buf = momentum * buf + d     (buf = d at the first step)
    p  -= lr * buf
    """

    @staticmethod
    def _direction(p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = self._direction(p, group)
                if group["momentum"] != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                    d = state["momentum_buffer"]
                p.add_(d.to(p.dtype), alpha=-group["lr"])
        return loss


class LARC(_TrustRatioSGD):
    """SGD with momentum whose per-tensor learning rate is scaled by a trust ratio.

    For a parameter tensor ``p`` with gradient ``g`` (per step, per tensor)::

        local = trust_coefficient * ||p|| / (||g|| + weight_decay * ||p|| + eps)
        local = min(local / lr, 1)              if clip   (LARC "clip" mode)
        d     = (g + weight_decay * p) * local  (d = g + weight_decay * p when ||p|| or ||g|| is 0)
        buf   = momentum * buf + d              (buf = d at the first step)
        p    -= lr * buf

    With ``clip`` the effective rate is ``min(lr, trust * ||p|| / ||g||)``; without it it is
    ``lr * trust * ||p|| / ||g||`` (LARS). Tensors with one dimension (biases, norm
    weights) skip adaptation and weight decay when ``exclude_1d`` (the usual SimCLR choice).

    Args:
        params: parameters or parameter groups.
        lr: learning rate (FMCIB: 0.3 × global batch / 256); schedulers change it per step.
        momentum: SGD momentum (0.9).
        weight_decay: L2 coefficient (1e-6).
        trust_coefficient: 0.001.
        clip: LARC clip mode (Apex default True).
        eps: added to the denominator.
        exclude_1d: skip adaptation and weight decay for 1-D tensors.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        trust_coefficient: float = 1e-3,
        clip: bool = True,
        eps: float = 1e-8,
        exclude_1d: bool = True,
    ) -> None:
        _check_hyperparameters(lr, momentum, weight_decay, trust_coefficient)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "clip": clip,
            "eps": eps,
            "exclude_1d": exclude_1d,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _direction(p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        g = p.grad
        if g is None:  # guarded by the caller
            raise ValueError("parameter has no gradient")
        g = g.float()
        if group["exclude_1d"] and p.ndim <= 1:
            return g.clone()
        pf, wd = p.float(), group["weight_decay"]
        p_norm = torch.linalg.vector_norm(pf)
        g_norm = torch.linalg.vector_norm(g)
        d = g + wd * pf
        if p_norm > 0 and g_norm > 0:
            local = group["trust_coefficient"] * p_norm / (g_norm + wd * p_norm + group["eps"])
            if group["clip"]:
                local = torch.clamp(local / group["lr"], max=1.0)
            d = d * local
        return d


class LARS(_TrustRatioSGD):
    """The authors' LARS (``fmcib.optimizers.LARS``, scale mode, one parameter group).

    For every parameter tensor ``p`` with gradient ``g`` (biases and norm weights too)::

        if weight_decay != 0 and ||p|| > 0 and ||g|| > 0:
            d = (g + weight_decay * p) * trust_coefficient * ||p|| / (||g|| + weight_decay * ||p|| + eps)
        else:
            d = g
        buf = momentum * buf + d                (buf = d at the first step)
        p  -= lr * buf

    The step is ``lr · trust · ||p|| / ||g||`` relative to the gradient, with no clip
    (compare :class:`LARC`, whose clip mode caps the rate at ``lr``).

    Args:
        params: parameters (the authors pass ``model.parameters()``: one group).
        lr: learning rate (FMCIB: 0.3 × global batch / 256).
        momentum: SGD momentum (0.9).
        weight_decay: L2 coefficient (1e-6); 0 disables the adaptation as in the authors' code.
        trust_coefficient: 0.001.
        eps: added to the denominator (1e-8).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        trust_coefficient: float = 1e-3,
        eps: float = 1e-8,
    ) -> None:
        _check_hyperparameters(lr, momentum, weight_decay, trust_coefficient)
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "trust_coefficient": trust_coefficient, "eps": eps}  # fmt: skip
        super().__init__(params, defaults)

    @staticmethod
    def _direction(p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        g = p.grad
        if g is None:  # guarded by the caller
            raise ValueError("parameter has no gradient")
        wd = group["weight_decay"]
        if wd == 0:
            return g
        p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
        if p_norm == 0 or g_norm == 0:
            return g
        trust = group["trust_coefficient"] * p_norm / (g_norm + p_norm * wd + group["eps"])
        return (g + wd * p) * trust
