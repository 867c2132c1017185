"""The one-case-ahead prefetch (issue 18, point 6): the next case's import and patches are
prepared in a thread while the encoder runs the current one. Prefetching changes nothing a
run writes (features.csv, failures.csv, run.json but for timings and the setting itself), a
case failing in the thread fails alone with its reason, SIGTERM still stops after the case
in flight (exit 130 in the CLI) and the resumed run equals an uninterrupted one."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from fmcib_testlib.export_builder import make_export

from mhub_fmcib.cli import install_stop_handlers
from mhub_fmcib.config import InputKind, RunConfig
from mhub_fmcib.export.hooks import CaseOutcome
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.pipeline import StopFlag, run, use_prefetch
from mhub_fmcib.plan import Case

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
NO_EXPORT = dict(export_sr=False, export_seg=False, export_qc=False)
#: run.json keys that differ between two runs of the same inputs (wall-clock times)
VOLATILE = ("timings_s", "started", "finished", "case_seconds", "seconds")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export(tmp_path_factory.mktemp("export"), 3)


@pytest.fixture(scope="module")
def seeds_with_a_broken_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four cases of a seeds CSV: two copies of the sample NRRD, a damaged NRRD between
    them, and the sample DICOM series."""
    d = tmp_path_factory.mktemp("seeds")
    for name in ("a.nrrd", "c.nrrd"):
        shutil.copy2(SAMPLE / "nrrd" / "lung1_image.nrrd", d / name)
    good = (SAMPLE / "nrrd" / "lung1_image.nrrd").read_bytes()
    (d / "b_broken.nrrd").write_bytes(good[:400] + b"\0" * 1000)  # header kept, voxels cut off
    seed = "-21.858572,-120.535814,-611.496416"
    rows = [f"{d / n},{seed},{n}" for n in ("a.nrrd", "b_broken.nrrd", "c.nrrd")]
    rows.append(f"{SAMPLE / 'dicom' / 'ct'},{seed},dicom")
    (d / "seeds.csv").write_text("image_path,coordX,coordY,coordZ,lesion_name\n" + "\n".join(rows) + "\n")
    return d / "seeds.csv"


def _normalised_run_json(out: Path) -> dict[str, object]:
    def scrub(v: object) -> object:
        if isinstance(v, dict):
            return {k: scrub(x) for k, x in v.items() if k not in VOLATILE}
        if isinstance(v, list):
            return [scrub(x) for x in v]
        return v.replace(str(out), "OUT") if isinstance(v, str) else v

    doc = json.loads((out / "run.json").read_text())
    doc["inputs"].pop("prefetch")
    return scrub(doc)  # type: ignore[return-value]


def _run_both(config: RunConfig, extractor: FeatureExtractor, tmp_path: Path) -> tuple[Path, Path]:
    outs = []
    for on in (False, True):
        out = tmp_path / f"prefetch_{'on' if on else 'off'}"
        run(replace(config, output=out, prefetch=on), {}, extractor=extractor)
        outs.append(out)
    return outs[0], outs[1]


def test_prefetch_writes_what_a_run_without_it_writes(
    export: Path, extractor: FeatureExtractor, tmp_path: Path
) -> None:
    off, on = _run_both(RunConfig(input=export, output=tmp_path, **NO_EXPORT), extractor, tmp_path)  # type: ignore[arg-type]
    assert (on / "features.csv").read_bytes() == (off / "features.csv").read_bytes()
    assert (on / "failures.csv").read_bytes() == (off / "failures.csv").read_bytes()
    doc_on = _normalised_run_json(on)
    assert doc_on == _normalised_run_json(off)
    assert doc_on["summary"]["lesions_ok"] == 4  # type: ignore[index]  # 1 + 2 + 1 lesions
    assert json.loads((on / "run.json").read_text())["inputs"]["prefetch"] is True


def test_a_case_failing_in_prefetch_fails_alone(
    seeds_with_a_broken_image: Path, extractor: FeatureExtractor, tmp_path: Path
) -> None:
    config = RunConfig(input=seeds_with_a_broken_image, output=tmp_path, input_kind=InputKind.SEEDS_CSV, **NO_EXPORT)  # type: ignore[arg-type]
    off, on = _run_both(config, extractor, tmp_path)
    report_on = json.loads((on / "run.json").read_text())
    failed = [e for e in report_on["errors"] if "b_broken.nrrd" in json.dumps(e)]
    assert len(failed) == 1 and len(report_on["errors"]) == 1, report_on["errors"]
    assert report_on["summary"]["lesions_ok"] == 3 and report_on["summary"]["exit_code"] == 1
    assert (on / "failures.csv").read_bytes() == (off / "failures.csv").read_bytes()
    assert (on / "features.csv").read_bytes() == (off / "features.csv").read_bytes()
    assert _normalised_run_json(on) == _normalised_run_json(off)


def test_sigterm_with_prefetch_stops_after_the_case_in_flight_and_resumes(
    export: Path, extractor: FeatureExtractor, tmp_path: Path
) -> None:
    """The CLI's own SIGTERM handler; the signal is sent while the first case is exported
    (the prefetch thread is then preparing the second)."""
    stop = StopFlag()
    sent: list[str] = []

    def signal_after_first_case(case: Case, outcome: CaseOutcome) -> Sequence[Path]:
        if not sent:
            sent.append(case.case_id)
            signal.raise_signal(signal.SIGTERM)
        return []

    config = RunConfig(input=export, output=tmp_path / "out", prefetch=True, **NO_EXPORT)  # type: ignore[arg-type]
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    install_stop_handlers(stop)
    try:
        report = run(config, {}, extractor=extractor, hooks=[signal_after_first_case], stop=stop)
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
    assert report.interrupted == "SIGTERM"
    assert len(sent) == 1 and report.results  # only the case in flight finished
    assert all(r.lesion.lesion_id.startswith(f"{sent[0]}/") for r in report.results)
    assert len([p for p in (config.output / "cases").iterdir() if not p.name.startswith(".")]) == 1
    assert json.loads((config.output / "run.json").read_text())["summary"]["interrupted"] == "SIGTERM"
    resumed = run(config, {}, extractor=extractor, hooks=[])
    assert resumed.cases_skipped == 1 and not resumed.interrupted
    single = run(replace(config, output=tmp_path / "single", prefetch=False), {}, extractor=extractor, hooks=[])
    assert single.n_ok == resumed.n_ok == 4
    assert (config.output / "features.csv").read_bytes() == (tmp_path / "single" / "features.csv").read_bytes()


def test_prefetch_auto_is_on_for_cuda_only(extractor: FeatureExtractor, tmp_path: Path) -> None:
    config = RunConfig(input=tmp_path, output=tmp_path)
    assert config.prefetch is None and not use_prefetch(config, extractor)  # extractor on CPU
    assert use_prefetch(replace(config, prefetch=True), extractor)
    assert not use_prefetch(replace(config, prefetch=False), extractor)
