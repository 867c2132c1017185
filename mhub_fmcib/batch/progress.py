"""Progress of a batch: a bar on a terminal, JSON lines for orchestrators, or nothing.

The CLI chooses (``--progress auto|bar|json|none``; ``auto`` is a bar on a terminal and
nothing otherwise, so CI logs stay quiet).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Protocol, TextIO

from tqdm import tqdm


class Progress(Protocol):
    """Receives the events of a run."""

    def start(self, total_cases: int) -> None: ...
    def case_done(self, case_id: str, lesions: int, failed: bool, skipped: bool) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    """Reports nothing."""

    def start(self, total_cases: int) -> None:
        pass

    def case_done(self, case_id: str, lesions: int, failed: bool, skipped: bool) -> None:
        pass

    def close(self) -> None:
        pass


class _Rates:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.total = 0
        self.done = 0
        self.lesions = 0
        self.processed = 0

    def update(self, lesions: int, skipped: bool) -> None:
        self.done += 1
        if not skipped:
            self.lesions += lesions
            self.processed += 1

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def lesions_per_s(self) -> float:
        return self.lesions / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if not self.processed:
            return None
        return (self.total - self.done) * self.elapsed / self.processed


class BarProgress:
    """A tqdm bar: cases done, lesions/s, ETA."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.rates = _Rates()
        self.bar: tqdm | None = None

    def start(self, total_cases: int) -> None:
        self.rates.total = total_cases
        self.bar = tqdm(total=total_cases, unit="case", file=self.stream, dynamic_ncols=True)

    def case_done(self, case_id: str, lesions: int, failed: bool, skipped: bool) -> None:
        self.rates.update(lesions, skipped)
        if self.bar is not None:
            self.bar.set_postfix(lesions_per_s=f"{self.rates.lesions_per_s:.2f}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class JsonProgress:
    """One JSON object per line: ``start``, ``case`` (per case) and ``end`` events."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.rates = _Rates()

    def _emit(self, **obj: object) -> None:
        self.stream.write(json.dumps(obj) + "\n")
        self.stream.flush()

    def start(self, total_cases: int) -> None:
        self.rates.total = total_cases
        self._emit(event="start", total_cases=total_cases)

    def case_done(self, case_id: str, lesions: int, failed: bool, skipped: bool) -> None:
        self.rates.update(lesions, skipped)
        r = self.rates
        self._emit(
            event="case",
            case_id=case_id,
            done=r.done,
            total=r.total,
            lesions=lesions,
            failed=failed,
            skipped=skipped,
            lesions_per_s=round(r.lesions_per_s, 4),
            eta_s=None if r.eta_s is None else round(r.eta_s, 1),
        )

    def close(self) -> None:
        self._emit(event="end", done=self.rates.done, total=self.rates.total, elapsed_s=round(self.rates.elapsed, 3))


def make_progress(mode: str, is_tty: bool) -> Progress:
    """``auto`` → bar on a terminal, else none; ``bar``; ``json``; ``none``."""
    if mode == "json":
        return JsonProgress()
    if mode == "bar" or (mode == "auto" and is_tty):
        return BarProgress()
    return NoProgress()
