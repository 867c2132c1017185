"""Fault suite of issue 5: 200+ generated bad inputs mixed into a valid export.

A valid export of 2 studies (``make_export``) is copied and mixed with the bad inputs of
``fmcib_testlib.faults`` (truncated files, random bytes behind a DICM preamble, missing or
malformed geometry tags, Rows/Columns that disagree with the pixel data, headers claiming
gigabytes, duplicate SOPInstanceUIDs with different pixels, SEGs of absent series or
without foreground, hostile PatientID/descriptions and UIDs, non-CT objects, DICOMDIRs,
empty files, folders named like files and symlinks leading outside the input). The whole
mixed export is run once through the real CLI in a subprocess and once in-process.

What is checked:

* no crash and no traceback: the CLI exits 1 (some cases failed) and its stderr holds no
  ``Traceback``; its peak RSS (``os.wait4``) and the in-process run's RSS growth stay far
  below what the absurd headers claim;
* every valid case's features are identical (same ``features.csv`` lines, same float32
  arrays) to a clean run on the good studies alone, and no failure mentions a good series;
* every bad input is accounted for. Rule, per input (``BadInput.allowed``, at least one
  must hold):

  - a bad **file** that is not usable as DICOM at all (junk, zero bytes, random bytes behind
    ``DICM``, non-CT objects, localizers, DICOMDIR, a header cut short) is listed in
    ``run.json`` ``skipped_files`` with a reason (SKIPPED);
  - a bad **series** (it has its own UIDs and a SEG, so it is a case) is named by its series
    UID as a failed case in ``failures.csv`` (CASE_FAILED); when the damage is in its SEG, a
    row names that SEG or a lesion of it (SEG_FAILED); a damaged duplicate that is dropped
    while the series is measured is named by path (PATH_NAMED);
  - a truncated slice whose header is cut may be skipped instead, the rest of its series
    then being measured: the skipped entry accounts for it;
  - a valid series with hostile metadata (PatientID ``../../escape``, NUL, non-ASCII...) is
    measured (OK);
  - a folder named like a file, or a symlink, is neither indexed nor followed
    (NOT_INDEXED); the valid series behind the outside links never shows up;

* nothing is written outside OUTPUT: the whole temporary tree (input, outside target,
  cwd of the CLI) is snapshotted before and after each run, and the input tree is unchanged
  byte for byte; every name below OUTPUT is made of ``[A-Za-z0-9._-]`` only and contains
  none of the hostile strings.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fmcib_testlib.export_builder import make_export
from fmcib_testlib.faults import HOSTILE_TEXT, BadInput, Outcome, add_faults
from fmcib_testlib.runs import RunOutput, WatchedRun

from mhub_fmcib.config import RunConfig
from mhub_fmcib.export.tables import read_features_csv
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.pipeline import run

ROOT = Path(__file__).resolve().parents[2]
GiB = 1 << 30
#: Largest peak RSS growth (bytes) the in-process run may cause; headers claim > 8 GiB.
MAX_RSS_GROWTH = 1.5 * GiB
#: Largest peak RSS of the CLI process (model ~0.75 GB + torch + one small series).
MAX_CLI_RSS = 4 * GiB
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


#: The in-process runs write QC pictures; the CLI run writes SR and SEG (``--no-qc``), so
#: every exporter meets the hostile inputs once.
def in_process_config(inp: Path, out: Path) -> RunConfig:
    return RunConfig(input=inp, output=out, export_sr=False, export_seg=False, export_qc=True)


@dataclass(frozen=True)
class FaultEnv:
    base: Path
    good: Path
    mixed: Path
    outside: Path
    bad: tuple[BadInput, ...]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> FaultEnv:
    base = tmp_path_factory.mktemp("faults")
    good = make_export(base / "good", 2)
    mixed = base / "mixed"
    shutil.copytree(good, mixed, symlinks=True)
    bad = add_faults(mixed, base / "outside", base / "template", seed=5)
    return FaultEnv(base, good, mixed, base / "outside", tuple(bad))


def snapshot(root: Path, exclude: tuple[Path, ...] = ()) -> dict[str, tuple[str, int, str]]:
    """relative path -> (type, size, sha256 or link target), symlinks not followed."""
    out: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if d / n not in exclude)
        for name in [*dirnames, *filenames]:
            p = d / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", 0, os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", 0, "")
            else:
                data = p.read_bytes()
                out[rel] = ("file", len(data), hashlib.sha256(data).hexdigest())
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _indexed_paths(output: Path) -> set[str]:
    con = sqlite3.connect(f"file:{output / 'index.sqlite'}?mode=ro", uri=True)
    try:
        return {p for (p,) in con.execute("SELECT path FROM files")}
    finally:
        con.close()


def outcomes(b: BadInput, output: Path) -> set[Outcome]:
    """The ways the run accounted for ``b`` (see the module docstring)."""
    doc = json.loads((output / "run.json").read_text(encoding="utf-8"))
    rows = _rows(output / "failures.csv")
    skipped = {s["path"] for s in doc["skipped_files"] if s["reason"]}
    got: set[Outcome] = set()
    paths = [str(p) for p in b.paths]
    if paths and all(p in skipped for p in paths):
        got.add(Outcome.SKIPPED)
    if b.series_uid and any(r["id"] == b.series_uid and r["level"] == "case" for r in rows):
        got.add(Outcome.CASE_FAILED)
    if b.seg_uid and any(r["id"] == f"SEG {b.seg_uid}" or f"/{b.seg_uid}/" in r["id"] for r in rows):
        got.add(Outcome.SEG_FAILED)
    if paths and all(any(p in r["paths"].split(";") or p in r["reason"] for r in rows) for p in paths):
        got.add(Outcome.PATH_NAMED)
    if b.series_uid and any(
        le["series_instance_uid"] == b.series_uid and le["status"] == "ok" for le in doc["lesions"]
    ):
        got.add(Outcome.OK)
    if b.series_uid and any(f"CT series {b.series_uid} has no SEG" in n for n in doc["notes"]):
        got.add(Outcome.NOTED)
    indexed = _indexed_paths(output)
    if all(p not in indexed and not any(s.startswith(p + os.sep) for s in indexed) for p in paths):
        if all(Path(p).is_symlink() or Path(p).is_dir() for p in paths):
            got.add(Outcome.NOT_INDEXED)
    return got


@pytest.fixture(scope="module")
def clean(env: FaultEnv, extractor: FeatureExtractor) -> RunOutput:
    out = env.base / "clean_out"
    cfg = in_process_config(env.good, out)
    return RunOutput(run(cfg, {}, extractor=extractor), out)


@pytest.fixture(scope="module")
def mixed(env: FaultEnv, clean: RunOutput, extractor: FeatureExtractor) -> WatchedRun:
    """The in-process run on the mixed export, with the tree snapshots and RSS around it."""
    out = env.base / "mixed_out"
    before = snapshot(env.base)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report = run(in_process_config(env.mixed, out), {}, extractor=extractor)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    after = snapshot(env.base, exclude=(out,))
    return WatchedRun(report, out, before, after, rss1 - rss0)


def test_enough_bad_inputs_of_every_category(env: FaultEnv) -> None:
    counts = collections.Counter(b.category for b in env.bad)
    assert len(env.bad) >= 200, counts
    assert len(counts) == 15 and min(counts.values()) >= 4, counts
    # distinct inputs: no file is counted twice
    all_paths = [p for b in env.bad for p in b.paths]
    assert len(all_paths) == len(set(all_paths))


def test_clean_run(clean: RunOutput) -> None:
    report = clean.report
    assert report.exit_code == 0 and report.n_ok == 3 and not report.failures


def test_valid_cases_identical_to_clean_run(clean: RunOutput, mixed: WatchedRun) -> None:
    clean_report, clean_out = clean.report, clean.out
    report, out = mixed.report, mixed.out
    assert report.exit_code == 1
    got = {r.lesion.lesion_id: r for r in report.results}
    for r in clean_report.results:
        m = got[r.lesion.lesion_id]
        assert m.status.value == "ok" and m.lesion == r.lesion
        np.testing.assert_array_equal(m.features, r.features)
    clean_lines = (clean_out / "features.csv").read_text(encoding="utf-8").splitlines()
    mixed_lines = set((out / "features.csv").read_text(encoding="utf-8").splitlines()[1:])
    assert len(clean_lines) == 4 and set(clean_lines[1:]) <= mixed_lines


def test_no_failure_blames_a_good_series(clean: RunOutput, mixed: WatchedRun) -> None:
    clean_report = clean.report
    out = mixed.out
    good_uids = {str(r.lesion.series_instance_uid) for r in clean_report.results}
    good_uids |= {str(r.lesion.seg_sop_instance_uid) for r in clean_report.results}
    text = (out / "failures.csv").read_text(encoding="utf-8")
    for uid in good_uids:
        assert uid not in text
    assert "/good/" not in text and "study0" not in text and "study1" not in text


def test_every_bad_input_is_accounted_for(env: FaultEnv, mixed: WatchedRun) -> None:
    out = mixed.out
    wrong = []
    for b in env.bad:
        got = outcomes(b, out)
        if not got & b.allowed:
            wrong.append(
                f"{b.category} [{b.variant}] {[str(p) for p in b.paths]}: got {sorted(got)}, "
                f"expected one of {sorted(b.allowed)}"
            )
    assert not wrong, "\n".join(wrong)


def test_failures_are_actionable(mixed: WatchedRun) -> None:
    out = mixed.out
    rows = _rows(out / "failures.csv")
    assert len(rows) >= 100
    for r in rows:
        assert r["id"] and r["level"] in ("case", "file", "lesion") and r["error_type"]
        assert len(r["reason"]) > 20 and "Traceback" not in r["reason"]
    doc = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert all(s["reason"] for s in doc["skipped_files"])
    assert doc["summary"]["exit_code"] == 1


def test_symlinked_outside_series_is_never_used(env: FaultEnv, mixed: WatchedRun) -> None:
    out = mixed.out
    outside_series = {
        str(__import__("pydicom").dcmread(p, stop_before_pixels=True).SeriesInstanceUID)
        for p in (env.outside / "series").glob("IM*")
    }
    everything = "".join(
        p.read_text(encoding="utf-8") for p in (out / "run.json", out / "failures.csv", out / "features.csv")
    )
    for uid in outside_series:
        assert uid not in everything
    assert str(env.outside) not in everything and "/etc/passwd" not in everything
    assert not any(str(env.outside) in p for p in _indexed_paths(out))


def test_nothing_written_outside_output_and_input_unchanged(env: FaultEnv, mixed: WatchedRun) -> None:
    before, after = mixed.before, mixed.after
    assert after == before
    assert snapshot(env.mixed) == {k[len("mixed/") :]: v for k, v in before.items() if k.startswith("mixed/")}


def check_output_names(out: Path) -> None:
    """Every name below ``out`` is safe, free of hostile text, and stays inside ``out``."""
    names = [p.relative_to(out) for p in out.rglob("*")]
    assert names
    hostile = [h for h in HOSTILE_TEXT if len(h.strip(". ")) > 1] + ["etc", "escape", "passwd"]
    for rel in names:
        for part in rel.parts:
            assert SAFE_NAME.match(part), rel
            assert not any(h in part for h in hostile), rel
        assert not (out / rel).is_symlink()
        assert (out / rel).resolve().is_relative_to(out.resolve())


def test_output_names_come_from_uids_and_hashes(mixed: WatchedRun) -> None:
    out = mixed.out
    check_output_names(out)
    assert len(list((out / "qc").glob("*.png"))) == sum(r.status.value == "ok" for r in mixed.report.results)


def test_memory_stays_bounded(mixed: WatchedRun) -> None:
    growth = mixed.rss_growth
    assert growth < MAX_RSS_GROWTH, f"peak RSS grew by {growth / GiB:.2f} GiB"


def _peak_rss_kib_until_exit(proc: subprocess.Popen[bytes]) -> int:
    """The child's own peak RSS (VmHWM of its post-exec address space, polled until it
    exits). Not ``wait4``'s ru_maxrss: Linux carries the parent's high-water mark across
    fork+exec into it, so a child of a large pytest process would report the parent's size."""
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return peak


