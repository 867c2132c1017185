"""The lesion table: a reference seeds CSV with splits, labels and outcomes."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mhub_fmcib.errors import ConfigError
from mhub_fmcib.records import SeedPoint

Split = Literal["train", "tune", "test"]
SPLITS: tuple[Split, ...] = ("train", "tune", "test")
_SPLIT_ALIASES = {"train": "train", "tune": "tune", "val": "tune", "valid": "tune",
                  "validation": "tune", "test": "test"}  # fmt: skip


@dataclass(frozen=True)
class LesionRecord:
    """One row of the table.

    Attributes:
        index: row number in the CSV (0-based, stable cache key).
        lesion_id: ``lesion_id`` column, else ``<image stem>_<row>``.
        image_path: absolute path of the image (relative paths resolved against the CSV).
        seed: LPS mm.
        split: train, tune or test.
        columns: every CSV column as text (labels, time, event, ...).
    """

    index: int
    lesion_id: str
    image_path: Path
    seed: SeedPoint
    split: Split
    columns: tuple[tuple[str, str], ...]

    def get(self, column: str) -> str:
        """The raw text of ``column``; raises ConfigError if the CSV has no such column."""
        for k, v in self.columns:
            if k == column:
                return v
        raise ConfigError(
            f"lesion {self.lesion_id}: the seeds CSV has no column {column!r} (columns: {[k for k, _ in self.columns]})"
        )


@dataclass(frozen=True)
class LesionTable:
    """All lesions of a seeds CSV, each assigned to a split."""

    path: Path
    records: tuple[LesionRecord, ...]

    @classmethod
    def read(
        cls,
        path: Path,
        split_column: str = "split",
        split_ratios: Sequence[float] = (0.7, 0.15, 0.15),
        split_seed: int = 0,
    ) -> LesionTable:
        """Read a seeds CSV (``image_path, coordX, coordY, coordZ`` in LPS mm).

        If ``split_column`` is missing, whole scans (by ``image_path``) are assigned to
        train/tune/test at random in ``split_ratios``, seeded, so that no scan straddles splits.
        """
        path = Path(path)
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        except FileNotFoundError as e:
            raise ConfigError(f"seeds CSV {path} does not exist") from e
        if not rows:
            raise ConfigError(f"seeds CSV {path} has no rows")
        need = {"image_path", "coordX", "coordY", "coordZ"}
        missing = need - set(rows[0])
        if missing:
            raise ConfigError(f"{path} lacks columns {sorted(missing)}; found {list(rows[0])}")
        has_split = split_column in rows[0]
        if not has_split:
            images = sorted({r["image_path"] for r in rows})
            perm = np.random.default_rng(split_seed).permutation(len(images))
            n_tr = round(len(images) * split_ratios[0])
            n_tu = round(len(images) * split_ratios[1])
            assign = {}
            for rank_, i in enumerate(perm):
                assign[images[i]] = "train" if rank_ < n_tr else "tune" if rank_ < n_tr + n_tu else "test"
        records = []
        for i, r in enumerate(rows):
            try:
                seed = SeedPoint(float(r["coordX"]), float(r["coordY"]), float(r["coordZ"]))
            except ValueError as e:
                raise ConfigError(f"{path} row {i + 2}: bad coordinates ({e})") from e
            img = Path(r["image_path"]).expanduser()
            if not img.is_absolute():
                img = (path.parent / img).resolve()
            if has_split:
                raw = r[split_column].strip().lower()
                if raw not in _SPLIT_ALIASES:
                    raise ConfigError(f"{path} row {i + 2}: split {r[split_column]!r} is not train/tune(val)/test")
                split = _SPLIT_ALIASES[raw]
            else:
                split = assign[r["image_path"]]
            records.append(
                LesionRecord(
                    index=i,
                    lesion_id=r.get("lesion_id") or f"{img.stem.split('.')[0]}_{i}",
                    image_path=img,
                    seed=seed,
                    split=split,  # type: ignore[arg-type]
                    columns=tuple((k, v if v is not None else "") for k, v in r.items()),
                )
            )
        return cls(path=path, records=tuple(records))

    def select(self, split: Split, fraction: float = 1.0, seed: int = 0) -> tuple[LesionRecord, ...]:
        """Records of ``split``; for train and tune, a seeded random ``fraction`` of them
        (at least 2, in CSV order). The test set is always complete."""
        recs = [r for r in self.records if r.split == split]
        if fraction >= 1.0 or split == "test" or not recs:
            return tuple(recs)
        n = max(2, math.ceil(fraction * len(recs)))
        keep = np.random.default_rng([seed, SPLITS.index(split)]).permutation(len(recs))[:n]
        return tuple(recs[i] for i in sorted(keep))
