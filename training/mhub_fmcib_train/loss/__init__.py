"""Losses."""

from .ntx_ent import NTXentLoss

__all__ = ["NTXentLoss"]