@pytest.mark.slow
def test_cli_on_mixed_export(env: FaultEnv, clean: RunOutput, mixed: WatchedRun, weights_file: Path) -> None:
    """The real command line: exit 1, no traceback, same features as in-process, bounded
    peak memory, nothing written outside OUTPUT (its cwd included)."""
    inproc_out = mixed.out
    out = env.base / "cli_out"
    cwd = env.base / "cwd"
    cwd.mkdir()
    before = snapshot(env.base)
    log = env.base / "cli_logs"
    log.mkdir()
    with open(log / "stdout", "wb") as so, open(log / "stderr", "wb") as se:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mhub_fmcib.cli",
                "run",
                str(env.mixed),
                str(out),
                "--weights",
                str(weights_file),
                "--no-qc",
                "--progress",
                "none",
            ],
            stdout=so,
            stderr=se,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        peak_kib = _peak_rss_kib_until_exit(proc)
    stderr = (log / "stderr").read_text(encoding="utf-8", errors="replace")
    stdout = (log / "stdout").read_text(encoding="utf-8", errors="replace")
    after = snapshot(env.base, exclude=(out, log))
    assert proc.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert 0 < peak_kib * 1024 < MAX_CLI_RSS, f"CLI peak RSS {peak_kib / 2**20:.2f} GiB"
    assert after == {k: v for k, v in before.items() if not k.startswith("cli_logs")}
    assert not any(cwd.iterdir())
    # same rows as in-process; values equal up to float32 rounding (the CLI may run the
    # traced, batch-norm-folded CPU graph; exact equality to a clean run is asserted in-process)
    cli_meta, cli_feats = read_features_csv(out / "features.csv")
    meta, feats = read_features_csv(inproc_out / "features.csv")
    assert cli_meta == meta
    np.testing.assert_allclose(cli_feats, feats, rtol=1e-4, atol=1e-4)
    check_output_names(out)
    # the SR and SEG of every measured series are there, named by UIDs only, or the
    # exporter's refusal of that series' headers is in failures.csv (features are kept)
    doc = json.loads((out / "run.json").read_text(encoding="utf-8"))
    refused = {r["id"] for r in _rows(out / "failures.csv") if r["error_type"] == "ExportError"}
    measured = {(le["study_instance_uid"], le["series_instance_uid"]) for le in doc["lesions"] if le["status"] == "ok"}
    good = {(str(r.lesion.study_instance_uid), str(r.lesion.series_instance_uid)) for r in clean.report.results}
    assert good <= measured and len(measured) >= 10 and not {s for _, s in good} & refused
    for study, series in measured:
        folder = out / "dicom" / study / series
        written = (folder / "fmcib_features_SR.dcm").is_file() and (folder / "fmcib_patch_region_SEG.dcm").is_file()
        assert written or series in refused, series
    # the CLI names the same bad inputs as the in-process run
    for b in env.bad:
        assert outcomes(b, out) & b.allowed, b


