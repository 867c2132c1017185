"""``merge`` checks what it joins (issue 15, point 5): every shard records i/N, its input
fingerprint and its settings; a missing, repeated, interrupted or mismatched shard is
refused with exit status 2 and a message naming it, and nothing is written; only the case
records of each shard's own run are taken (stale records in a folder do not come back).

Every shard here is a real run of the pipeline on the builders' export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fmcib_testlib.export_builder import make_export

from mhub_fmcib.batch.merge import merge_outputs
from mhub_fmcib.batch.store import CASES_DIR, CaseStore
from mhub_fmcib.config import RunConfig
from mhub_fmcib.errors import ConfigError
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.pipeline import StopFlag, run

NO_EXPORT = dict(export_sr=False, export_seg=False, export_qc=False)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export(tmp_path_factory.mktemp("export"), 3)


def _run(extractor: FeatureExtractor, inp: Path, out: Path, **kw: object) -> Path:
    run(RunConfig(input=inp, output=out, **{**NO_EXPORT, **kw}), {}, extractor=extractor)  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def shards(export: Path, tmp_path_factory: pytest.TempPathFactory, extractor: FeatureExtractor) -> list[Path]:
    root = tmp_path_factory.mktemp("shards")
    return [_run(extractor, export, root / f"shard_{i}", shard=(i, 3)) for i in range(3)]


@pytest.fixture(scope="module")
def single(export: Path, tmp_path_factory: pytest.TempPathFactory, extractor: FeatureExtractor) -> Path:
    return _run(extractor, export, tmp_path_factory.mktemp("single") / "out")


def _refused(folders: list[Path], output: Path, *needles: str) -> str:
    with pytest.raises(ConfigError) as err:
        merge_outputs(folders, output)
    message = str(err.value)
    for needle in needles:
        assert needle in message
    assert not output.exists() or not any(output.iterdir()), "a refused merge wrote something"
    return message


def test_each_shard_records_its_place_input_and_settings(shards: list[Path], single: Path) -> None:
    docs = [json.loads((s / "run.json").read_text()) for s in shards]
    assert [d["batch"]["shard"] for d in docs] == [[0, 3], [1, 3], [2, 3]]
    assert len({d["batch"]["input_fingerprint"] for d in docs}) == 1
    assert len({json.dumps(d["batch"]["settings"], sort_keys=True) for d in docs}) == 1
    wanted = {"weights_sha256", "batch_size", "segments", "export_sr", "heads_sha256", "software_version"}
    assert wanted <= set(docs[0]["batch"]["settings"])
    whole = json.loads((single / "run.json").read_text())["batch"]
    assert whole["shard"] is None and whole["input_fingerprint"] == docs[0]["batch"]["input_fingerprint"]
    listed = [c for d in docs for c in d["batch"]["cases"]]
    assert sorted(listed) == sorted(whole["cases"]) and len(listed) == 3  # each case in exactly one shard


def test_merge_equals_single_run(shards: list[Path], single: Path, tmp_path: Path) -> None:
    merge_outputs(shards, tmp_path / "m")
    for name in ("features.csv", "failures.csv"):
        assert (tmp_path / "m" / name).read_bytes() == (single / name).read_bytes()
    merged, one = (json.loads((d / "run.json").read_text()) for d in (tmp_path / "m", single))
    assert merged["inputs"] == {**one["inputs"], "shard": None, "output": str(tmp_path / "m")}
    assert merged["batch"] == one["batch"]
    assert merged["merged_from"] == [str(s) for s in shards]


def test_missing_shard_is_refused_by_the_cli(shards: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "m"
    res = subprocess.run(
        [sys.executable, "-m", "mhub_fmcib.cli", "merge", str(shards[0]), str(shards[2]), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2
    assert "shard 1/3 is missing" in res.stderr and "--shard 1/3" in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()


def test_interrupted_shard_is_refused(
    export: Path, shards: list[Path], tmp_path: Path, extractor: FeatureExtractor
) -> None:
    stop = StopFlag()
    stop.request("SIGTERM")
    cut = tmp_path / "shard_1"
    run(RunConfig(input=export, output=cut, shard=(1, 3), **NO_EXPORT), {}, extractor=extractor, stop=stop)  # type: ignore[arg-type]
    _refused([shards[0], cut, shards[2]], tmp_path / "m", "shard 1/3", "interrupted by SIGTERM", "resubmit")


def test_duplicate_shard_is_refused(shards: list[Path], tmp_path: Path) -> None:
    again = tmp_path / "shard_1_again"
    shutil.copytree(shards[1], again)
    _refused([*shards, again], tmp_path / "m", "shard 1/3 is given twice", str(again))
    _refused([*shards, shards[1]], tmp_path / "m2", "given twice")


def test_shards_of_another_split_are_refused(
    export: Path, shards: list[Path], tmp_path: Path, extractor: FeatureExtractor
) -> None:
    other = _run(extractor, export, tmp_path / "half", shard=(1, 2))
    _refused([shards[0], other, shards[2]], tmp_path / "m", "different numbers of shards", "[2, 3]")


def test_shard_of_other_input_is_refused(
    export: Path, shards: list[Path], tmp_path: Path, extractor: FeatureExtractor
) -> None:
    changed = tmp_path / "export"
    shutil.copytree(export, changed)
    _run(extractor, changed, tmp_path / "x", shard=(1, 3))
    _refused([shards[0], tmp_path / "x", shards[2]], tmp_path / "m", "saw different inputs", "shard 1/3")


def test_changed_file_of_the_same_export_is_refused(
    export: Path, shards: list[Path], tmp_path: Path, extractor: FeatureExtractor
) -> None:
    inp = tmp_path / "export"
    shutil.copytree(export, inp, copy_function=shutil.copy2)
    copies = [_run(extractor, inp, tmp_path / f"s{i}", shard=(i, 3)) for i in (0, 1)]
    victim = next((inp / "study2").glob("IM*"))  # a file of some case, touched between the shard runs
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    late = _run(extractor, inp, tmp_path / "s2", shard=(2, 3))
    _refused([*copies, late], tmp_path / "m", "saw different inputs")


def test_shard_with_other_settings_is_refused(
    export: Path, shards: list[Path], tmp_path: Path, extractor: FeatureExtractor
) -> None:
    other = _run(extractor, export, tmp_path / "b2", shard=(1, 3), batch_size=2)
    msg = _refused([shards[0], other, shards[2]], tmp_path / "m", "different settings", "batch_size")
    assert "'null' vs '2'" in msg or "'2' vs 'null'" in msg  # the default is auto (null)


def test_unsharded_or_foreign_folders_are_refused(shards: list[Path], single: Path, tmp_path: Path) -> None:
    _refused([single, *shards], tmp_path / "m", "without --shard")
    old = tmp_path / "old"
    shutil.copytree(shards[1], old)
    doc = json.loads((old / "run.json").read_text())
    del doc["batch"]  # what an older version wrote
    (old / "run.json").write_text(json.dumps(doc))
    _refused([shards[0], old, shards[2]], tmp_path / "m2", "older mhub-fmcib")
    _refused([shards[0], tmp_path, shards[2]], tmp_path / "m3", "no readable run.json")
    before = sorted(p.relative_to(shards[1]) for p in shards[1].rglob("*"))
    with pytest.raises(ConfigError, match="one of the shard folders"):
        merge_outputs(shards, shards[1])
    assert sorted(p.relative_to(shards[1]) for p in shards[1].rglob("*")) == before


def test_stale_records_in_a_shard_folder_do_not_come_back(
    shards: list[Path],
    single: Path,
    tmp_path: Path,
    extractor: FeatureExtractor,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # records of an earlier run over another export (two more studies) left in shard 1's folder
    elsewhere = _run(extractor, make_export(tmp_path_factory.mktemp("other"), 5), tmp_path / "elsewhere")
    copies = []
    for s in shards:
        shutil.copytree(s, tmp_path / s.name)
        copies.append(tmp_path / s.name)
    ours = set(json.loads((single / "run.json").read_text())["batch"]["cases"])
    stale = [r for r in CaseStore(elsewhere).all() if r.case_id not in ours]
    assert len(stale) == 2
    for rec in stale:
        shutil.copytree(CaseStore(elsewhere).path(rec.case_id), CaseStore(copies[1]).path(rec.case_id))
    merge_outputs(copies, tmp_path / "m")
    assert (tmp_path / "m" / "features.csv").read_bytes() == (single / "features.csv").read_bytes()
    assert {r.case_id for r in CaseStore(tmp_path / "m").all()} == ours
    assert len(list((tmp_path / "m" / CASES_DIR).iterdir())) == len(ours)


def test_record_replaced_after_the_run_is_refused(shards: list[Path], tmp_path: Path) -> None:
    copies = []
    for s in shards:
        shutil.copytree(s, tmp_path / s.name)
        copies.append(tmp_path / s.name)
    case_dir = next(d for d in (copies[2] / CASES_DIR).iterdir())
    doc = json.loads((case_dir / "case.json").read_text())
    doc["fingerprint"] = "0" * 64  # as another run over other input would leave it
    (case_dir / "case.json").write_text(json.dumps(doc))
    _refused(copies, tmp_path / "m", "shard 2/3", "was replaced after that run")
