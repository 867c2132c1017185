"""``features.csv`` and ``run.json``: written to a temporary file, then renamed into place."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..records import N_FEATURES, CaseFailure, LesionResult, LesionStatus

FEATURE_COLUMNS = tuple(f"feature_{i}" for i in range(N_FEATURES))
ID_COLUMNS = (
    "lesion_id",
    "study_instance_uid",
    "series_instance_uid",
    "seg_sop_instance_uid",
    "segment_number",
    "segment_label",
    "image_path",
    "mask_path",
)
SEED_COLUMNS = ("seed_x_lps_mm", "seed_y_lps_mm", "seed_z_lps_mm", "seed_source", "seed_inside_mask")
PROVENANCE_COLUMNS = ("weights_sha256", "software_version")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename:
    readers see the old file or the whole new one, never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text variant of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def format_float32(v: float) -> str:
    """A float32 as text that reads back to the identical float32 (9 significant digits)."""
    return f"{float(v):.9g}"


def _opt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def feature_table_columns(results: Sequence[LesionResult]) -> list[str]:
    """Header of ``features.csv`` for these results (passthrough and prediction columns
    are the union over rows, in order of first appearance)."""
    passthrough: dict[str, None] = {}
    preds: dict[str, None] = {}
    for r in results:
        for k, _ in r.lesion.passthrough:
            passthrough.setdefault(k, None)
        for k, _ in r.predictions:
            preds.setdefault(f"prediction_{k}", None)
    return [*ID_COLUMNS, *passthrough, *SEED_COLUMNS, *PROVENANCE_COLUMNS, *preds, *FEATURE_COLUMNS]


def feature_rows(
    results: Iterable[LesionResult], columns: Sequence[str], weights_sha256: str, version: str
) -> Iterable[list[str]]:
    """One text row per OK result, in ``columns`` order."""
    for r in results:
        if r.status is not LesionStatus.OK or r.features is None:
            continue
        les = r.lesion
        values: dict[str, str] = {
            "lesion_id": les.lesion_id,
            "study_instance_uid": _opt(les.study_instance_uid),
            "series_instance_uid": _opt(les.series_instance_uid),
            "seg_sop_instance_uid": _opt(les.seg_sop_instance_uid),
            "segment_number": _opt(les.segment_number),
            "segment_label": _opt(les.segment_label),
            "image_path": _opt(les.image_path),
            "mask_path": _opt(les.mask_path),
            "seed_x_lps_mm": repr(les.seed.x),
            "seed_y_lps_mm": repr(les.seed.y),
            "seed_z_lps_mm": repr(les.seed.z),
            "seed_source": les.seed_source.value,
            "seed_inside_mask": _opt(les.seed_inside_mask),
            "weights_sha256": weights_sha256,
            "software_version": version,
        }
        values.update(dict(les.passthrough))
        values.update({f"prediction_{k}": format_float32(v) for k, v in r.predictions})
        head = [values.get(c, "") for c in columns[: len(columns) - N_FEATURES]]
        yield head + [format_float32(v) for v in np.asarray(r.features, dtype=np.float32)]


def write_features_csv(path: Path, results: Sequence[LesionResult], weights_sha256: str, version: str) -> int:
    """Write ``features.csv`` atomically; returns the number of rows written."""
    cols = feature_table_columns(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    n = 0
    for row in feature_rows(results, cols, weights_sha256, version):
        w.writerow(row)
        n += 1
    atomic_write_text(path, buf.getvalue())
    return n


def read_features_csv(path: Path) -> tuple[list[dict[str, str]], np.ndarray]:
    """Read ``features.csv``: the non-feature columns per row, and features (N, 4096) float32."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        first_feature = header.index("feature_0")
        meta: list[dict[str, str]] = []
        feats: list[list[float]] = []
        for row in reader:
            meta.append(dict(zip(header[:first_feature], row[:first_feature], strict=True)))
            feats.append([float(v) for v in row[first_feature:]])
    return meta, np.asarray(feats, dtype=np.float32).reshape(len(feats), N_FEATURES)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (indent 2, UTF-8, keys in insertion order)."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_failures_csv(path: Path, results: Sequence[LesionResult], failures: Sequence[CaseFailure]) -> int:
    """``failures.csv``: one row per failed case, file or lesion, with an actionable reason."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "level", "error_type", "reason", "paths"])
    n = 0
    for f in failures:
        w.writerow([f.case_id, f.kind, f.error_type, f.reason, ";".join(f.paths)])
        n += 1
    for r in results:
        if r.status is LesionStatus.FAILED:
            w.writerow([r.lesion.lesion_id, "lesion", "LesionError", r.error or "", r.lesion.image_path or ""])
            n += 1
    atomic_write_text(path, buf.getvalue())
    return n
