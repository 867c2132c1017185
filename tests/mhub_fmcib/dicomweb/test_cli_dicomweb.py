"""`mhub-fmcib run --dicomweb URL --study UID OUTPUT --store` against a real Orthanc: the
real pipeline (random-initialised weights) pulls, measures, pushes SR + SEG back; a second
run adds no duplicates; a wrong password fails clearly without leaking it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pytest
import requests

from mhub_fmcib.cli import main
from mhub_fmcib.export.tables import read_features_csv

pytestmark = pytest.mark.orthanc


def _args(server: Any, study: str, out: Path, weights: Path) -> list[str]:
    return [
        "run",
        "--dicomweb",
        server.url,
        "--study",
        study,
        str(out),
        "--weights",
        str(weights),
        "--store",
        "--progress",
        "none",
        "--no-qc",
    ]


def test_pull_run_store_round_trip(fresh_orthanc: Any, sample_study: Any, tmp_path: Path, weights_file: Path) -> None:
    env = {"DICOMWEB_USERNAME": fresh_orthanc.username, "DICOMWEB_PASSWORD": fresh_orthanc.password}
    n0 = fresh_orthanc.count_instances(sample_study.study_uid)
    out = tmp_path / "out"
    assert main(_args(fresh_orthanc, sample_study.study_uid, out, weights_file), env=env) == 0
    study_out = out / sample_study.study_uid
    meta, feats = read_features_csv(study_out / "features.csv")
    assert len(meta) == 1 and meta[0]["seg_sop_instance_uid"] == sample_study.seg_uid
    assert fresh_orthanc.count_instances(sample_study.study_uid) == n0 + 2  # SR + patch SEG
    # read the stored SR back from the server
    sr_path = next(study_out.rglob("fmcib_features_SR.dcm"))
    sr_local = hd.sr.srread(sr_path)
    r = requests.get(
        f"{fresh_orthanc.url}/studies/{sample_study.study_uid}/series/{sr_local.SeriesInstanceUID}/"
        f"instances/{sr_local.SOPInstanceUID}",
        auth=(fresh_orthanc.username, fresh_orthanc.password),
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        timeout=30,
    )
    assert r.status_code == 200
    assert sr_local.SOPInstanceUID.encode() in r.content
    evidence = {
        s.SeriesInstanceUID
        for item in sr_local.CurrentRequestedProcedureEvidenceSequence
        for s in item.ReferencedSeriesSequence
    }
    assert sample_study.series_uid in evidence
    groups = (
        sr_local.content.get_planar_roi_measurement_groups() + sr_local.content.get_volumetric_roi_measurement_groups()
    )
    assert groups or sr_local.ContentSequence
    assert np.all(np.isfinite(feats))
    # a second run stores the same UIDs: no duplicates on the server
    assert main(_args(fresh_orthanc, sample_study.study_uid, tmp_path / "out2", weights_file), env=env) == 0
    assert fresh_orthanc.count_instances(sample_study.study_uid) == n0 + 2


def test_wrong_password_is_clear_and_secret(
    fresh_orthanc: Any, sample_study: Any, tmp_path: Path, weights_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "not-the-password-s3cret"
    env = {"DICOMWEB_USERNAME": fresh_orthanc.username, "DICOMWEB_PASSWORD": secret}
    with caplog.at_level(logging.DEBUG):
        code = main(_args(fresh_orthanc, sample_study.study_uid, tmp_path / "out", weights_file), env=env)
    assert code != 0
    text = caplog.text
    assert "credentials" in text.lower() or "401" in text
    assert secret not in text
    for p in (tmp_path / "out").rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes()


def test_container_entrypoint_pulls_and_stores(
    fresh_orthanc: Any, sample_study: Any, tmp_path: Path, weights_file: Path
) -> None:
    """The image's entrypoint with --dicomweb (the weights read once for the banner, then
    released): the study is measured into OUTPUT/<StudyInstanceUID>, SR + SEG land on the server."""
    env = {"DICOMWEB_USERNAME": fresh_orthanc.username, "DICOMWEB_PASSWORD": fresh_orthanc.password}
    n0 = fresh_orthanc.count_instances(sample_study.study_uid)
    out = tmp_path / "output_data"
    out.mkdir()
    args = ["container", "--dicomweb", fresh_orthanc.url, "--study", sample_study.study_uid]
    args += ["--output", str(out), "--weights", str(weights_file), "--store", "--progress", "none"]
    assert main(args, env=env) == 0
    meta, feats = read_features_csv(out / sample_study.study_uid / "features.csv")
    assert [m["seg_sop_instance_uid"] for m in meta] == [sample_study.seg_uid]
    assert feats.shape == (1, 4096) and np.all(np.isfinite(feats))
    assert fresh_orthanc.count_instances(sample_study.study_uid) == n0 + 2
