"""The QC page and the demonstration mark of a real run: the whole pipeline on the sample
CT with a multi-lesion SEG (the sample nodule, a second lesion, one at the image's edge) and
random-initialised weights written by ``write_random_weights`` (marked as a demonstration)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pydicom
import pytest
import torch
from fmcib_testlib.browser import dump_dom
from fmcib_testlib.dicom_builders import SAMPLE, SAMPLE_SEG, copy_ct, make_seg, read_ct_datasets, sphere
from fmcib_testlib.runs import RunOutput
from PIL import Image

from mhub_fmcib.config import RunConfig
from mhub_fmcib.errors import WeightsError
from mhub_fmcib.export.layout import SEG_FILE_NAME, SR_FILE_NAME
from mhub_fmcib.export.patch_seg import DEMO_SEG_SERIES_DESCRIPTION
from mhub_fmcib.export.sr import DEMO_PARAMETER, DEMO_SR_SERIES_DESCRIPTION
from mhub_fmcib.image_io import read_image
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.model.weights import DEMONSTRATION_KEY, load_weights_file, read_weights
from mhub_fmcib.patch import extract_patch
from mhub_fmcib.pipeline import run
from mhub_fmcib.records import LesionStatus

SHAPE = (512, 512, 48)


class _Images(HTMLParser):
    """The ``src`` of every ``<img>`` and the number of lesion rows of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src") or "")
        if tag == "tr":
            self.rows += 1


def _images(index: Path) -> _Images:
    p = _Images()
    p.feed(index.read_text(encoding="utf-8"))
    return p


def _config(inp: Path, out: Path, resume: bool = False) -> RunConfig:
    return RunConfig(input=inp, output=out, export_sr=True, export_seg=True, export_qc=True, resume=resume)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample CT, its nodule SEG, and a SEG with a second lesion and an edge lesion
    (centred 4 voxels = 2.3 mm from the image's left border: its 50 mm cube leaves the image)."""
    inp = tmp_path_factory.mktemp("qc_in")
    ct = read_ct_datasets(copy_ct(inp / "ct"))
    shutil.copy2(SAMPLE_SEG, inp / "nodule_seg.dcm")
    masks = {"second": sphere(SHAPE, (300, 260, 20), (8, 8, 2)), "edge": sphere(SHAPE, (4, 256, 24), (4, 6, 1))}
    make_seg(ct, masks, inp / "multi_seg.dcm")
    return inp


@pytest.fixture(scope="module")
def qc_run(study: Path, tmp_path_factory: pytest.TempPathFactory, extractor: FeatureExtractor) -> RunOutput:
    out = tmp_path_factory.mktemp("qc_out")
    return RunOutput(run(_config(study, out), {}, extractor=extractor), out)


def test_index_links_one_existing_picture_per_lesion(qc_run: RunOutput) -> None:
    report, out = qc_run.report, qc_run.out
    ok = [r for r in report.results if r.status is LesionStatus.OK]
    assert {r.lesion.segment_label for r in ok} == {"Nodule", "second", "edge"}
    page = _images(out / "qc" / "index.html")
    assert len(page.srcs) == len(ok) == 3
    assert len(set(page.srcs)) == 3
    for src in page.srcs:
        assert re.fullmatch(r"[A-Za-z0-9._-]+\.png", src), src
        png = out / "qc" / src
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
    text = (out / "qc" / "index.html").read_text(encoding="utf-8")
    assert "LUNG1-SAMPLE" in text and "2024-01-01" in text
    assert len(set(re.findall(r'<div class="label">([^<]*)</div>', text))) == 3


def test_edge_lesion_has_its_row_and_picture(qc_run: RunOutput) -> None:
    """The edge lesion's cube leaves the image (its patch has padding); it still gets its
    picture and row, written while its patch was alive (the report keeps no patch)."""
    out = qc_run.out
    rows = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "qc").glob("*.json"))]
    assert len(rows) == 3
    edge = next(r for r in rows if "edge" in r["label"])
    assert edge["status"] == "ok" and edge["picture"] and edge["window"] in ("lung", "soft tissue")
    assert edge["patient_id"] == "LUNG1-SAMPLE" and edge["demonstration"] is True
    assert (out / "qc" / edge["picture"]).is_file()
    res = next(r for r in qc_run.report.results if r.lesion.segment_label == "edge")
    assert res.patch is None
    volume = read_image(SAMPLE / "nrrd" / "lung1_image.nrrd")  # the same grid as the CT
    patch = extract_patch(volume, res.lesion.seed)
    assert patch.valid != ((0, 50), (0, 50), (0, 50))


