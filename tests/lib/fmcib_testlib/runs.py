"""Small typed records that test fixtures return (instead of tuples)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mhub_fmcib.export.tables import RunReport


@dataclass(frozen=True, eq=False)
class RunOutput:
    """A finished run: its report and its output folder."""

    report: RunReport
    out: Path


@dataclass(frozen=True, eq=False)
class WatchedRun(RunOutput):
    """A run with snapshots of the file tree around it and the RSS growth (bytes) it caused."""

    before: dict[str, tuple[str, int, str]]
    after: dict[str, tuple[str, int, str]]
    rss_growth: int
