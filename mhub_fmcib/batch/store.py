"""Per-case records that make batches resumable, shardable and mergeable.

Each finished case is stored under ``OUTPUT/cases/<key>/`` as ``case.json`` (lesions,
statuses, errors, the input fingerprint) and ``features.npy`` (float32, (n_ok, 4096)),
written into a temporary folder and swapped into place by the one atomic writer, so a killed run leaves either the
whole record or none. ``features.csv`` and ``run.json`` are regenerated from the records.

A record names the files its case wrote (``outputs``: SR, SEG, QC) relative to OUTPUT, so a
moved or copied OUTPUT (a shard folder moved before ``merge``) still finds them; records of
earlier versions name them by absolute paths, read back by :meth:`CaseRecord.output_paths`.

A case is skipped on re-run when its record exists, has no failure and its fingerprint
(input files' paths, sizes and mtimes; weights sha256; package version; settings that
change results) is unchanged. Failed cases are retried.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..export.atomic import atomic_directory, remove_temporaries, write_file
from ..records import N_FEATURES, CaseFailure, LesionResult, LesionStatus

CASES_DIR = "cases"
#: The folders below OUTPUT that hold the files cases write (``dicom/``, ``qc/``).
OUTPUT_SUBDIRS = ("dicom", "qc")
#: 2: lesions with a typed origin (records.Lesion.to_dict); records of version 1 are re-run.
RECORD_VERSION = 2


def case_key(case_id: str) -> str:
    """A file-name-safe key of a case id (hex sha256 prefix; UIDs and paths never reach the
    file system directly)."""
    return hashlib.sha256(case_id.encode("utf-8")).hexdigest()[:32]


def shard_of(case_id: str, n_shards: int) -> int:
    """Deterministic shard index of a case in ``[0, n_shards)`` (hash of its id: the CT
    series UID for DICOM inputs)."""
    return int.from_bytes(hashlib.sha256(case_id.encode("utf-8")).digest()[:8], "big") % n_shards


def shard_of_key(key: str, n_shards: int) -> int:
    """:func:`shard_of` of the case whose :func:`case_key` is ``key`` (both read the same
    sha256: the key's first 16 hex digits are the 8 bytes the shard is taken from), so the
    shard of a record folder is known without reading it."""
    return int(key[:16], 16) % n_shards


def relative_output(path: Path, output: Path) -> str:
    """How a record names a file its case wrote under ``output``: relative to it (the
    path itself when it is not below ``output``)."""
    try:
        return str(Path(path).relative_to(output))
    except ValueError:
        return str(path)


def output_path(stored: str, output: Path) -> Path:
    """The file a record's ``outputs`` entry names, for the record kept in ``output``.

    Relative entries (this version) are below ``output``. An absolute entry (records of
    earlier versions) is taken as it is when it lies below ``output``; else, when the folder
    was moved or copied, the same file below ``output`` (the part from the last ``dicom``
    or ``qc`` folder on) when it exists there; else as it is.
    """
    p = Path(stored)
    if not p.is_absolute():
        return output / p
    if p.is_relative_to(output) or p.is_relative_to(output.resolve()):
        return p
    parts = p.parts
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] in OUTPUT_SUBDIRS and (candidate := output.joinpath(*parts[i:])).is_file():
            return candidate
    return p


def fingerprint(paths: Iterable[Path], weights_sha256: str, version: str, settings: Sequence[str]) -> str:
    """sha256 over the inputs' (path, size, mtime_ns), the weights, version and settings."""
    h = hashlib.sha256()
    for p in sorted(str(p) for p in paths):
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    h.update(f"{weights_sha256}\0{version}\0{'|'.join(settings)}".encode())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class CaseRecord:
    """What a finished case produced, as stored on disk."""

    case_id: str
    fingerprint: str
    results: tuple[LesionResult, ...]
    failures: tuple[CaseFailure, ...]
    seconds: float
    #: the files the case wrote, relative to OUTPUT (see :meth:`output_paths`)
    outputs: tuple[str, ...] = ()
    #: warnings of the case for ``run.json`` (an implausible HU range); kept for resumed runs
    warnings: tuple[str, ...] = ()

    def output_paths(self, output: Path) -> list[Path]:
        """The files the case wrote, for the record kept in ``output`` (:func:`output_path`)."""
        return [output_path(o, output) for o in self.outputs]

    @property
    def complete(self) -> bool:
        """No failure of any kind: the case need not be processed again."""
        return not self.failures and all(r.status is LesionStatus.OK for r in self.results)

    def to_dict(self) -> dict[str, object]:
        """``case.json``'s content (the features of OK results go to ``features.npy``)."""
        return {
            "record_version": RECORD_VERSION,
            "case_id": self.case_id,
            "fingerprint": self.fingerprint,
            "seconds": self.seconds,
            "outputs": list(self.outputs),
            "warnings": list(self.warnings),
            "results": [r.to_dict() for r in self.results],
            "failures": [f.to_dict() for f in self.failures],
        }

    def features(self) -> npt.NDArray[np.float32]:
        """Features of the OK results in order, float32 (n_ok, 4096)."""
        ok = [np.asarray(r.features, np.float32) for r in self.results if r.status is LesionStatus.OK]
        return np.stack(ok) if ok else np.zeros((0, N_FEATURES), np.float32)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], features: npt.NDArray[np.float32]) -> CaseRecord:
        """The inverse of :meth:`to_dict` + :meth:`features`.

        Raises:
            ValueError: the record was written by another record version, or its features
                do not match its OK results.
        """
        if doc.get("record_version") != RECORD_VERSION:
            raise ValueError(f"case record version {doc.get('record_version')!r}, expected {RECORD_VERSION}")
        items = list(doc["results"])
        n_ok = sum(d["status"] == LesionStatus.OK.value for d in items)
        if features.shape != (n_ok, N_FEATURES):
            raise ValueError(f"case record: features {features.shape} for {n_ok} OK lesion(s)")
        feats = iter(features)
        results = tuple(
            LesionResult.from_dict(d, next(feats) if d["status"] == LesionStatus.OK.value else None) for d in items
        )
        return cls(
            case_id=str(doc["case_id"]),
            fingerprint=str(doc["fingerprint"]),
            results=results,
            failures=tuple(CaseFailure.from_dict(f) for f in doc["failures"]),
            seconds=float(doc["seconds"]),
            outputs=tuple(str(o) for o in doc.get("outputs", [])),
            warnings=tuple(str(w) for w in doc.get("warnings", [])),
        )