def test_real_page_loads_every_picture_in_chromium(qc_run: RunOutput) -> None:
    dom = dump_dom(qc_run.out / "qc" / "index.html")
    sizes = re.findall(r'<img [^>]*data-natural="(\d+)x(\d+)"', dom)
    assert len(sizes) == 3
    assert all(int(w) > 0 and int(h) > 0 for w, h in sizes)


def test_resumed_run_rebuilds_the_whole_index(qc_run: RunOutput, study: Path, extractor: FeatureExtractor) -> None:
    out = qc_run.out
    (out / "qc" / "index.html").unlink()
    report = run(_config(study, out, resume=True), {}, extractor=extractor)
    assert report.cases_skipped == 1 and all(r.patch is None for r in report.results)
    page = _images(out / "qc" / "index.html")
    assert len(page.srcs) == 3 and all((out / "qc" / s).is_file() for s in page.srcs)
    assert "DEMONSTRATION RUN" in (out / "qc" / "index.html").read_text(encoding="utf-8")


def test_demonstration_is_marked_in_every_output(qc_run: RunOutput) -> None:
    out = qc_run.out
    assert qc_run.report.demonstration is True
    with open(out / "features.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {r["demonstration"] for r in rows} == {"true"}
    doc = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert doc["demonstration"] is True and doc["software"]["demonstration"] is True
    sr_files = list((out / "dicom").rglob(SR_FILE_NAME))
    seg_files = list((out / "dicom").rglob(SEG_FILE_NAME))
    assert len(sr_files) == 1 and len(seg_files) == 1
    sr = pydicom.dcmread(sr_files[0])
    assert sr.SeriesDescription == DEMO_SR_SERIES_DESCRIPTION
    texts = [str(getattr(it, "TextValue", "")) for it in _walk(sr)]
    assert DEMO_PARAMETER in texts
    seg = pydicom.dcmread(seg_files[0], stop_before_pixels=True)
    assert seg.SeriesDescription == DEMO_SEG_SERIES_DESCRIPTION
    assert "DEMONSTRATION RUN" in (out / "qc" / "index.html").read_text(encoding="utf-8")


def _walk(ds: pydicom.Dataset) -> Iterator[pydicom.Dataset]:
    for it in getattr(ds, "ContentSequence", []):
        yield it
        yield from _walk(it)


def test_weights_marker_is_read_and_loading_stays_strict(tmp_path: Path, weights_file: Path) -> None:
    assert read_weights(weights_file).demonstration is True  # written by write_random_weights
    t = {"conv1.weight": torch.zeros(2)}
    for marker, expected in ((True, True), (False, False), ("yes", False), (None, False)):
        p = tmp_path / f"w{marker}.torch"
        obj: dict[str, object] = {"trunk_state_dict": t}
        if marker is not None:
            obj[DEMONSTRATION_KEY] = marker
        torch.save(obj, p)
        sd, demo = load_weights_file(p)
        assert demo is expected and set(sd) == {"conv1.weight"}
    # the marker lives beside the trunk; the trunk itself is still checked strictly
    with pytest.raises(WeightsError, match="does not match the FMCIB encoder"):
        read_weights(tmp_path / "wTrue.torch")


def test_lesions_above_the_sr_limit_go_into_several_srs_listed_in_run_json(
    study: Path, tmp_path: Path, extractor: FeatureExtractor
) -> None:
    """A real run with --sr-max-lesions 2 on the three-lesion case: two SRs (2 + 1 lesions)
    instead of none, exit 0, both in run.json's outputs."""
    out = tmp_path / "out"
    config = RunConfig(input=study, output=out, export_sr=True, export_seg=False, export_qc=False, sr_max_lesions=2)
    report = run(config, {}, extractor=extractor)
    assert report.exit_code == 0 and report.n_ok == 3
    files = sorted((out / "dicom").rglob("*.dcm"))
    assert [p.name for p in files] == ["fmcib_features_SR_part1of2.dcm", "fmcib_features_SR_part2of2.dcm"]
    doc = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert sorted(Path(p) for p in doc["outputs"] if p.endswith(".dcm")) == files
    assert doc["inputs"]["sr_max_lesions"] == 2
    parts = [pydicom.dcmread(p) for p in files]
    groups = [len(p.ContentSequence[-1].ContentSequence) for p in parts]
    assert groups == [2, 1] and [int(p.InstanceNumber) for p in parts] == [1, 2]
    texts = {str(getattr(it, "TextValue", "")) for it in _walk(parts[1])}
    assert "precision=fp32" in texts  # the run's --precision, as the hook passes it
