"""Batches: resume with fingerprints, retry of failed cases, shards + merge equal to one run,
kill -9 and SIGTERM safety, JSON progress, the persistent index."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fmcib_testlib.export_builder import make_export
from fmcib_testlib.runs import RunOutput

from mhub_fmcib.batch.merge import merge_outputs
from mhub_fmcib.config import RunConfig
from mhub_fmcib.dicom.index_db import index_folder_cached
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.pipeline import run

NO_EXPORT = dict(export_sr=False, export_seg=False, export_qc=False)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export(tmp_path_factory.mktemp("export"), 3)


def _run(extractor: FeatureExtractor, inp: Path, out: Path, **kw: object):  # type: ignore[no-untyped-def]
    return run(RunConfig(input=inp, output=out, **{**NO_EXPORT, **kw}), {}, extractor=extractor)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def single(export: Path, tmp_path_factory: pytest.TempPathFactory, extractor: FeatureExtractor) -> RunOutput:
    out = tmp_path_factory.mktemp("single")
    return RunOutput(_run(extractor, export, out), out)


def test_single_run(single: RunOutput) -> None:
    report, out = single.report, single.out
    assert report.exit_code == 0
    assert report.n_ok == 4  # 3 nodules + 1 second lesion
    assert (out / "failures.csv").read_text().splitlines() == ["id,level,error_type,reason,paths"]


def test_shards_merge_equal_single_run(
    export: Path, single: RunOutput, tmp_path: Path, extractor: FeatureExtractor
) -> None:
    single_out = single.out
    outs = []
    for i in range(3):
        out = tmp_path / f"shard{i}"
        rep = _run(extractor, export, out, shard=(i, 3))
        assert rep.exit_code == 0
        outs.append(out)
    sizes = [len(json.loads((o / "run.json").read_text())["lesions"]) for o in outs]
    assert sum(sizes) == 4  # every case exactly once
    merged = merge_outputs(outs, tmp_path / "merged")
    assert merged.n_ok == 4
    assert (tmp_path / "merged" / "features.csv").read_bytes() == (single_out / "features.csv").read_bytes()


def test_resume_skips_finished_and_reruns_changed(export: Path, tmp_path: Path, extractor: FeatureExtractor) -> None:
    out = tmp_path / "out"
    first = _run(extractor, export, out)
    before = (out / "features.csv").read_bytes()
    again = _run(extractor, export, out)
    assert again.cases_skipped == 3
    assert (out / "features.csv").read_bytes() == before
    seg = export / "study1" / "SEG.dcm"
    st = seg.stat()
    os.utime(seg, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = _run(extractor, export, out)
    assert third.cases_skipped == 2
    assert (out / "features.csv").read_bytes() == before
    assert first.n_ok == third.n_ok == 4


def test_failed_case_is_retried(export: Path, tmp_path: Path, extractor: FeatureExtractor) -> None:
    inp = tmp_path / "in"
    shutil.copytree(export, inp)
    victim = sorted((inp / "study2").glob("IM*"))[10]
    hidden = tmp_path / "hidden"
    victim.rename(hidden)
    out = tmp_path / "out"
    rep = _run(extractor, inp, out)
    assert rep.exit_code == 1
    assert any("missing slice" in f.reason for f in rep.failures)
    rows = (out / "failures.csv").read_text()
    assert "missing slice" in rows
    hidden.rename(victim)
    rep2 = _run(extractor, inp, out)
    assert rep2.exit_code == 0 and rep2.cases_skipped == 2 and rep2.n_ok == 4


def _cli(args: list[str], **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mhub_fmcib.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw
    )  # type: ignore[call-overload]


def _wait_for_records(out: Path, n: int, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        d = out / "cases"
        if d.is_dir() and len([p for p in d.iterdir() if not p.name.startswith(".")]) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError("no case finished in time")


@pytest.mark.slow
def test_kill_and_sigterm(export: Path, tmp_path: Path, weights_file: Path, single: RunOutput) -> None:
    single_out = single.out
    out = tmp_path / "out"
    base = ["run", str(export), str(out), "--weights", str(weights_file), "--no-qc", "--no-sr", "--no-seg"]
    # kill -9 after the first case is recorded: nothing half-written is left
    p = _cli(base)
    _wait_for_records(out, 1, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    leftovers = [q for q in out.rglob("*") if q.name.endswith(".part") or ".tmp-" in str(q)]
    for q in leftovers:  # only our temporary names may remain, never a partial final file
        assert q.name.startswith(".") or ".tmp-" in str(q)
    assert not (out / "features.csv").exists() or (out / "features.csv").read_text().count("\n") >= 1
    # SIGTERM: finishes the case in flight, writes outputs, exits 130; JSON progress on stdout
    p = _cli([*base, "--progress", "json"])
    time.sleep(0.5)
    _wait_for_records(out, 2, p)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=240)
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "end"
    assert any(e["event"] == "case" and e["skipped"] for e in events)  # the case finished before kill -9
    doc = json.loads((out / "run.json").read_text())
    if p.returncode == 130:
        assert doc["summary"]["interrupted"] == "SIGTERM"
    else:  # the last case finished before the signal arrived
        assert p.returncode == 0, stderr
    # a final run completes and equals the uninterrupted single run
    p = _cli(base)
    assert p.wait(timeout=300) == 0
    assert (out / "features.csv").read_bytes() == (single_out / "features.csv").read_bytes()
    assert not list((out / "cases").glob(".tmp-*"))


def test_persistent_index_reuses_unchanged_files(export: Path, tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    idx1, s1 = index_folder_cached(export, db)
    n_files = sum(1 for p in export.rglob("*") if p.is_file())
    assert (s1.read, s1.reused) == (n_files, 0)
    idx2, s2 = index_folder_cached(export, db)
    assert (s2.read, s2.reused) == (0, n_files)
    assert sorted(idx1.instances, key=lambda r: str(r.path)) == sorted(idx2.instances, key=lambda r: str(r.path))
    f = next(export.rglob("IM0003"))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1))
    _, s3 = index_folder_cached(export, db, workers=2)
    assert (s3.read, s3.reused) == (1, n_files - 1)


def test_index_command_summary(export: Path, tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "mhub_fmcib.cli", "index", str(export), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = dict(line.rsplit(None, 1) for line in res.stdout.splitlines())
    assert lines["studies"] == "3" and lines["CT series"] == "3" and lines["SEG instances"] == "3"


def test_cli_shard_option(export: Path, tmp_path: Path, weights_file: Path) -> None:
    from mhub_fmcib.cli import main

    code = main(
        [
            "run",
            str(export),
            str(tmp_path / "o"),
            "--weights",
            str(weights_file),
            "--shard",
            "1/3",
            "--no-qc",
            "--no-sr",
            "--no-seg",
            "--progress",
            "none",
        ],
        env={},
    )
    assert code == 0
    doc = json.loads((tmp_path / "o" / "run.json").read_text())
    assert doc["inputs"]["shard"] == [1, 3]
    assert main(["run", str(export), str(tmp_path / "p"), "--shard", "3/3"], env={}) == 2  # i must be < N
