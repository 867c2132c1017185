"""Per-case records that make batches resumable, shardable and mergeable.

Each finished case is stored under ``OUTPUT/cases/<key>/`` as ``case.json`` (lesions,
statuses, errors, the input fingerprint) and ``features.npy`` (float32, (n_ok, 4096)),
written into a temporary folder and renamed into place, so a killed run leaves either the
whole record or none. ``features.csv`` and ``run.json`` are regenerated from the records.

A case is skipped on re-run when its record exists, has no failure and its fingerprint
(input files' paths, sizes and mtimes; weights sha256; package version; settings that
change results) is unchanged. Failed cases are retried.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..records import CaseFailure, Lesion, LesionResult, LesionStatus, SeedPoint, SeedSource

CASES_DIR = "cases"
RECORD_VERSION = 1


def case_key(case_id: str) -> str:
    """A file-name-safe key of a case id (hex sha256 prefix; UIDs and paths never reach the
    file system directly)."""
    return hashlib.sha256(case_id.encode("utf-8")).hexdigest()[:32]


def shard_of(case_id: str, n_shards: int) -> int:
    """Deterministic shard index of a case in ``[0, n_shards)`` (hash of its id: the CT
    series UID for DICOM inputs)."""
    return int.from_bytes(hashlib.sha256(case_id.encode("utf-8")).digest()[:8], "big") % n_shards


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


def failure_to_json(f: CaseFailure) -> dict[str, object]:
    """A failure as stored in case records and ``run.json``'s ``errors``."""
    return {
        "case_id": f.case_id,
        "kind": f.kind,
        "error_type": f.error_type,
        "reason": f.reason,
        "paths": list(f.paths),
    }


def failure_from_json(d: dict[str, Any]) -> CaseFailure:
    """The inverse of :func:`failure_to_json`."""
    return CaseFailure(
        case_id=d["case_id"], reason=d["reason"], paths=tuple(d["paths"]), kind=d["kind"], error_type=d["error_type"]
    )


def _lesion_to_json(les: Lesion) -> dict[str, object]:
    return {
        "lesion_id": les.lesion_id,
        "seed": [les.seed.x, les.seed.y, les.seed.z],
        "seed_source": les.seed_source.value,
        "seed_inside_mask": les.seed_inside_mask,
        "study_instance_uid": les.study_instance_uid,
        "series_instance_uid": les.series_instance_uid,
        "frame_of_reference_uid": les.frame_of_reference_uid,
        "seg_sop_instance_uid": les.seg_sop_instance_uid,
        "segment_number": les.segment_number,
        "segment_label": les.segment_label,
        "finding_type": list(les.finding_type) if les.finding_type else None,
        "finding_site": list(les.finding_site) if les.finding_site else None,
        "image_path": les.image_path,
        "mask_path": les.mask_path,
        "passthrough": [list(kv) for kv in les.passthrough],
    }


def _as_list(v: object) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError(f"case record: expected a list, got {type(v).__name__}")
    return v


def _lesion_from_json(d: dict[str, object]) -> Lesion:
    def code(v: object) -> tuple[str, str, str] | None:
        return (str(v[0]), str(v[1]), str(v[2])) if isinstance(v, list) else None

    seed = d["seed"]
    if not isinstance(seed, list) or len(seed) != 3:
        raise ValueError(f"case record: bad seed {seed!r}")
    return Lesion(
        lesion_id=str(d["lesion_id"]),
        seed=SeedPoint(float(seed[0]), float(seed[1]), float(seed[2])),
        seed_source=SeedSource(str(d["seed_source"])),
        seed_inside_mask=d.get("seed_inside_mask"),  # type: ignore[arg-type]
        study_instance_uid=d.get("study_instance_uid"),  # type: ignore[arg-type]
        series_instance_uid=d.get("series_instance_uid"),  # type: ignore[arg-type]
        frame_of_reference_uid=d.get("frame_of_reference_uid"),  # type: ignore[arg-type]
        seg_sop_instance_uid=d.get("seg_sop_instance_uid"),  # type: ignore[arg-type]
        segment_number=d.get("segment_number"),  # type: ignore[arg-type]
        segment_label=d.get("segment_label"),  # type: ignore[arg-type]
        finding_type=code(d.get("finding_type")),
        finding_site=code(d.get("finding_site")),
        image_path=d.get("image_path"),  # type: ignore[arg-type]
        mask_path=d.get("mask_path"),  # type: ignore[arg-type]
        passthrough=tuple((str(kv[0]), str(kv[1])) for kv in _as_list(d.get("passthrough"))),
    )


