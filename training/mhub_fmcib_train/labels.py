"""Targets of a labelled task from the lesion table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mhub_fmcib.errors import ConfigError

from .data.table import LesionRecord


@dataclass(frozen=True)
class TaskLabels:
    """Class names (sorted, as text) and integer targets of a label column."""

    column: str
    class_names: tuple[str, ...]

    @classmethod
    def from_records(cls, records: Sequence[LesionRecord], column: str, task: str) -> TaskLabels:
        names = tuple(sorted({r.get(column) for r in records if r.get(column) != ""}))
        if len(names) < 2:
            raise ConfigError(f"label column {column!r} has fewer than 2 classes ({names}) in the train set")
        if task == "binary" and len(names) != 2:
            raise ConfigError(
                f"task = 'binary' but column {column!r} has {len(names)} classes {names}; use task = 'classification'"
            )
        return cls(column, names)

    def encode(self, records: Sequence[LesionRecord]) -> list[int]:
        out = []
        for r in records:
            v = r.get(self.column)
            if v not in self.class_names:
                raise ConfigError(
                    f"lesion {r.lesion_id}: {self.column} = {v!r} is not a training class {self.class_names}"
                )
            out.append(self.class_names.index(v))
        return out
