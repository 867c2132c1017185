"""The case store: records round-trip, are replaced whole, and stale versions are re-run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mhub_fmcib.batch.store import RECORD_VERSION, CaseRecord, CaseStore, case_key, fingerprint, shard_of
from mhub_fmcib.errors import DicomImportError
from mhub_fmcib.records import (
    N_FEATURES,
    CaseFailure,
    DicomOrigin,
    Lesion,
    LesionResult,
    LesionStatus,
    SeedPoint,
    SeedSource,
    SeriesRef,
    make_lesion_id,
)


def _record(case_id: str = "1.2.3.4", n_ok: int = 2, seconds: float = 1.5) -> CaseRecord:
    rng = np.random.default_rng(1)
    results = []
    for n in range(1, n_ok + 2):
        origin = DicomOrigin(SeriesRef("1.2.3", case_id, "1.2.3.5"), "SEG", "1.2.3.9", n, f"lesion {n}")
        les = Lesion(make_lesion_id(origin), SeedPoint(n, -n, 0.5), SeedSource.SEGMENT_CENTROID, True, origin)
        if n <= n_ok:
            feats = rng.standard_normal(N_FEATURES).astype(np.float32)
            results.append(LesionResult(les, LesionStatus.OK, features=feats, predictions=(("p", 0.5 * n),)))
        else:
            results.append(LesionResult(les, LesionStatus.FAILED, error="seed outside the image"))
    failure = CaseFailure.of(case_id, DicomImportError("slice 3 unreadable"), ["/x/3.dcm"], kind="file")
    return CaseRecord(case_id, "f" * 64, tuple(results), (failure,), seconds, ("/out/sr.dcm",))


def _same(a: CaseRecord, b: CaseRecord) -> None:
    assert (a.case_id, a.fingerprint, a.failures, a.seconds, a.outputs) == (
        b.case_id, b.fingerprint, b.failures, b.seconds, b.outputs,
    )  # fmt: skip
    assert [(r.lesion, r.status, r.error, r.predictions) for r in a.results] == [
        (r.lesion, r.status, r.error, r.predictions) for r in b.results
    ]
    np.testing.assert_array_equal(a.features(), b.features())


def test_record_round_trips_through_the_store(tmp_path: Path) -> None:
    store = CaseStore(tmp_path)
    rec = _record()
    store.save(rec)
    back = store.load(rec.case_id)
    assert back is not None and not back.complete
    _same(back, rec)
    assert back.features().dtype == np.float32 and back.features().shape == (2, N_FEATURES)
    assert sorted(p.name for p in store.path(rec.case_id).iterdir()) == ["case.json", "features.npy"]
    assert store.path(rec.case_id).name == case_key(rec.case_id)


def test_record_dict_round_trip_without_the_disk() -> None:
    rec = _record(n_ok=0)
    _same(CaseRecord.from_dict(json.loads(json.dumps(rec.to_dict())), rec.features()), rec)


def test_saving_again_replaces_the_whole_record(tmp_path: Path) -> None:
    store = CaseStore(tmp_path)
    store.save(_record(seconds=1.0))
    store.save(_record(n_ok=1, seconds=2.0))
    back = store.load("1.2.3.4")
    assert back is not None and back.seconds == 2.0 and len(back.results) == 2
    assert [p.name for p in store.root.iterdir()] == [case_key("1.2.3.4")]


def test_unreadable_or_other_version_records_are_rerun(tmp_path: Path) -> None:
    store = CaseStore(tmp_path)
    rec = _record()
    store.save(rec)
    doc_path = store.path(rec.case_id) / "case.json"
    doc = json.loads(doc_path.read_text())
    doc_path.write_text(json.dumps({**doc, "record_version": RECORD_VERSION - 1}))
    assert store.load(rec.case_id) is None
    doc_path.write_text("{not json")
    assert store.load(rec.case_id) is None
    assert store.all() == []


def test_clean_temporaries_and_all(tmp_path: Path) -> None:
    store = CaseStore(tmp_path)
    for cid in ("b", "a"):
        store.save(_record(case_id=cid))
    (store.root / ".tmp-x-123456").mkdir()
    (store.root / f"{case_key('a')}.old").mkdir()
    store.clean_temporaries()
    assert sorted(p.name for p in store.root.iterdir()) == sorted([case_key("a"), case_key("b")])
    assert [r.case_id for r in store.all()] == ["a", "b"]


def test_fingerprint_and_shard_are_deterministic(tmp_path: Path) -> None:
    f = tmp_path / "x.dcm"
    f.write_bytes(b"1")
    a = fingerprint([f], "w", "0.1", ["s"])
    assert a == fingerprint([f], "w", "0.1", ["s"]) != fingerprint([f], "w", "0.1", ["t"])
    assert {shard_of(f"case{i}", 3) for i in range(30)} == {0, 1, 2}
    assert shard_of("case1", 3) == shard_of("case1", 3)
