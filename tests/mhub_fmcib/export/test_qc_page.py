"""The QC page in a real browser (Debian's headless ``chromium``): every lesion with a patch
shows its loaded picture, the page fits 1400 px, failed lesions show their reason; and the
pictures themselves (window choice, seed, outline, scale bar)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from fmcib_testlib.browser import PAGE_WIDTH, dump_dom, screenshot
from PIL import Image

from mhub_fmcib.errors import DicomImportError
from mhub_fmcib.export.labels import lesion_labels
from mhub_fmcib.export.qc import (
    LUNG,
    SCALE,
    SOFT_TISSUE,
    QcCase,
    case_from_ct,
    choose_window,
    qc_file_name,
    render_lesion_picture,
    seed_voxel,
    write_case_qc,
    write_qc_index,
)
from mhub_fmcib.records import CaseFailure, LesionMask, LesionResult, SeedPoint


@pytest.fixture(scope="module")
def qc_case(tmp_path_factory, ct_factory, result_factory, failed_factory):  # type: ignore[no-untyped-def]
    """Three measured lesions (one at the volume's corner, one with a segmentation) and a
    failed one, written per case as the pipeline does, then the index."""
    out = tmp_path_factory.mktemp("qc")
    cts, vol = ct_factory(shape=(60, 50, 20))
    rng = np.random.default_rng(0)
    nasty = '../<script>alert("x")</script>/les'
    results = [
        result_factory(vol, cts[0], "centre", SeedPoint(20.0, 15.0, 10.0), rng),
        result_factory(vol, cts[0], nasty, SeedPoint(0.0, 0.0, 0.0), rng),
        result_factory(vol, cts[0], "corner", SeedPoint(77.0, 67.0, 35.0), rng),
        failed_factory(cts[0], "failed & <b>", SeedPoint(1e3, 0, 0), "seed <outside> & away"),
    ]
    mask = np.zeros(vol.shape, bool)
    mask[28:33, 20:26, 8:12] = True
    case = case_from_ct(vol, cts, masks={"centre": LesionMask.of("centre", mask)}, demonstration=True)
    written = write_case_qc(out, results, case)
    failure = CaseFailure.of("case 2", DicomImportError("no CT series <here>"))
    index = write_qc_index(out, results, [failure])
    return out, results, case, written, index


def test_page_shows_one_loaded_picture_per_lesion(qc_case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _out, results, _case, _written, index = qc_case
    dom = dump_dom(index)
    sizes = re.findall(r'<img [^>]*data-natural="(\d+)x(\d+)"', dom)
    with_patch = [r for r in results if r.patch is not None]
    assert len(sizes) == len(with_patch) == 3
    assert all(int(w) > 0 and int(h) > 0 for w, h in sizes)
    (scroll,) = re.findall(r'data-scroll-width="(\d+)"', dom)
    assert int(scroll) <= PAGE_WIDTH
    shot = screenshot(index, tmp_path / "page.png")
    assert Image.open(shot).size[0] == PAGE_WIDTH


def test_page_rows(qc_case) -> None:  # type: ignore[no-untyped-def]
    out, results, case, written, index = qc_case
    page = index.read_text(encoding="utf-8")
    assert "DEMONSTRATION RUN" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count('<tr class="ok">') == 3
    assert page.count('<tr class="failed">') == 2  # the failed lesion and the failed case
    assert "seed &lt;outside&gt; &amp; away" in page
    assert "no CT series &lt;here&gt;" in page
    assert page.count(f"{case.patient_id} · {case.study_date}") == 4
    for label in lesion_labels(results).values():
        assert label.text in page
    for r in results:
        if r.patch is not None:
            assert f'src="{qc_file_name(r)}"' in page
            assert (out / "qc" / qc_file_name(r)) in written
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.(png|json)", p.name) for p in written)
    # rows come from the per-case files, so the index needs no patch any more
    from dataclasses import replace

    again = write_qc_index(out, [replace(r, patch=None) for r in results])
    assert again.read_text(encoding="utf-8").count("<img ") == 3
    row = json.loads((out / "qc" / (qc_file_name(results[0])[:-4] + ".json")).read_text())
    assert row["patient_id"] == "SYN-1" and row["study_date"] == "2024-01-02"


def test_picture_content(qc_case) -> None:  # type: ignore[no-untyped-def]
    out, results, case, _written, _index = qc_case
    r = results[0]
    label = lesion_labels(results)["centre"]
    img, window = render_lesion_picture(r, label, case.volume, case.masks["centre"])
    on_disk = Image.open(out / "qc" / qc_file_name(r)).convert("RGB")
    assert on_disk.size == img.size
    assert img.size[0] <= PAGE_WIDTH - 380  # the picture column of the page
    a = np.asarray(img)
    # the lesion's outline colour appears (the segmentation), and the seed's red cross
    assert np.any(np.all(a == label.rgb, axis=-1))
    z, y, x = seed_voxel(r.patch, r.lesion.seed.as_array())  # type: ignore[arg-type]
    top, left = 22, 8  # title bar, gap
    arm = a[top + y * SCALE + SCALE // 2, left + x * SCALE + SCALE // 2 + 2 * SCALE]
    assert tuple(arm) == (255, 0, 0)
    # grey levels follow the chosen window
    assert window in (LUNG, SOFT_TISSUE)
    lo = window.centre - window.width / 2
    g = a[top + 32, left + 2]  # axial plane, voxel (z, 8, 0): clear of letters and marks
    assert g[0] == g[1] == g[2]
    hu = float(r.patch.array[z, 32 // SCALE, 0]) * 3072 - 1024  # type: ignore[union-attr]
    assert int(g[0]) == int(np.round(np.clip((hu - lo) / window.width, 0, 1) * 255))
    # four views: three patch planes and the context slice
    assert img.size[0] > 3 * 50 * SCALE


def test_window_is_chosen_from_the_patch(result_factory, ct_factory) -> None:  # type: ignore[no-untyped-def]
    cts, vol = ct_factory()
    rng = np.random.default_rng(1)
    r = result_factory(vol, cts[0], "a", SeedPoint(0.0, 0.0, 0.0), rng)
    arr = np.asarray(r.patch.array).copy()
    from mhub_fmcib.records import Patch

    air = Patch(np.full_like(arr, (-900 + 1024) / 3072), r.patch.affine, r.patch.valid)
    soft = Patch(np.full_like(arr, (40 + 1024) / 3072), r.patch.affine, r.patch.valid)
    assert choose_window(air) == LUNG
    assert choose_window(soft) == SOFT_TISSUE


def test_case_without_ct_context(tmp_path: Path, result_factory, ct_factory) -> None:  # type: ignore[no-untyped-def]
    """A result written with no CT at hand still gets its patch planes."""
    cts, vol = ct_factory()
    r: LesionResult = result_factory(vol, cts[0], "a", SeedPoint(0.0, 0.0, 0.0), np.random.default_rng(2))
    paths = write_case_qc(tmp_path, [r], None)
    assert (tmp_path / "qc" / qc_file_name(r)) in paths
    assert QcCase(vol).masks is None
