"""Lesion table, patch cache and datasets."""

from .cache import PatchCache, build_cache
from .table import LesionRecord, LesionTable

__all__ = ["LesionRecord", "LesionTable", "PatchCache", "build_cache"]