class CaseStore:
    """The ``OUTPUT/cases/`` folder."""

    def __init__(self, output: Path) -> None:
        self.root = output / CASES_DIR

    def path(self, case_id: str) -> Path:
        return self.root / case_key(case_id)

    def save(self, rec: CaseRecord) -> None:
        """Write the record atomically (a whole folder swapped in, see :func:`atomic_directory`)."""
        doc = json.dumps(rec.to_dict(), indent=1).encode("utf-8")
        feats = rec.features()
        with atomic_directory(self.path(rec.case_id)) as tmp:
            write_file(tmp / "features.npy", lambda fh: np.save(fh, feats))
            write_file(tmp / "case.json", lambda fh: fh.write(doc))

    def load(self, case_id: str) -> CaseRecord | None:
        return self.load_dir(self.path(case_id))

    @staticmethod
    def read_header(d: Path) -> tuple[str, tuple[str, ...]] | None:
        """The case id and ``outputs`` of the record in folder ``d``, from ``case.json``
        alone (no features read, any record version); ``None`` when unreadable."""
        try:
            doc = json.loads((d / "case.json").read_text(encoding="utf-8"))
            return str(doc["case_id"]), tuple(str(o) for o in doc.get("outputs", []))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    @staticmethod
    def load_dir(d: Path) -> CaseRecord | None:
        """Read one record; ``None`` when absent, unreadable or of another record version
        (then the case is re-run)."""
        try:
            doc = json.loads((d / "case.json").read_text(encoding="utf-8"))
            return CaseRecord.from_dict(doc, np.load(d / "features.npy"))
        except (OSError, ValueError, KeyError, TypeError, IndexError, StopIteration):
            return None

    def all(self) -> list[CaseRecord]:
        """Every readable record, ordered by case id."""
        if not self.root.is_dir():
            return []
        recs = [
            r
            for d in sorted(self.root.iterdir())
            if d.is_dir() and not d.name.startswith(".")
            if (r := self.load_dir(d)) is not None
        ]
        return sorted(recs, key=lambda r: r.case_id)

    def clean_temporaries(self) -> list[Path]:
        """Remove the temporaries a killed run left anywhere under OUTPUT (``cases/``,
        ``dicom/``, ``qc/``, the top): see :func:`~mhub_fmcib.export.atomic.remove_temporaries`."""
        return remove_temporaries(self.root.parent)