# ---- issue 15, points 6-11: the operator's faults, through the real command line


@dataclass(frozen=True)
class CliResult:
    rc: int
    stdout: str
    stderr: str


def run_cli(*args: str | Path, weights: Path, timeout: float = 600) -> CliResult:
    """``mhub-fmcib run ARGS --weights W --no-qc --progress none`` in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "mhub_fmcib.cli", "run", *map(str, args), "--weights", str(weights), "--no-qc"]
        + ["--progress", "none"],
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    res = CliResult(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-3000:]
    return res


def temporaries_under(out: Path) -> list[Path]:
    from mhub_fmcib.export.atomic import is_temporary

    return [p for p in out.rglob("*") if is_temporary(p.name)]


def same_results(out: Path, ref: Path) -> None:
    """Same ``features.csv`` rows (exactly) and the same DICOM outputs' names as ``ref``."""
    assert (out / "features.csv").read_text(encoding="utf-8") == (ref / "features.csv").read_text(encoding="utf-8")
    names = sorted(str(p.relative_to(ref)) for p in (ref / "dicom").rglob("*.dcm"))
    assert sorted(str(p.relative_to(out)) for p in (out / "dicom").rglob("*.dcm")) == names


@dataclass(frozen=True)
class SmallExport:
    inp: Path
    clean: Path
    base: Path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, weights_file: Path) -> SmallExport:
    """One study with two SEGs' worth of lesions (``make_export(_, 2)``) and its clean CLI run."""
    base = tmp_path_factory.mktemp("faults2")
    inp = make_export(base / "in", 2)
    clean_out = base / "clean"
    res = run_cli(inp, clean_out, weights=weights_file)
    assert res.rc == 0, res.stderr[-3000:]
    return SmallExport(inp, clean_out, base)


