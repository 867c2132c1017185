"""Losses: the authors' background-only InfoNCE (default) and our NT-Xent + background."""

from .background_nce import BackgroundInfoNCELoss
from .ntx_ent import NTXentLoss

#: Names of the pre-training losses (``PretrainConfig.loss``).
LOSSES = ("background_infonce", "ntxent+background")

__all__ = ["LOSSES", "BackgroundInfoNCELoss", "NTXentLoss"]
