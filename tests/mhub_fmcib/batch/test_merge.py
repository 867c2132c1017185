"""``merge`` keeps the whole configuration of its shards (heads, workflow) and equals a single
run; every output file is created with the umask's mode by the one atomic writer."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from fmcib_testlib.export_builder import make_export

from mhub_fmcib.batch.merge import merge_outputs
from mhub_fmcib.export.tables import read_features_csv
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.model.heads import LinearHead
from mhub_fmcib.pipeline import run
from mhub_fmcib.records import N_FEATURES
from mhub_fmcib.workflows import load_workflow, make_run_config


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export(tmp_path_factory.mktemp("export"), 3)


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory, extractor: FeatureExtractor) -> Path:
    rng = np.random.default_rng(3)
    h = LinearHead(
        name="malignant", task="binary", class_names=("benign", "malignant"),
        feature_names=tuple(f"fmcib_{i:04d}" for i in range(N_FEATURES)), mean=np.zeros(N_FEATURES),
        scale=np.ones(N_FEATURES), coef=rng.standard_normal((1, N_FEATURES)) * 1e-3, intercept=np.array([0.1]),
        weights_sha256=extractor.weights.sha256,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("head") / "malignant.json"
    path.write_text(json.dumps(h.to_dict()))
    return path


def test_merged_run_keeps_heads_and_workflow(
    export: Path, head: Path, tmp_path: Path, extractor: FeatureExtractor
) -> None:
    wf = load_workflow("default")

    def config(out: Path, shard: tuple[int, int] | None = None):  # type: ignore[no-untyped-def]
        return make_run_config(wf, export, out, heads=(head,), shard=shard, export_sr=False, export_seg=False)

    single = run(config(tmp_path / "single"), {}, extractor=extractor)
    assert single.exit_code == 0 and single.n_ok == 4
    shards = [tmp_path / f"shard{i}" for i in range(2)]
    for i, out in enumerate(shards):
        assert run(config(out, (i, 2)), {}, extractor=extractor).exit_code == 0
    merged = merge_outputs(shards, tmp_path / "merged")
    assert merged.exit_code == 0 and merged.n_ok == 4

    doc = json.loads((tmp_path / "merged" / "run.json").read_text())
    single_doc = json.loads((tmp_path / "single" / "run.json").read_text())
    assert doc["inputs"]["heads"] == [str(head)] and doc["inputs"]["workflow"] == "default"
    assert doc["inputs"]["segmentation_sources"] == ["SEG"] and doc["inputs"]["shard"] is None
    assert {k: v for k, v in doc["inputs"].items() if k != "output"} == {
        k: v for k, v in single_doc["inputs"].items() if k != "output"
    }
    assert [les["predictions"] for les in doc["lesions"]] == [les["predictions"] for les in single_doc["lesions"]]
    merged_csv = (tmp_path / "merged" / "features.csv").read_bytes()
    assert merged_csv == (tmp_path / "single" / "features.csv").read_bytes()
    meta, _ = read_features_csv(tmp_path / "merged" / "features.csv")
    assert all(0.0 < float(m["prediction_malignant"]) < 1.0 for m in meta)


def test_every_output_file_has_the_umask_mode(export: Path, tmp_path: Path, extractor: FeatureExtractor) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        report = run(make_run_config(load_workflow("default"), export, out), {}, extractor=extractor)
    finally:
        os.umask(old)
    assert report.exit_code == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    assert {".csv", ".json", ".dcm", ".png", ".html", ".npy"} <= kinds, kinds
    wrong = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    wrong = {k: v for k, v in wrong.items() if v != oct(0o644)}
    assert not wrong, wrong
    dirs = [p for p in out.rglob("*") if p.is_dir()]
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o755 for d in dirs), [
        (str(d), oct(stat.S_IMODE(d.stat().st_mode))) for d in dirs
    ]
