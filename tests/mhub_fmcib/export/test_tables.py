"""``features.csv``: the one-call feature formatting writes exactly what formatting value by
value writes, the file is what the standard ``csv`` module writes for the same rows, and it
reads back to the identical float32 features."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from mhub_fmcib.export.tables import (
    feature_rows,
    feature_table_columns,
    format_features,
    format_float32,
    read_features_csv,
    write_features_csv,
)
from mhub_fmcib.records import N_FEATURES, FileOrigin, Lesion, LesionResult, LesionStatus, SeedPoint, SeedSource


def _awkward_features(rng: np.random.Generator) -> np.ndarray:
    """4096 float32 values over every magnitude, with signed zeros, subnormals and extremes."""
    f = (rng.standard_normal(N_FEATURES) * 10.0 ** rng.integers(-40, 38, N_FEATURES)).astype(np.float32)
    info = np.finfo(np.float32)
    f[:8] = [0.0, -0.0, info.tiny, -info.tiny, info.smallest_subnormal, info.max, -info.max, 1.0]
    return f


def test_format_features_is_format_float32_per_value() -> None:
    rng = np.random.default_rng(18)
    for _ in range(5):
        f = _awkward_features(rng)
        text = format_features(f)
        assert text.split(",") == [format_float32(v) for v in f]
        assert np.array_equal(np.asarray(text.split(","), dtype=np.float32), f)


def test_format_features_refuses_another_length() -> None:
    with pytest.raises(ValueError, match="4096 values, got 4095"):
        format_features(np.zeros(N_FEATURES - 1, np.float32))


def _result(i: int, features: np.ndarray, passthrough: tuple[tuple[str, str], ...]) -> LesionResult:
    lesion = Lesion(
        lesion_id=f"case-{i}",
        seed=SeedPoint(1.5 * i, -2.25, 3.0),
        seed_source=SeedSource.USER,
        origin=FileOrigin(image_path=f"images/case {i}.nrrd", row=i + 1),
        passthrough=passthrough,
    )
    return LesionResult(lesion=lesion, status=LesionStatus.OK, features=features, predictions=(("risk", 0.1 * i),))


def test_features_csv_is_what_the_csv_module_writes(tmp_path: Path) -> None:
    """The independent writer: ``csv.writer`` over each whole row, every feature formatted
    on its own (the file's format before the one-call formatting)."""
    rng = np.random.default_rng(7)
    quoted = (("note", 'has "quotes", a comma\nand a newline'), ("site", "lung"))
    results = [_result(i, _awkward_features(rng), quoted if i == 1 else ()) for i in range(3)]
    failed = LesionResult(lesion=results[0].lesion, status=LesionStatus.FAILED, error="no patch")
    path = tmp_path / "features.csv"
    n = write_features_csv(path, [*results, failed], "ab" * 32, "9.9.9", demonstration=True)
    assert n == 3

    cols = feature_table_columns([*results, failed])
    rows = list(feature_rows([*results, failed], cols, "ab" * 32, "9.9.9", demonstration=True))
    expected = io.StringIO()
    w = csv.writer(expected, lineterminator="\n")
    w.writerow(cols)
    for (head, _), r in zip(rows, results, strict=True):
        assert r.features is not None
        w.writerow(head + [format_float32(v) for v in r.features])
    assert path.read_text(encoding="utf-8") == expected.getvalue()

    meta, feats = read_features_csv(path)
    assert [m["lesion_id"] for m in meta] == ["case-0", "case-1", "case-2"]
    assert meta[1]["note"] == quoted[0][1]
    assert meta[0]["note"] == ""
    assert meta[2]["prediction_risk"] == format_float32(0.2)
    assert np.array_equal(feats, np.stack([r.features for r in results if r.features is not None]))
