"""QIDO-RS, WADO-RS and STOW-RS against a real Orthanc (see conftest.py).

Run inside a private network namespace:
``scripts/netns-run.sh .venv/bin/pytest tests/mhub_fmcib/dicomweb``.
"""

from __future__ import annotations

import base64
import json
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom.data import get_testdata_file

from mhub_fmcib.dicomweb import (
    DicomWebAuthError,
    DicomWebCacheLimitError,
    DicomWebConnectionError,
    DicomWebNotFoundError,
    DicomWebNothingToProcessError,
    DicomWebOptionError,
    DicomWebSettings,
    StudyStatus,
    open_client,
    plan_study,
    pull_study,
    run_dicomweb,
    select_studies,
    store_instances,
)

pytestmark = pytest.mark.orthanc

CT_SMALL = Path(str(get_testdata_file("CT_small.dcm")))


def _settings(server: Any, tmp_path: Path, **options: object) -> DicomWebSettings:
    values: dict[str, object] = {"retries": 2, "backoff_s": 0.01, "timeout_s": 10.0}
    values.update(options)
    return DicomWebSettings(
        server.url,
        username=server.username,
        password=str(values.pop("password", server.password)),
        cache_dir=tmp_path / "cache",
        **values,  # type: ignore[arg-type]
    )


def _plain_client(server: Any) -> DICOMwebClient:
    """An independent client (not our session code) to check what the server holds."""
    session = requests.Session()
    session.auth = (server.username, server.password)
    return DICOMwebClient(server.url, session=session)


def test_select_studies_by_uid_file_and_query(orthanc: Any, tmp_path: Path, sample_study: Any) -> None:
    client = open_client(_settings(orthanc, tmp_path))
    study_uid = sample_study.study_uid
    small_uid = str(pydicom.dcmread(CT_SMALL, stop_before_pixels=True).StudyInstanceUID)
    studies = tmp_path / "studies.txt"
    studies.write_text(f"{small_uid}\n{study_uid}\n")
    assert select_studies(client, [study_uid], studies, []) == [study_uid, small_uid]
    assert select_studies(client, [], None, ["PatientID=LUNG1-SAMPLE"]) == [study_uid]
    assert select_studies(client, [], None, ["ModalitiesInStudy=SEG"]) == [study_uid]
    both = select_studies(client, [], None, ["ModalitiesInStudy=CT"])
    assert sorted(both) == sorted([study_uid, small_uid])
    with pytest.raises(DicomWebOptionError, match="matched no study"):
        select_studies(client, [], None, ["PatientID=NOBODY"])
    with pytest.raises(DicomWebOptionError, match="No study selected"):
        select_studies(client, [], None, [])


def test_plan_finds_ct_and_the_seg_that_references_it(orthanc: Any, tmp_path: Path, sample_study: Any) -> None:
    client = open_client(_settings(orthanc, tmp_path))
    study_uid, series_uid = sample_study.study_uid, sample_study.series_uid
    sop_uids, seg_uid = sample_study.sop_uids, sample_study.seg_uid
    plan = plan_study(client, study_uid)
    assert [s.series_uid for s in plan.ct_series] == [series_uid]
    ct = plan.ct_series[0]
    assert sorted(ct.sop_uids) == sop_uids
    assert [(r.modality, r.sop_uid) for r in ct.segmentations] == [("SEG", seg_uid)]
    assert ct.segmentations[0].referenced_series_uids == (series_uid,)
    pairs = plan.instances_to_pull()
    assert len(pairs) == 49
    assert pairs[-1][1] == seg_uid

    small = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    small_plan = plan_study(client, str(small.StudyInstanceUID))
    assert [s.has_segmentation for s in small_plan.ct_series] == [False]
    assert small_plan.instances_to_pull() == []
    with pytest.raises(DicomWebNothingToProcessError, match="give seed points"):
        pull_study(client, small_plan, tmp_path / "small")
    assert not (tmp_path / "small").exists()
    pulled = pull_study(client, small_plan, tmp_path / "small", include_unsegmented=True)
    assert [p.name for p in pulled.files] == [f"{small.SOPInstanceUID}.dcm"]


def test_unknown_study_is_a_clear_error(orthanc: Any, tmp_path: Path) -> None:
    client = open_client(_settings(orthanc, tmp_path))
    with pytest.raises(DicomWebNotFoundError, match=r"StudyInstanceUID 1\.2\.3\.999") as info:
        plan_study(client, "1.2.3.999")
    assert orthanc.base.split("//")[1] in str(info.value)


