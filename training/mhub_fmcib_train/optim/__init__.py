"""Optimisers and learning-rate schedules."""

from .lars import LARC, LARS
from .schedule import authors_code_cosine, build_scheduler, warmup_cosine, warmup_cosine_scheduler

__all__ = ["LARC", "LARS", "authors_code_cosine", "build_scheduler", "warmup_cosine", "warmup_cosine_scheduler"]
