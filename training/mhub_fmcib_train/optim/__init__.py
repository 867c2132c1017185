"""Optimisers and learning-rate schedules."""

from .lars import LARC
from .schedule import warmup_cosine, warmup_cosine_scheduler

__all__ = ["LARC", "warmup_cosine", "warmup_cosine_scheduler"]
