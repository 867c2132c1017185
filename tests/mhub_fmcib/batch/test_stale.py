"""Stale outputs (issue 15, point 8): records of cases no longer planned move to
``OUTPUT/stale/<stamp>/`` with the files they name (only below OUTPUT, never a file a
current record names), only within a shard's own partition; replaced outputs of a case
measured again move too; records name their files relative to OUTPUT."""

from __future__ import annotations

import json
from pathlib import Path

from mhub_fmcib.batch.stale import StaleMover, kept_outputs
from mhub_fmcib.batch.store import CaseRecord, CaseStore, case_key, output_path, shard_of, shard_of_key


def _case(out: Path, case_id: str, files: list[str]) -> CaseRecord:
    """A record of ``case_id`` naming ``files`` (relative to ``out`` unless absolute), which are written."""
    for f in files:
        p = out / f if not Path(f).is_absolute() else Path(f)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"{case_id}:{f}".encode())
    rec = CaseRecord(case_id, "0" * 64, (), (), 0.1, tuple(files))
    CaseStore(out).save(rec)
    return rec


def test_shard_of_a_record_folder_is_read_from_its_name() -> None:
    ids = [f"1.2.826.0.1.{n}" for n in range(200)] + ["/data/img.nrrd", "Ünï"]
    for n in (2, 3, 7, 16):
        assert all(shard_of_key(case_key(c), n) == shard_of(c, n) for c in ids)


def test_stale_case_moves_with_its_files_and_nothing_outside_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    outside = tmp_path / "elsewhere" / "dicom" / "9" / "9" / "sr.dcm"
    current = _case(out, "1.1", ["dicom/1/1/sr.dcm", "qc/shared_0000.png"])
    _case(out, "2.2", ["dicom/2/2/sr.dcm", "dicom/2/2/seg.dcm", "qc/shared_0000.png", str(outside), "qc/gone.png"])
    (out / "qc" / "gone.png").unlink()
    mover = StaleMover(out, started=0.0)
    mover.move_stale_cases(["1.1"], None, kept_outputs(out, [current]))
    [entry] = mover.entries
    assert entry.case_id == "2.2" and entry.kind == "case"
    stamp = "stale/19700101T000000Z"
    assert {(m.source, m.destination) for m in entry.moved} == {
        (f, f"{stamp}/{f}") for f in ("dicom/2/2/sr.dcm", "dicom/2/2/seg.dcm", f"cases/{case_key('2.2')}")
    }
    assert entry.moved[-1].source == f"cases/{case_key('2.2')}"  # the record last
    assert (out / stamp / "dicom/2/2/sr.dcm").read_bytes() == b"2.2:dicom/2/2/sr.dcm"
    assert not (out / "dicom" / "2").exists() and (out / "dicom" / "1" / "1" / "sr.dcm").is_file()
    assert (out / "qc" / "shared_0000.png").is_file()  # named by a current record: stays
    assert outside.read_bytes() == f"2.2:{outside}".encode()  # never moves anything outside OUTPUT
    assert [p.name for p in (out / "cases").iterdir()] == [case_key("1.1")]
    doc = json.loads(json.dumps(mover.to_json()))
    assert doc[0]["moved"][0] == {"from": "dicom/2/2/sr.dcm", "to": f"{stamp}/dicom/2/2/sr.dcm"}
    again = StaleMover(out, started=0.0)  # a second run in the same second gets its own folder
    _case(out, "3.3", ["dicom/3/3/sr.dcm"])
    again.move_stale_cases(["1.1"], None, set())
    assert again.folder == out / "stale" / "19700101T000000Z-2" and (again.folder / "dicom/3/3/sr.dcm").is_file()


def test_a_shard_moves_only_records_of_its_partition(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ids = [f"1.2.{n}" for n in range(12)]
    for c in ids:
        _case(out, c, [f"dicom/1/{c}/sr.dcm"])
    mover = StaleMover(out)
    mover.move_stale_cases(ids[:2], (1, 3), set())
    moved = {e.case_id for e in mover.entries}
    assert moved == {c for c in ids[2:] if shard_of(c, 3) == 1} and moved
    left = {h[0] for d in (out / "cases").iterdir() if (h := CaseStore.read_header(d)) is not None}
    assert left == set(ids) - moved


def test_replaced_outputs_of_a_case_measured_again_move(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old = _case(out, "1.1", ["dicom/1/1/sr.dcm", "qc/a.png", "qc/b.png"])
    new = _case(out, "1.1", ["qc/a.png"])
    mover = StaleMover(out, started=0.0)
    mover.move_replaced("1.1", old.outputs, new, set())
    [entry] = mover.entries
    assert entry.kind == "replaced_outputs" and sorted(m.source for m in entry.moved) == [
        "dicom/1/1/sr.dcm",
        "qc/b.png",
    ]
    assert (out / "qc" / "a.png").is_file() and not (out / "dicom" / "1").exists()


def test_records_of_earlier_versions_in_a_moved_folder_find_their_files(tmp_path: Path) -> None:
    out = tmp_path / "moved"
    (out / "dicom" / "1" / "2").mkdir(parents=True)
    (out / "dicom" / "1" / "2" / "sr.dcm").write_bytes(b"x")
    legacy = "/old/place/dicom/run/dicom/1/2/sr.dcm"  # absolute, of the folder before it moved
    assert output_path(legacy, out) == out / "dicom" / "1" / "2" / "sr.dcm"
    assert output_path("dicom/1/2/sr.dcm", out) == out / "dicom" / "1" / "2" / "sr.dcm"
    assert output_path("/old/place/qc/missing.png", out) == Path("/old/place/qc/missing.png")