def test_pull_writes_complete_files_that_decode(orthanc: Any, tmp_path: Path, sample_study: Any) -> None:
    client = open_client(_settings(orthanc, tmp_path))
    ct_files = sample_study.ct_files
    study_uid, series_uid = sample_study.study_uid, sample_study.series_uid
    sop_uids, seg_uid = sample_study.sop_uids, sample_study.seg_uid
    seen: list[Path] = []
    pulled = pull_study(client, plan_study(client, study_uid), tmp_path / "study", on_instance=seen.append)
    assert list(pulled.files) == seen
    assert len(seen) == 49
    assert pulled.bytes == sum(p.stat().st_size for p in pulled.files)
    assert sorted(p.stem for p in (tmp_path / "study" / series_uid).iterdir()) == sop_uids
    assert not list((tmp_path / "study").rglob("*.part"))
    for source in ct_files[::12]:
        original = pydicom.dcmread(source)
        copy = pydicom.dcmread(tmp_path / "study" / series_uid / f"{original.SOPInstanceUID}.dcm")
        # Stored encoding kept (JPEG-LS lossless) and decoded to the same pixels.
        assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert copy.file_meta.TransferSyntaxUID.is_compressed
        np.testing.assert_array_equal(copy.pixel_array, original.pixel_array)
        assert copy.ImagePositionPatient == original.ImagePositionPatient
    pulled_seg = hd.seg.segread(next(p for p in pulled.files if p.stem == seg_uid))
    assert pulled_seg.get_source_image_uids()[0][1] == series_uid


def test_cache_limit_names_the_option_and_leaves_nothing(orthanc: Any, tmp_path: Path, sample_study: Any) -> None:
    client = open_client(_settings(orthanc, tmp_path, cache_limit_bytes=1_000_000))
    study_uid = sample_study.study_uid
    with pytest.raises(DicomWebCacheLimitError, match="--cache-limit-mb") as info:
        pull_study(client, plan_study(client, study_uid), tmp_path / "study")
    assert "1000000 bytes" in str(info.value)
    assert not (tmp_path / "study").exists()