@dataclass(frozen=True, eq=False)
class CaseRecord:
    """What a finished case produced, as stored on disk."""

    case_id: str
    fingerprint: str
    results: tuple[LesionResult, ...]
    failures: tuple[CaseFailure, ...]
    seconds: float
    outputs: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """No failure of any kind: the case need not be processed again."""
        return not self.failures and all(r.status is LesionStatus.OK for r in self.results)


class CaseStore:
    """The ``OUTPUT/cases/`` folder."""

    def __init__(self, output: Path) -> None:
        self.root = output / CASES_DIR

    def path(self, case_id: str) -> Path:
        return self.root / case_key(case_id)

    def save(self, rec: CaseRecord) -> None:
        """Write the record atomically (temporary folder, then rename over the old one)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        ok = [r for r in rec.results if r.status is LesionStatus.OK]
        np.save(
            tmp / "features.npy",
            np.stack([np.asarray(r.features) for r in ok]) if ok else np.zeros((0, 4096), np.float32),
        )
        doc = {
            "record_version": RECORD_VERSION,
            "case_id": rec.case_id,
            "fingerprint": rec.fingerprint,
            "seconds": rec.seconds,
            "outputs": list(rec.outputs),
            "lesions": [
                {
                    **_lesion_to_json(r.lesion),
                    "status": r.status.value,
                    "error": r.error,
                    "predictions": [list(p) for p in r.predictions],
                }
                for r in rec.results
            ],
            "failures": [failure_to_json(f) for f in rec.failures],
        }
        with open(tmp / "case.json", "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        dest = self.path(rec.case_id)
        if dest.exists():
            old = dest.with_name(dest.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)

    def load(self, case_id: str) -> CaseRecord | None:
        return self.load_dir(self.path(case_id))

    @staticmethod
    def load_dir(d: Path) -> CaseRecord | None:
        """Read one record; ``None`` when absent or unreadable (then the case is re-run)."""
        try:
            return CaseStore._parse(
                json.loads((d / "case.json").read_text(encoding="utf-8")), np.load(d / "features.npy")
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    @staticmethod
    def _parse(doc: dict[str, Any], feats: np.ndarray) -> CaseRecord | None:
        if doc.get("record_version") != RECORD_VERSION:
            return None
        results = []
        k = 0
        for item in doc["lesions"]:
            les = _lesion_from_json(item)
            preds = tuple((str(a), float(b)) for a, b in item.get("predictions") or [])
            if item["status"] == LesionStatus.OK.value:
                results.append(LesionResult(les, LesionStatus.OK, features=feats[k], predictions=preds))
                k += 1
            else:
                results.append(LesionResult(les, LesionStatus.FAILED, error=str(item["error"])))
        failures = tuple(failure_from_json(f) for f in doc["failures"])
        return CaseRecord(
            case_id=doc["case_id"],
            fingerprint=doc["fingerprint"],
            results=tuple(results),
            failures=failures,
            seconds=float(doc["seconds"]),
            outputs=tuple(doc.get("outputs", [])),
        )

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

    def clean_temporaries(self) -> None:
        """Remove folders a killed run left half-written."""
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.name.startswith(".tmp-") or d.name.endswith(".old"):
                    shutil.rmtree(d, ignore_errors=True)