def test_temporaries_left_by_kill_9_are_removed_by_the_next_run(small: SmallExport, weights_file: Path) -> None:
    """Point 7: one naming scheme; leftovers everywhere under OUTPUT (as kill -9 leaves
    them, old names included) are gone after the next run, and ``merge`` copies none."""
    out = small.base / "leftovers"
    shutil.copytree(small.clean, out)
    series = next(p.parent for p in (out / "dicom").rglob("fmcib_features_SR.dcm"))
    planted = [
        out / ".fmcib-tmp-features.csv.0a1b2c3d4e5f",
        series / ".fmcib-tmp-fmcib_features_SR.dcm.0a1b2c3d4e5f",
        out / "cases" / ".fmcib-tmp-0123abcd.0a1b2c3d4e5f",
        out / ".features.csv.0a1b2c3d4e5f.part",  # names of earlier versions
        series / ".fmcib_features_SR.dcm.0a1b2c3d4e5f.part",
        out / "cases" / ".tmp-0123abcd-0a1b2c3d4e5f",
    ]

    def plant() -> None:
        for p in planted:
            if p.parent.name == "cases":
                p.mkdir()
                (p / "case.json").write_text('{"half": ')
            else:
                p.write_bytes(b"half-written")

    plant()
    assert len(temporaries_under(out)) == len(planted)
    res = run_cli(small.inp, out, "--shard", "0/1", weights=weights_file)  # a shard: merged below
    assert res.rc == 0, res.stderr[-3000:]
    assert temporaries_under(out) == []
    same_results(out, small.clean)
    plant()  # merge copies none of a shard's temporaries
    shard = out
    merged = small.base / "leftovers_merged"
    proc = subprocess.run(
        [sys.executable, "-m", "mhub_fmcib.cli", "merge", str(shard), "--output", str(merged)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert temporaries_under(merged) == []
    # the shard folder is a copy of another: its records name their files relative to it
    same_results(merged, small.clean)


def test_second_run_on_one_output_exits_2_naming_the_first(small: SmallExport, weights_file: Path) -> None:
    """Point 9: an exclusive lock on OUTPUT; the second run exits 2 naming the first's PID
    and host; the lock dies with its holder (kill -9), so the next run goes ahead."""
    import signal
    import socket

    out = small.base / "locked"
    shutil.copytree(small.clean, out)
    first = subprocess.Popen(
        [sys.executable, "-m", "mhub_fmcib.cli", "run", str(small.inp), str(out), "--weights", str(weights_file)]
        + ["--no-qc", "--progress", "none"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        lock = out / ".mhub-fmcib.lock"
        deadline = time.monotonic() + 120
        while not (lock.is_file() and f"pid {first.pid} " in lock.read_text()):
            assert first.poll() is None and time.monotonic() < deadline, "first run never took the lock"
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # holds the lock while the second one tries
        second = run_cli(small.inp, out, weights=weights_file)
        assert second.rc == 2, second.stderr[-3000:]
        assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr
        assert "in use by another mhub-fmcib run" in second.stderr
    finally:
        first.kill()
        first.wait()
    res = run_cli(small.inp, out, weights=weights_file)
    assert res.rc == 0, res.stderr[-3000:]
    assert temporaries_under(out) == []
    same_results(out, small.clean)


def test_control_characters_never_reach_stderr(small: SmallExport, weights_file: Path) -> None:
    """Point 10: ESC/BEL/CR/C1/bidi from PatientName, segment labels, paths and options
    reach stderr escaped, never raw; no input text can start a line of its own."""
    from fmcib_testlib.faults import CONTROL_TEXT, RAW_CONTROL, with_control_text

    inp = with_control_text(small.inp, small.base / "control")
    out = small.base / ("out" + CONTROL_TEXT.replace("\n", "").replace("/", ""))
    res = run_cli(inp, out, "--segments", CONTROL_TEXT, weights=weights_file)
    # the wanted segment matches none (exit 0 or 3 for "nothing measured": not this test's point)
    assert res.rc in (0, 1, 3), res.stderr[-3000:]
    assert "--segments" in res.stderr and "\\x1b[31mred" in res.stderr and "\\a" in res.stderr
    for stream in (res.stderr, res.stdout):
        assert not RAW_CONTROL.search(stream), repr(RAW_CONTROL.findall(stream)[:5])
        assert not any(line.startswith(("ERROR forged", "INFO forged")) for line in stream.splitlines())
    assert temporaries_under(out) == []
    usage = run_cli(inp, out, "--no-such-option" + CONTROL_TEXT, weights=weights_file)  # argparse echoes it
    assert usage.rc == 2 and "--no-such-option" in usage.stderr and not RAW_CONTROL.search(usage.stderr)


def test_escape_control() -> None:
    from mhub_fmcib.terminal import escape_control

    assert escape_control("a\x1b[2Jb\x07\r\x9b\u202e\x00") == "a\\x1b[2Jb\\a\\r\\x9b\\u202e\\x00"
    assert escape_control("one\ntwo") == "one\\ntwo"
    assert escape_control("one\ntwo", keep_newlines=True) == "one\n    | two"
    assert escape_control("Müller ✓ 日本") == "Müller ✓ 日本"


def test_disk_full_stops_cleanly_with_exit_4_and_resumes(small: SmallExport, weights_file: Path) -> None:
    """Point 6: OUTPUT on a 2.2 MB tmpfs (private mount namespace) that holds one case's
    outputs but not both: exit 4, a message naming the folder and the bytes needed, nothing
    half-written, the finished case kept; with space (remount) the re-run resumes to results
    identical to a clean run."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount a small tmpfs in a private mount namespace")
    logs = small.base / "diskfull_logs"
    logs.mkdir()
    mnt = small.base / "diskfull_mnt"
    mnt.mkdir()
    cli = (
        f"{sys.executable} -m mhub_fmcib.cli run {small.inp} {mnt / 'out'} --weights {weights_file} "
        "--no-qc --progress none"
    )
    script = f"""
set -u
mount -t tmpfs -o size=2200k tmpfs {mnt} || exit 99
{cli} >{logs}/1.out 2>{logs}/1.err; echo $? >{logs}/1.rc
cp -a {mnt / "out"} {logs}/after1
mount -o remount,size=64m {mnt}
{cli} >{logs}/2.out 2>{logs}/2.err; echo $? >{logs}/2.rc
cp -a {mnt / "out"} {logs}/after2
"""
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=900,
    )
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace')}")
    err1 = (logs / "1.err").read_text(encoding="utf-8", errors="replace")
    assert (logs / "1.rc").read_text().strip() == "4", err1[-3000:]
    assert "Traceback" not in err1
    assert f"output folder {mnt / 'out'} is full (No space left on device" in err1
    assert re.search(r"\d+ bytes free, about \d+ bytes needed", err1), err1[-2000:]
    after1 = logs / "after1"
    assert temporaries_under(after1) == []
    if (after1 / "run.json").is_file():  # the tables of what finished (when they fit)
        doc = json.loads((after1 / "run.json").read_text(encoding="utf-8"))
        assert doc["summary"]["exit_code"] == 4 and "is full" in doc["summary"]["output_full"]
        n_kept = len(doc["lesions"])
    else:
        assert not (after1 / "features.csv").exists() and "nothing half-written" in err1
        n_kept = 0
    err2 = (logs / "2.err").read_text(encoding="utf-8", errors="replace")
    assert (logs / "2.rc").read_text().strip() == "0", err2[-3000:]
    assert "Traceback" not in err2
    doc2 = json.loads((logs / "after2" / "run.json").read_text(encoding="utf-8"))
    assert doc2["summary"]["cases_reused_from_earlier_run"] >= (1 if n_kept else 0)
    assert temporaries_under(logs / "after2") == []
    same_results(logs / "after2", small.clean)


# ---- issue 15, point 8: stale outputs; point 11: implausible calibration and SEG references


def _series_uid(folder: Path) -> tuple[str, str]:
    """(StudyInstanceUID, SeriesInstanceUID) of the CT slices in ``folder``."""
    import pydicom

    ds = pydicom.dcmread(next(folder.glob("IM*")), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def _merge(*args: str | Path) -> CliResult:
    proc = subprocess.run(
        [sys.executable, "-m", "mhub_fmcib.cli", "merge", *map(str, args)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    res = CliResult(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    return res


@dataclass(frozen=True)
class RemovedSeg:
    """An export whose study 1 lost its SEG after a full run: the input (SEG removed), the
    full run's output (before), a clean run on the reduced input, study 1's UIDs."""

    inp: Path
    before: Path
    clean: Path
    study_uid: str
    series_uid: str


@pytest.fixture(scope="module")
def removed(small: SmallExport, weights_file: Path) -> RemovedSeg:
    inp = small.base / "rm_in"
    shutil.copytree(small.inp, inp)
    before = small.base / "rm_before"
    res = run_cli(inp, before, weights=weights_file)
    assert res.rc == 0, res.stderr[-3000:]
    (inp / "study1" / "SEG.dcm").unlink()
    clean = small.base / "rm_clean"
    res = run_cli(inp, clean, weights=weights_file)
    assert res.rc == 0, res.stderr[-3000:]
    study, series = _series_uid(inp / "study1")
    return RemovedSeg(inp, before, clean, study, series)


def test_stale_case_of_a_removed_seg_is_moved_to_stale_and_listed(removed: RemovedSeg, weights_file: Path) -> None:
    """Point 8: after a SEG left the input, the re-run (resuming the other case) leaves
    exactly the current cases in ``cases/`` and ``dicom/``: the old case's record, SR and
    SEG are moved, byte for byte, to ``OUTPUT/stale/<stamp>/`` and listed in ``run.json``;
    results equal a clean run on the reduced input; a further run moves nothing."""
    from mhub_fmcib.batch.store import case_key

    out = removed.inp.parent / "rm_rerun"
    shutil.copytree(removed.before, out)
    series_dir = Path("dicom") / removed.study_uid / removed.series_uid
    old = {p.name: p.read_bytes() for p in (out / series_dir).iterdir()}
    assert sorted(old) == ["fmcib_features_SR.dcm", "fmcib_patch_region_SEG.dcm"]
    res = run_cli(removed.inp, out, weights=weights_file)
    assert res.rc == 0, res.stderr[-3000:]
    assert "moved to OUTPUT/stale/" in res.stderr
    assert temporaries_under(out) == []
    same_results(out, removed.clean)
    assert not (out / "dicom" / removed.study_uid).exists()  # emptied folders are removed
    assert len(list((out / "cases").iterdir())) == 1
    doc = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert doc["summary"]["cases_reused_from_earlier_run"] == 1  # the remaining case resumed, not stale
    assert doc["summary"]["stale_cases_moved"] == 1
    [entry] = doc["stale"]
    assert entry["case_id"] == removed.series_uid and entry["kind"] == "case"
    assert "not in this run's input" in entry["reason"]
    moved = {m["from"]: m["to"] for m in entry["moved"]}
    key = case_key(removed.series_uid)
    assert set(moved) == {f"cases/{key}", *(str(series_dir / n) for n in old)}
    [stamp] = list((out / "stale").iterdir())
    for src, dest in moved.items():
        assert dest == f"stale/{stamp.name}/{src}" and (out / dest).exists() and not (out / src).exists()
    for name, data in old.items():
        assert (stamp / series_dir / name).read_bytes() == data
    assert json.loads((stamp / "cases" / key / "case.json").read_text())["case_id"] == removed.series_uid
    again = run_cli(removed.inp, out, weights=weights_file)
    assert again.rc == 0, again.stderr[-3000:]
    doc = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert doc["stale"] == [] and doc["summary"]["cases_reused_from_earlier_run"] == 1
    assert [p.name for p in (out / "stale").iterdir()] == [stamp.name]
    same_results(out, removed.clean)


def test_a_shard_moves_only_its_own_stale_cases_and_merge_ignores_stale(
    removed: RemovedSeg, weights_file: Path
) -> None:
    """Point 8 with ``--shard``: the removed case belongs to shard 1/2; shard 0/2 leaves its
    record and outputs alone, shard 1/2 moves them. The merge of the two (shard 0's folder
    moved elsewhere first: records name their files relative to OUTPUT) equals the clean
    run on the reduced input, DICOM outputs included, and takes nothing from ``stale/``."""
    from mhub_fmcib.batch.store import shard_of

    assert shard_of(removed.series_uid, 2) == 1
    base = removed.inp.parent
    shard0, shard1 = base / "rm_shard0", base / "rm_shard1"
    for d in (shard0, shard1):
        shutil.copytree(removed.before, d)
    res = run_cli(removed.inp, shard0, "--shard", "0/2", weights=weights_file)
    assert res.rc == 0, res.stderr[-3000:]
    doc0 = json.loads((shard0 / "run.json").read_text(encoding="utf-8"))
    assert doc0["stale"] == [] and not (shard0 / "stale").exists()
    assert len(list((shard0 / "cases").iterdir())) == 2  # shard 1's record is shard 1's business
    assert (shard0 / "dicom" / removed.study_uid / removed.series_uid / "fmcib_features_SR.dcm").is_file()
    res = run_cli(removed.inp, shard1, "--shard", "1/2", weights=weights_file)
    assert res.rc == 0, res.stderr[-3000:]
    doc1 = json.loads((shard1 / "run.json").read_text(encoding="utf-8"))
    assert [e["case_id"] for e in doc1["stale"]] == [removed.series_uid]
    assert not (shard1 / "dicom" / removed.study_uid).exists()
    moved0 = base / "elsewhere" / "shard0"
    moved0.parent.mkdir()
    shard0.rename(moved0)
    merged = base / "rm_merged"
    res = _merge(moved0, shard1, "--output", merged)
    assert res.rc == 0, res.stderr[-3000:]
    same_results(merged, removed.clean)
    assert not (merged / "stale").exists() and temporaries_under(merged) == []
    assert len(list((merged / "cases").iterdir())) == 1


def test_rescale_slope_zero_fails_its_series_naming_file_and_value(
    small: SmallExport, removed: RemovedSeg, weights_file: Path
) -> None:
    """Point 11: a slice with RescaleSlope 0 (every voxel the intercept: a constant image)
    fails its series with a message naming the file and the value; the other study's
    results equal a clean run without the failed study. The failed case's SR and SEG of an
    earlier run are not left in ``dicom/`` (moved to ``stale/`` as replaced outputs)."""
    import pydicom

    inp = small.base / "slope0_in"
    shutil.copytree(small.inp, inp)
    bad = inp / "study1" / "IM0005"
    ds = pydicom.dcmread(bad)
    ds.RescaleSlope = 0
    ds.save_as(bad)
    out = small.base / "slope0_out"
    shutil.copytree(small.clean, out)  # an earlier run that measured study 1
    res = run_cli(inp, out, weights=weights_file)
    assert res.rc == 1, res.stderr[-3000:]
    _, series = _series_uid(inp / "study1")
    [row] = _rows(out / "failures.csv")
    assert row["id"] == series and row["level"] == "case" and row["error_type"] == "CalibrationError"
    assert f"{bad} has RescaleSlope 0" in row["reason"] and "constant image" in row["reason"]
    assert f"{bad} has RescaleSlope 0" in res.stderr
    assert temporaries_under(out) == []
    same_results(out, removed.clean)
    doc = json.loads((out / "run.json").read_text(encoding="utf-8"))
    [entry] = [e for e in doc["stale"] if e["case_id"] == series]
    assert entry["kind"] == "replaced_outputs"
    assert sorted(Path(m["from"]).name for m in entry["moved"]) == [
        "fmcib_features_SR.dcm",
        "fmcib_patch_region_SEG.dcm",
    ]


def test_seg_made_on_another_series_says_what_it_references(
    small: SmallExport, removed: RemovedSeg, weights_file: Path
) -> None:
    """Point 11: a SEG placed on a CT by Frame of Reference whose frames reference the
    instances of another series (absent) is no longer reported as "empty": the failure says
    how many SOP Instance UIDs it references, that none is the CT's, whose they are, and the
    fix. The other study's results equal a clean run without it."""
    import copy

    import pydicom
    from fmcib_testlib.dicom_builders import make_seg
    from fmcib_testlib.export_builder import nodule_mask
    from pydicom.uid import generate_uid

    inp = small.base / "foreign_in"
    shutil.copytree(small.inp, inp)
    _, series = _series_uid(inp / "study1")
    other = generate_uid(entropy_srcs=["foreign-series"])
    copies = []
    for p in sorted((inp / "study1").glob("IM*")):
        ds = copy.deepcopy(pydicom.dcmread(p))
        ds.SeriesInstanceUID = other
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["foreign", p.name])
        copies.append(ds)
    copies.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    make_seg(copies, {"Nodule": nodule_mask()[:, :, 14:34]}, inp / "study1" / "SEG.dcm")
    out = small.base / "foreign_out"
    res = run_cli(inp, out, weights=weights_file)
    assert res.rc == 1, res.stderr[-3000:]
    [row] = _rows(out / "failures.csv")
    assert row["id"].startswith(f"{series}/") and row["error_type"] == "SegmentationError"
    reason = row["reason"]
    assert "is empty" not in reason
    assert "its frames reference 2 SOP Instance UID(s), none of which is an instance of CT series" in reason
    assert f"CT series {series} (20 instance(s))" in reason and f"2 to series {other}" in reason
    assert "add the series it was made on to the input" in reason
    assert temporaries_under(out) == []
    same_results(out, removed.clean)
def _rows_of_series(features_csv: Path, series_uid: str, keep: bool = True) -> list[str]:
    """The lines of ``features_csv`` of (or, with ``keep=False``, not of) one CT series."""
    lines = features_csv.read_text(encoding="utf-8").splitlines()[1:]
    return [line for line in lines if (f",{series_uid}," in line) is keep]


def test_implausible_hu_range_is_warned_in_run_json(small: SmallExport, weights_file: Path) -> None:
    """Point 11 (HU range): a series whose RescaleIntercept puts every voxel above 500 HU is
    measured (exit 0, no traceback, no temporaries) with a run.json warning naming it and
    the range seen; the other study's results are those of a clean run, which has no such
    warning; a resumed run keeps the warning (it lives in the case record)."""
    inp = small.base / "hu_in"
    shutil.copytree(small.inp, inp)
    study = sorted(p for p in inp.iterdir() if p.is_dir())[1]
    series = ""
    for path in sorted(study.glob("IM*")):
        ds = pydicom.dcmread(path)
        ds.RescaleIntercept = 2000  # stored values 0..4095 read as HU + 2000
        ds.save_as(path)
        series = str(ds.SeriesInstanceUID)
    out = small.base / "hu_out"
    res = run_cli(inp, out, weights=weights_file)
    assert res.rc == 0, res.stderr[-3000:]
    assert temporaries_under(out) == []
    doc = json.loads((out / "run.json").read_text(encoding="utf-8"))
    warned = [w for w in doc["warnings"] if "implausible Hounsfield units" in w]
    assert len(warned) == 1 and f"CT series {series}" in warned[0], doc["warnings"]
    assert "above 500 HU" in warned[0] and "RescaleSlope/RescaleIntercept" in warned[0]
    assert "implausible Hounsfield units" in res.stderr
    clean = json.loads((small.clean / "run.json").read_text(encoding="utf-8"))
    assert not any("implausible" in w for w in clean["warnings"])
    assert _rows_of_series(out / "features.csv", series, keep=False) == _rows_of_series(
        small.clean / "features.csv", series, keep=False
    )
    again = run_cli(inp, out, weights=weights_file)  # every case reused from its record
    assert again.rc == 0, again.stderr[-3000:]
    doc2 = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert doc2["summary"]["cases_reused_from_earlier_run"] == 2
    assert [w for w in doc2["warnings"] if "implausible" in w] == warned


def _run_cli_peak_kib(*args: str | Path, weights: Path) -> tuple[CliResult, int]:
    """:func:`run_cli` with the child's peak RSS (KiB, :func:`_peak_rss_kib_until_exit`)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mhub_fmcib.cli", "run", *map(str, args), "--weights", str(weights), "--no-qc"]
        + ["--progress", "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    streams: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda n=n, s=s: streams.__setitem__(n, s.read()))  # type: ignore[misc]
        for n, s in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for t in readers:
        t.start()
    peak = _peak_rss_kib_until_exit(proc)
    for t in readers:
        t.join()
    res = CliResult(
        proc.returncode, streams["out"].decode("utf-8", "replace"), streams["err"].decode("utf-8", "replace")
    )
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-3000:]
    return res, peak


def test_long_ct_costs_only_the_slices_the_patches_read(tmp_path: Path, weights_file: Path) -> None:
    """Point 12: the sample study and the same study with 300 more slices above it (same
    series; copies of its top slice, 5 mm apart). The patches read the same slices and the
    1 mm grid starts at the same corner, so the long series gives the same features.csv;
    decoding only those slices (and leaving the others' pixel data on disk), its peak RSS
    is within 120 MiB of the short one's (a whole float32 volume would add 300 MiB)."""
    from fmcib_testlib.export_builder import make_study

    short = tmp_path / "short"
    make_study(short, 0)
    long = tmp_path / "long"
    shutil.copytree(short, long)
    files = sorted((long / "study0").glob("IM*"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    top = pydicom.dcmread(files[-1])
    z_top = float(top.ImagePositionPatient[2])
    for n in range(1, 301):
        top.SOPInstanceUID = top.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.15012.{n}"
        top.ImagePositionPatient = [*top.ImagePositionPatient[:2], z_top + 5.0 * n]
        top.InstanceNumber = len(files) + n
        top.save_as(long / "study0" / f"EXTRA{n:04d}")
    res_short, peak_short = _run_cli_peak_kib(short, tmp_path / "out_short", weights=weights_file)
    res_long, peak_long = _run_cli_peak_kib(long, tmp_path / "out_long", weights=weights_file)
    assert res_short.rc == 0 and res_long.rc == 0, res_long.stderr[-3000:]
    assert temporaries_under(tmp_path / "out_long") == []
    short_rows = (tmp_path / "out_short" / "features.csv").read_text(encoding="utf-8")
    assert (tmp_path / "out_long" / "features.csv").read_text(encoding="utf-8") == short_rows
    assert peak_long - peak_short < 120 * 1024, f"peak RSS {peak_short / 2**20:.2f} -> {peak_long / 2**20:.2f} GiB"
