"""A misbehaving DICOMweb server (issue 15, points 2-4), against a stub server on loopback
inside the private network namespace (see ``fmcib_testlib.http_stub``).

2. Every server-side oddity fails only its study, with a message naming what was sent.
3. A stop request (SIGTERM) or ``kill -9`` during a pull never blocks the next run.
4. A server that trickles bytes cannot hang the run: the per-study deadline ends the study.

Where the fault allows, the good study's ``features.csv`` must be byte-identical to a clean
run against the same stub. The end-to-end tests run the real command line in a subprocess
(random-initialised weights) and check its exit code, that stderr holds no traceback, and
that no temporary file is left anywhere in the output.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fmcib_testlib.http_stub import FAULTY_INSTANCE, DicomWebStub, Fault

from mhub_fmcib.dicomweb import (
    DicomWebSettings,
    StudyStatus,
    open_client,
    plan_study,
    pull_study,
    run_dicomweb,
)

pytestmark = [pytest.mark.orthanc, pytest.mark.timeout(300)]

#: One StudyInstanceUID per fault; the stub serves the sample study under each.
FAULT_STUDIES: dict[Fault, str] = {
    Fault.HTML_WADO: "1.2.826.0.1.3680043.10.1001.1",
    Fault.NON_DICOM_PART: "1.2.826.0.1.3680043.10.1001.2",
    Fault.TRUNCATED_MULTIPART: "1.2.826.0.1.3680043.10.1001.3",
    Fault.CUT_BODY: "1.2.826.0.1.3680043.10.1001.4",
    Fault.INVALID_QIDO: "1.2.826.0.1.3680043.10.1001.5",
    Fault.NON_JSON_QIDO: "1.2.826.0.1.3680043.10.1001.6",
    Fault.TRICKLE: "1.2.826.0.1.3680043.10.1001.7",
}
#: What each failure message must name (what the server sent).
EXPECTED: dict[Fault, str] = {
    Fault.HTML_WADO: "Content-Type 'text/html; charset=utf-8'",
    Fault.NON_DICOM_PART: "not a DICOM file",
    Fault.TRUNCATED_MULTIPART: "without its closing boundary",
    Fault.CUT_BODY: "broke off its answer",
    Fault.INVALID_QIDO: "{'Status': 'busy', 'Retry': 'later'}\", which is not a DICOM JSON object",
    Fault.NON_JSON_QIDO: "not JSON (HTTP 200, Content-Type 'text/html'; it starts b'<html>",
}
SERVER_FAULTS = list(EXPECTED)
#: A claim of retries ("after 5 retries", "after 6 attempts").
RETRY_CLAIM = re.compile(r"after \d+ (retries|attempts)")
N_INSTANCES = 49  # 48 CT slices + 1 SEG


def _settings(stub: DicomWebStub, tmp_path: Path, **options: Any) -> DicomWebSettings:
    values: dict[str, Any] = {"retries": 5, "backoff_s": 0.01, "timeout_s": 10.0, "cache_dir": tmp_path / "cache"}
    values.update(options)
    return DicomWebSettings(stub.url, **values)


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp")) or ".tmp." in p.name]


# -- point 2, at the library level: one study per kind of oddity ------------------------------


@pytest.mark.parametrize("fault", SERVER_FAULTS, ids=[f.value for f in SERVER_FAULTS])
def test_server_oddity_fails_only_its_study(
    stub_factory: Callable[..., DicomWebStub],
    sample_study: Any,
    tmp_path: Path,
    process_folder: Callable[[Path, Path], list[Path]],
    fault: Fault,
) -> None:
    bad = FAULT_STUDIES[fault]
    stub = stub_factory(alias_studies=[bad], faults={bad: fault})
    report = run_dicomweb(
        _settings(stub, tmp_path), [bad, sample_study.study_uid], tmp_path / "out", process_folder, store=False
    )
    failed, done = report.studies
    assert failed.status is StudyStatus.FAILED
    assert failed.error_type == "DicomWebServerError"
    assert EXPECTED[fault] in str(failed.error), failed.error
    assert stub.url.split("//")[1].split("/")[0] in str(failed.error)  # names the server
    assert not RETRY_CLAIM.search(str(failed.error))  # the server answered: one request, no retry
    assert done.status is StudyStatus.DONE, done.error
    assert done.pulled_instances == N_INSTANCES
    assert len(done.outputs) == 2
    if fault in (Fault.INVALID_QIDO, Fault.NON_JSON_QIDO):
        assert stub.instance_requests(bad) == []
    else:  # stopped at the faulty answer, not retried
        assert len(stub.instance_requests(bad)) == FAULTY_INSTANCE
    assert not (tmp_path / "cache" / bad).exists()
    assert _temporaries(tmp_path) == []


def test_retried_failure_counts_real_attempts(stub_factory: Callable[..., DicomWebStub], tmp_path: Path) -> None:
    """A refused connection is retried and says how many attempts were really made."""
    stub = stub_factory()
    url = stub.url
    port = int(url.split(":")[2].split("/")[0])
    settings = DicomWebSettings(f"http://127.0.0.1:{port + 1}/dicom-web", retries=2, backoff_s=0.01, timeout_s=5)
    with pytest.raises(Exception, match=r"after 3 attempts \(2 retries\)"):
        plan_study(open_client(settings), "1.2.3")


# -- point 4, at the library level ---------------------------------------------------------------


def test_trickling_server_hits_the_study_deadline(
    stub_factory: Callable[..., DicomWebStub],
    sample_study: Any,
    tmp_path: Path,
    process_folder: Callable[[Path, Path], list[Path]],
) -> None:
    slow = FAULT_STUDIES[Fault.TRICKLE]
    stub = stub_factory(alias_studies=[slow], faults={slow: Fault.TRICKLE}, trickle_s=2.0)
    settings = _settings(stub, tmp_path, study_timeout_s=3.0)
    started = time.monotonic()
    report = run_dicomweb(settings, [slow, sample_study.study_uid], tmp_path / "out", process_folder, store=False)
    late, done = report.studies
    assert late.status is StudyStatus.FAILED
    assert late.error_type == "DicomWebDeadlineError"
    assert "deadline of 3 s (--dicomweb-timeout)" in str(late.error)
    assert late.seconds["pull"] < 3.0 + 2.5  # ended at the deadline, not after the transfer
    assert done.status is StudyStatus.DONE, done.error
    assert time.monotonic() - started < 120
    assert _temporaries(tmp_path) == []


# -- point 3, at the library level ---------------------------------------------------------------


def test_stop_request_mid_pull_removes_the_partial_study(
    stub_factory: Callable[..., DicomWebStub],
    sample_study: Any,
    tmp_path: Path,
    process_folder: Callable[[Path, Path], list[Path]],
) -> None:
    stub = stub_factory()
    pulled: list[Path] = []
    report = run_dicomweb(
        _settings(stub, tmp_path),
        [sample_study.study_uid, "1.2.3.999"],
        tmp_path / "out",
        process_folder,
        store=False,
        on_instance=pulled.append,
        should_stop=lambda: len(pulled) >= 5,
    )
    assert report.interrupted and not report.ok
    assert [s.status for s in report.studies] == [StudyStatus.INTERRUPTED]
    assert report.not_started == ("1.2.3.999",)
    assert len(stub.instance_requests()) == 5
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    assert not (tmp_path / "out" / sample_study.study_uid).exists()
    json.dumps(report.to_json())


def test_pull_left_by_a_killed_run_is_resumed(
    stub_factory: Callable[..., DicomWebStub], sample_study: Any, tmp_path: Path
) -> None:
    """What kill -9 leaves (complete files, a .part, a stray file) is resumed, not refused."""
    stub = stub_factory()
    client = open_client(_settings(stub, tmp_path))
    plan = plan_study(client, sample_study.study_uid)
    dest = tmp_path / "cache" / sample_study.study_uid
    first = pull_study(client, plan, dest)
    complete = list(first.files[:10])
    for path in first.files[10:]:
        path.unlink()
    (complete[0].parent / f".{first.files[10].name}.part").write_bytes(b"half an instance")
    complete[1].write_bytes(b"")  # a file the crash left empty (no fsync) is not trusted
    (dest / "stray").mkdir()
    (dest / "stray" / "x.dcm").write_bytes(b"not from this plan")
    before = len(stub.instance_requests())
    again = pull_study(client, plan, dest)
    assert again.resumed == 9
    assert len(stub.instance_requests()) - before == N_INSTANCES - 9
    assert [p.name for p in again.files] == [p.name for p in first.files]
    assert not (dest / "stray").exists()
    assert _temporaries(dest) == []


# -- end to end: the command line in a subprocess --------------------------------------------------


def test_cli_bad_answers_fail_only_their_studies(
    stub_factory: Callable[..., DicomWebStub],
    sample_study: Any,
    tmp_path: Path,
    dicomweb_cli: Any,
    clean_features: bytes,
) -> None:
    bad = [FAULT_STUDIES[f] for f in SERVER_FAULTS]
    stub = stub_factory(alias_studies=bad, faults={FAULT_STUDIES[f]: f for f in SERVER_FAULTS})
    out = tmp_path / "out"
    result = dicomweb_cli.run(stub.url, [*bad, sample_study.study_uid], out)
    assert result.returncode == 1, result.stderr[-3000:]
    dicomweb_cli.assert_clean(result.stderr, out)
    summary = json.loads((out / "dicomweb.json").read_text())
    by_uid = {s["study_uid"]: s for s in summary["studies"]}
    for fault in SERVER_FAULTS:
        study = by_uid[FAULT_STUDIES[fault]]
        assert study["status"] == "failed"
        assert EXPECTED[fault] in study["error"]
        assert not RETRY_CLAIM.search(study["error"])
        assert EXPECTED[fault] in result.stderr
    assert by_uid[sample_study.study_uid]["status"] == "done"
    assert (out / sample_study.study_uid / "features.csv").read_bytes() == clean_features


def test_cli_kill_9_mid_pull_then_rerun_resumes(
    stub_factory: Callable[..., DicomWebStub],
    sample_study: Any,
    tmp_path: Path,
    dicomweb_cli: Any,
    clean_features: bytes,
) -> None:
    stub = stub_factory(pause_at=20)
    out = tmp_path / "out"
    process = dicomweb_cli.start(stub.url, [sample_study.study_uid], out)
    try:
        assert stub.wait_paused(180), "the run never reached the 20th instance"
        process.kill()
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
        stub.release()
    left = list((out / ".dicomweb-cache" / sample_study.study_uid).rglob("*.dcm"))
    assert len(left) == 19  # what the killed run had completed
    before = len(stub.instance_requests())
    result = dicomweb_cli.run(stub.url, [sample_study.study_uid], out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not empty" not in result.stderr
    dicomweb_cli.assert_clean(result.stderr, out)
    assert len(stub.instance_requests()) - before == N_INSTANCES - 19  # resumed, not pulled again
    assert (out / sample_study.study_uid / "features.csv").read_bytes() == clean_features


def test_cli_sigterm_mid_pull_exits_130_and_rerun_completes(
    stub_factory: Callable[..., DicomWebStub],
    sample_study: Any,
    tmp_path: Path,
    dicomweb_cli: Any,
    clean_features: bytes,
) -> None:
    stub = stub_factory(pause_at=20)
    out = tmp_path / "out"
    process = dicomweb_cli.start(stub.url, [sample_study.study_uid, "1.2.3.999"], out)
    try:
        assert stub.wait_paused(180), "the run never reached the 20th instance"
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        stub.release()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    assert process.returncode == 130, stderr[-3000:]
    dicomweb_cli.assert_clean(stderr, out)
    summary = json.loads((out / "dicomweb.json").read_text())
    assert summary["interrupted"] is True
    assert [s["status"] for s in summary["studies"]] == ["interrupted"]
    assert summary["not_started"] == ["1.2.3.999"]
    result = dicomweb_cli.run(stub.url, [sample_study.study_uid], out)
    assert result.returncode == 0, result.stderr[-3000:]
    dicomweb_cli.assert_clean(result.stderr, out)
    assert (out / sample_study.study_uid / "features.csv").read_bytes() == clean_features


def test_cli_trickling_server_fails_that_study_and_goes_on(
    stub_factory: Callable[..., DicomWebStub],
    sample_study: Any,
    tmp_path: Path,
    dicomweb_cli: Any,
    clean_features: bytes,
) -> None:
    slow = FAULT_STUDIES[Fault.TRICKLE]
    stub = stub_factory(alias_studies=[slow], faults={slow: Fault.TRICKLE}, trickle_s=2.0)
    out = tmp_path / "out"
    started = time.monotonic()
    result = dicomweb_cli.run(stub.url, [slow, sample_study.study_uid], out, "--dicomweb-timeout", "4")
    assert result.returncode == 1, result.stderr[-3000:]
    dicomweb_cli.assert_clean(result.stderr, out)
    summary = json.loads((out / "dicomweb.json").read_text())
    late, done = summary["studies"]
    assert late["error_type"] == "DicomWebDeadlineError"
    assert "deadline of 4 s" in late["error"]
    assert done["status"] == "done"
    assert (out / sample_study.study_uid / "features.csv").read_bytes() == clean_features
    assert time.monotonic() - started < 200


# -- issue 15, point 8 in DICOMweb mode: a case the server no longer holds ------------------------


def test_cli_case_whose_seg_left_the_server_is_moved_to_the_studys_stale_folder(
    sample_study: Any, tmp_path: Path, dicomweb_cli: Any, clean_features: bytes
) -> None:
    """The study holds a second CT series (a copy under new UIDs) with its own SEG; after a
    run, that SEG is deleted on the server. The re-run's study folder (the study's OUTPUT)
    holds exactly the remaining case, whose ``features.csv`` equals a clean run of the
    sample study; the other case's record and SR/SEG are in ``OUTPUT/<study>/stale/``,
    listed in its ``run.json``; only the remaining case's files are reported as outputs."""
    import copy

    import pydicom
    from fmcib_testlib.dicom_builders import make_seg
    from fmcib_testlib.export_builder import nodule_mask
    from fmcib_testlib.http_stub import DicomWebStub
    from pydicom.uid import generate_uid

    second = generate_uid(entropy_srcs=["dicomweb-stale-series"])
    folder = tmp_path / "second"
    folder.mkdir()
    copies, files = [], []
    for p in sample_study.ct_files:
        ds = copy.deepcopy(pydicom.dcmread(p))
        ds.SeriesInstanceUID = second
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["stale", p.name])
        ds.save_as(folder / p.name)
        files.append(folder / p.name)
        copies.append(ds)
    copies.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    seg2 = make_seg(copies, {"Nodule": nodule_mask()}, folder / "SEG.dcm")
    both = [*sample_study.ct_files, sample_study.seg_file]
    out = tmp_path / "out"
    with DicomWebStub(files=[*both, *files, seg2]).running() as stub:
        first = dicomweb_cli.run(stub.url, [sample_study.study_uid], out)
    assert first.returncode == 0, first.stderr[-3000:]
    study_out = out / sample_study.study_uid
    assert (study_out / "dicom" / sample_study.study_uid / second / "fmcib_features_SR.dcm").is_file()
    with DicomWebStub(files=[*both, *files]).running() as stub:  # the second SEG deleted on the server
        result = dicomweb_cli.run(stub.url, [sample_study.study_uid], out)
    assert result.returncode == 0, result.stderr[-3000:]
    dicomweb_cli.assert_clean(result.stderr, out)
    assert (study_out / "features.csv").read_bytes() == clean_features
    assert not (study_out / "dicom" / sample_study.study_uid / second).exists()
    doc = json.loads((study_out / "run.json").read_text())
    [entry] = doc["stale"]
    assert entry["case_id"] == second and entry["kind"] == "case"
    for moved in entry["moved"]:
        assert (study_out / moved["to"]).exists() and moved["to"].startswith("stale/")
    assert any(m["from"].endswith(f"{second}/fmcib_features_SR.dcm") for m in entry["moved"])
    summary = json.loads((out / "dicomweb.json").read_text())
    [study] = summary["studies"]
    assert study["status"] == "done" and study["outputs"]
    assert all(second not in o for o in study["outputs"])