def test_round_trip_store_and_no_duplicates(
    fresh_orthanc: Any,
    tmp_path: Path,
    sample_study: Any,
    process_folder: Callable[[Path, Path], list[Path]],
) -> None:
    settings = _settings(fresh_orthanc, tmp_path)
    study_uid, series_uid = sample_study.study_uid, sample_study.series_uid
    sop_uids, _seg_uid = sample_study.sop_uids, sample_study.seg_uid
    assert fresh_orthanc.count_instances(study_uid) == 49
    report = run_dicomweb(settings, ["1.2.3.999", study_uid], tmp_path / "out", process_folder, store=True)
    # One bad study does not stop the other.
    unknown, done = report.studies
    assert unknown.status is StudyStatus.FAILED
    assert unknown.error_type == "DicomWebNotFoundError"
    assert "1.2.3.999" in str(unknown.error)
    assert done.status is StudyStatus.DONE, done.error
    assert (done.pulled_instances, report.n_failed) == (49, 1)
    assert done.store is not None
    assert len(done.store.stored) == 2
    assert done.store.ok
    assert set(done.seconds) == {"pull", "process", "store"}
    assert not (tmp_path / "cache" / study_uid).exists()  # pulled copy removed after use
    json.dumps(report.to_json())

    # Read back with an independent client: the SEG and the SR reference the right CT.
    plain = _plain_client(fresh_orthanc)
    found = plain.search_for_instances(study_uid, fields=["Modality", "SeriesInstanceUID"])
    by_modality: dict[str, list[dict[str, dict]]] = {}
    for item in found:
        by_modality.setdefault(item["00080060"]["Value"][0], []).append(item)
    assert {m: len(v) for m, v in by_modality.items()} == {"CT": 48, "SEG": 2, "SR": 1}
    sr_item = by_modality["SR"][0]
    sr = plain.retrieve_instance(study_uid, sr_item["0020000E"]["Value"][0], sr_item["00080018"]["Value"][0])
    stored_seg_uid = pydicom.dcmread(done.outputs[0]).SOPInstanceUID
    evidence = {
        str(ref.ReferencedSOPInstanceUID): str(series.SeriesInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert {u for u, s in evidence.items() if s == series_uid} == set(sop_uids)
    assert stored_seg_uid in evidence
    parsed = hd.sr.srread(_write(sr, tmp_path / "sr.dcm"))
    groups = parsed.content.get_volumetric_roi_measurement_groups()
    assert groups[0].referenced_segment.referenced_sop_instance_uid == stored_seg_uid
    mean = groups[0].get_measurements()[0].value
    assert -1000.0 < float(mean) < 400.0
    seg_item = next(i for i in by_modality["SEG"] if i["00080018"]["Value"][0] == stored_seg_uid)
    stored_seg = plain.retrieve_instance(study_uid, seg_item["0020000E"]["Value"][0], stored_seg_uid)
    assert stored_seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid

    # A second run stores the same UIDs again: nothing is duplicated.
    before = fresh_orthanc.count_instances(study_uid)
    again = run_dicomweb(settings, [study_uid], tmp_path / "out2", process_folder, True)
    assert again.ok
    assert again.studies[0].store is not None
    assert sorted(again.studies[0].store.stored) == sorted(done.store.stored)
    assert fresh_orthanc.count_instances(study_uid) == before == 51
    assert len(plain.search_for_instances(study_uid)) == 51


def _write(dataset: pydicom.Dataset, path: Path) -> Path:
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_store_reports_every_instance(fresh_orthanc: Any, tmp_path: Path) -> None:
    client = open_client(_settings(fresh_orthanc, tmp_path))
    ds = pydicom.dcmread(CT_SMALL)
    report = store_instances(client, [CT_SMALL, ds], batch_size=1)
    assert report.stored == (str(ds.SOPInstanceUID),) * 2
    assert report.ok
    assert fresh_orthanc.count_instances(str(ds.StudyInstanceUID)) == 1


def _all_text(caplog: pytest.LogCaptureFixture, exc: BaseException) -> str:
    return "\n".join([caplog.text, str(exc), repr(exc), "".join(traceback.format_exception(exc))])


def _assert_no_secret(text: str, password: str) -> None:
    assert password not in text
    for user in ("fmcib-test", "intruder"):
        assert base64.b64encode(f"{user}:{password}".encode()).decode() not in text


def test_wrong_password_is_an_auth_error_without_the_secret(
    orthanc: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    sample_study: Any,
    process_folder: Callable[[Path, Path], list[Path]],
) -> None:
    wrong = orthanc.password + "-wrong"
    study_uid = sample_study.study_uid
    settings = _settings(orthanc, tmp_path, password=wrong)
    with caplog.at_level(logging.DEBUG), pytest.raises(DicomWebAuthError) as info:
        run_dicomweb(settings, [study_uid], tmp_path / "out", process_folder, True)
    assert "HTTP 401" in str(info.value)
    assert "DICOMWEB_PASSWORD" in str(info.value)
    text = _all_text(caplog, info.value)
    _assert_no_secret(text, wrong)
    _assert_no_secret(text, orthanc.password)
    with caplog.at_level(logging.DEBUG), pytest.raises(DicomWebAuthError) as info:
        plan_study(open_client(settings), study_uid)
    _assert_no_secret(_all_text(caplog, info.value), wrong)


@pytest.mark.parametrize("stage", ["pull", "run"])
def test_server_killed_mid_pull(
    fresh_orthanc: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    stage: str,
    sample_study: Any,
    process_folder: Callable[[Path, Path], list[Path]],
) -> None:
    settings = _settings(fresh_orthanc, tmp_path, retries=3)
    client = open_client(settings)
    study_uid = sample_study.study_uid
    plan = plan_study(client, study_uid)
    pulled: list[Path] = []

    def kill_after_three(path: Path) -> None:
        pulled.append(path)
        if len(pulled) == 3:
            fresh_orthanc.kill()

    dest = tmp_path / "cache" / study_uid
    with caplog.at_level(logging.DEBUG):
        if stage == "pull":
            with pytest.raises(DicomWebConnectionError) as info:
                pull_study(client, plan, dest, on_instance=kill_after_three)
            message = str(info.value)
            _assert_no_secret(_all_text(caplog, info.value), fresh_orthanc.password)
        else:
            # The same through the orchestrator: recorded for the study, no output.
            report = run_dicomweb(
                settings,
                [study_uid],
                tmp_path / "out",
                process_folder,
                True,
                on_instance=kill_after_three,
            )
            outcome = report.studies[0]
            assert outcome.status is StudyStatus.FAILED
            assert outcome.error_type == "DicomWebConnectionError"
            message = str(outcome.error)
            assert not list((tmp_path / "out").rglob("*.dcm"))
    assert len(pulled) == 3
    assert f"127.0.0.1:{fresh_orthanc.http_port}" in message
    assert "after 4 attempts (3 retries)" in message
    assert caplog.text.count("Retrying (DeadlineRetry(") == 3
    assert not dest.exists()
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".dcm", ".part")]
