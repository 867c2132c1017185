"""RTSTRUCT contours on the CT grid.

Oracles: the sample nodule mask itself (outlined with scikit-image's marching squares,
written as an RTSTRUCT, rasterised back), scikit-image's ``polygon2mask`` (an independent
even-odd rasteriser) on the same and on random polygons, and squares/annuli whose voxel sets
are known analytically. The RTSTRUCTs written here pass ``dciodvfy``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fmcib_testlib.dicom_builders import SAMPLE, SAMPLE_SEG, read_ct_datasets
from fmcib_testlib.rtstruct_builders import RoiSpec, make_rtstruct, mask_to_contours, save_with_preamble, square
from pydicom.data import get_testdata_file
from skimage.draw import polygon2mask

from mhub_fmcib.dicom.ct import CtSeries, assemble_ct
from mhub_fmcib.dicom.index import InstanceKind, index_folder
from mhub_fmcib.dicom.rtstruct import (
    fill_polygons,
    list_rois,
    read_rtstruct,
    roi_mask_on_ct,
    roi_point,
    select_rois,
)
from mhub_fmcib.dicom.seg import read_seg, segment_mask_on_ct
from mhub_fmcib.errors import SegmentationError
from mhub_fmcib.image_io import read_image
from mhub_fmcib.records import SeedPoint, Volume
from mhub_fmcib.seeds.geometry import centre_of_mass_lps

DCIODVFY = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")


@pytest.fixture(scope="module")
def ct() -> CtSeries:
    return assemble_ct(index_folder(SAMPLE / "dicom" / "ct").of_kind(InstanceKind.CT))


@pytest.fixture(scope="module")
def ct_datasets() -> list[pydicom.Dataset]:
    return read_ct_datasets()


@pytest.fixture(scope="module")
def label() -> np.ndarray:
    return np.asarray(read_image(SAMPLE / "nrrd" / "lung1_label.nrrd").array) == 1


def _dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    lines = (out.stdout + out.stderr).splitlines()
    assert any("RTStructureSet" in line for line in lines), lines  # it recognised the IOD
    return [line for line in lines if line.startswith("Error")]


def _polygon2mask_slices(contours: list[np.ndarray], volume: Volume) -> np.ndarray:
    """Independent rasterisation: skimage's polygon2mask per contour, XOR per slice."""
    out = np.zeros(volume.shape, dtype=bool)
    for c in contours:
        ijk = volume.lps_to_index(c)
        k = int(np.rint(ijk[0, 2]))
        out[:, :, k] ^= polygon2mask(volume.shape[:2], ijk[:, :2])
    return out


def test_nodule_outline_reproduces_mask(tmp_path: Path, ct: CtSeries, ct_datasets, label: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    contours = mask_to_contours(label, ct.volume)
    assert len(contours) == 3  # the nodule spans three 5 mm slices
    path = make_rtstruct(
        ct_datasets, [RoiSpec("Nodule", [("CLOSED_PLANAR", c) for c in contours])], tmp_path / "rt.dcm"
    )
    assert _dciodvfy_errors(path) == []
    rt = read_rtstruct(path)
    mask = roi_mask_on_ct(rt, 1, ct)
    dice = 2 * (mask & label).sum() / (mask.sum() + label.sum())
    assert dice > 0.9
    # marching squares at 0.5 passes strictly between voxel centres: the outline gives the
    # mask back exactly (Dice 1.0), and so does the independent rasteriser
    np.testing.assert_array_equal(mask, label)
    np.testing.assert_array_equal(mask, _polygon2mask_slices(contours, ct.volume))
    seed = centre_of_mass_lps(mask, ct.volume)
    seg = read_seg(SAMPLE_SEG)
    seg_seed = centre_of_mass_lps(segment_mask_on_ct(seg, 1, ct), ct.volume)
    assert np.linalg.norm(seed.as_array() - seg_seed.as_array()) < 0.5


def test_dilated_mask_with_hole_matches_polygon2mask(tmp_path: Path, ct: CtSeries, ct_datasets) -> None:  # type: ignore[no-untyped-def]
    """A ring-shaped lesion (outer outline + hole outline per slice) over 4 slices."""
    ii, jj = np.meshgrid(np.arange(512), np.arange(512), indexing="ij")
    r = np.hypot(ii - 300.3, (jj - 200.7) * 1.3)
    ring2d = (r < 40) & (r >= 17)
    m = np.zeros(ct.volume.shape, dtype=bool)
    m[:, :, 10:14] = ring2d[:, :, None]
    contours = mask_to_contours(m, ct.volume)
    assert len(contours) == 8
    path = make_rtstruct(ct_datasets, [RoiSpec("Ring", [("CLOSED_PLANAR", c) for c in contours])], tmp_path / "rt.dcm")
    mask = roi_mask_on_ct(read_rtstruct(path), 1, ct)
    np.testing.assert_array_equal(mask, m)
    np.testing.assert_array_equal(mask, _polygon2mask_slices(contours, ct.volume))


def test_random_polygons_match_polygon2mask() -> None:
    """Random (also self-intersecting) polygons with non-integer vertices, several per slice,
    against skimage's even-odd rasteriser (XOR of one polygon2mask per polygon)."""
    rng = np.random.default_rng(7)
    shape = (97, 83)
    n_compared = 0
    for trial in range(40):
        polys = []
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(3, 40))
            centre = rng.uniform([-10, -10], [107, 93])
            if trial % 2:  # star-shaped (simple) polygon
                ang = np.sort(rng.uniform(0, 2 * np.pi, n))
                rad = rng.uniform(3, 45, n)
                polys.append(centre + np.column_stack([rad * np.cos(ang), rad * np.sin(ang)]))
            else:  # arbitrary, self-intersecting
                polys.append(centre + rng.uniform(-50, 50, (n, 2)))
        expected = np.zeros(shape, dtype=bool)
        for p in polys:
            expected ^= polygon2mask(shape, p)
        # centres within 1e-3 voxel of an edge are decided by our snapping (EDGE_SNAP), not compared
        ambiguous = _distance_to_edges(polys, shape) < 1e-3
        got = fill_polygons(polys, shape)
        np.testing.assert_array_equal(got[~ambiguous], expected[~ambiguous], err_msg=f"trial {trial}")
        n_compared += int((~ambiguous).sum())
    assert n_compared > 0.999 * 40 * shape[0] * shape[1]


def _distance_to_edges(polys: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(I, J) distance of each voxel centre to the nearest polygon edge, in voxels."""
    pts = np.stack(np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij"), -1).reshape(-1, 1, 2)
    a = np.concatenate(polys)
    b = np.concatenate([np.roll(p, -1, axis=0) for p in polys])
    ab = b - a
    t = np.clip(((pts - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-300), 0, 1)
    d = np.linalg.norm(pts - (a + t[..., None] * ab), axis=-1).min(axis=1)
    return d.reshape(shape)


def test_squares_and_annulus_exact(tmp_path: Path, ct: CtSeries, ct_datasets) -> None:  # type: ignore[no-untyped-def]
    vol = ct.volume
    rois = [
        # corners on voxel centres: the half-open rule keeps i in [100, 120), j in [200, 215)
        RoiSpec("Square", [("CLOSED_PLANAR", square(vol, k, 100, 120, 200, 215)) for k in (5, 6, 7)]),
        # corners between centres, hole drawn in the opposite direction (winding is irrelevant)
        RoiSpec(
            "Annulus",
            [("CLOSED_PLANAR", square(vol, k, 299.5, 340.5, 99.5, 130.5)) for k in (20, 21)]
            + [("CLOSED_PLANAR", square(vol, k, 309.5, 320.5, 109.5, 115.5, clockwise=True)) for k in (20, 21)],
        ),
        # two squares sharing the edge i = 60: they tile, each boundary voxel counted once
        RoiSpec("Left", [("CLOSED_PLANAR", square(vol, 30, 40, 60, 40, 50))]),
        RoiSpec("Right", [("CLOSED_PLANAR", square(vol, 30, 60, 80, 40, 50))]),
        RoiSpec("Both", [("CLOSED_PLANAR", square(vol, 30, 40, 80, 40, 50))]),
        # a right triangle with its hypotenuse through voxel centres (a high edge: excluded)
        RoiSpec("Triangle", [("CLOSED_PLANAR", vol.index_to_lps([[100, 200, 4], [110, 200, 4], [100, 210, 4]]))]),
    ]
    path = make_rtstruct(ct_datasets, rois, tmp_path / "rt.dcm")
    assert _dciodvfy_errors(path) == []
    rt = read_rtstruct(path)
    masks = {info.name: roi_mask_on_ct(rt, info.number, ct) for info in list_rois(rt)}

    exp = np.zeros(vol.shape, dtype=bool)
    exp[100:120, 200:215, 5:8] = True
    np.testing.assert_array_equal(masks["Square"], exp)
    assert masks["Square"].sum() == 20 * 15 * 3

    exp = np.zeros(vol.shape, dtype=bool)
    exp[300:341, 100:131, 20:22] = True
    exp[310:321, 110:116, 20:22] = False
    np.testing.assert_array_equal(masks["Annulus"], exp)
    assert masks["Annulus"].sum() == (41 * 31 - 11 * 6) * 2

    assert not (masks["Left"] & masks["Right"]).any()
    np.testing.assert_array_equal(masks["Left"] | masks["Right"], masks["Both"])
    assert masks["Both"].sum() == 40 * 10

    ii, jj = np.meshgrid(np.arange(vol.shape[0]), np.arange(vol.shape[1]), indexing="ij")
    exp = np.zeros(vol.shape, dtype=bool)
    exp[:, :, 4] = (ii >= 100) & (jj >= 200) & ((ii - 100) + (jj - 200) < 10)
    np.testing.assert_array_equal(masks["Triangle"], exp)
    assert masks["Triangle"].sum() == 55


def test_rasterising_follows_the_ct_axes(ct: CtSeries, ct_datasets, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The same contours on a CT whose i and j axes run the other way land on the same
    physical voxels (placement goes through the affine, not through assumed axis signs)."""
    vol = ct.volume
    path = make_rtstruct(
        ct_datasets,
        [RoiSpec("Square", [("CLOSED_PLANAR", square(vol, 9, 10.5, 40.5, 20.5, 25.5))])],
        tmp_path / "rt.dcm",
    )
    rt = read_rtstruct(path)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [vol.shape[0] - 1, vol.shape[1] - 1]
    flipped = CtSeries(
        volume=Volume(array=np.asarray(vol.array)[::-1, ::-1, :], affine=vol.affine @ flip), datasets=ct.datasets
    )
    np.testing.assert_allclose(flipped.volume.index_to_lps([vol.shape[0] - 1, vol.shape[1] - 1, 0]), vol.origin)
    np.testing.assert_array_equal(roi_mask_on_ct(rt, 1, flipped), roi_mask_on_ct(rt, 1, ct)[::-1, ::-1, :])
    assert roi_mask_on_ct(rt, 1, ct)[11:41, 21:26, 9].all()


def test_other_frame_of_reference_refused(tmp_path: Path, ct: CtSeries, ct_datasets) -> None:  # type: ignore[no-untyped-def]
    sq = square(ct.volume, 5, 10, 20, 10, 20)
    p = make_rtstruct(
        ct_datasets, [RoiSpec("A", [("CLOSED_PLANAR", sq)])], tmp_path / "a.dcm", frame_of_reference_uid="1.2.3.4"
    )
    with pytest.raises(SegmentationError, match=r"ROI 1 \(A\) is in Frame of Reference 1\.2\.3\.4"):
        roi_mask_on_ct(read_rtstruct(p), 1, ct)
    # one ROI of a structure set in another Frame of Reference: only that one is refused
    p = make_rtstruct(
        ct_datasets,
        [
            RoiSpec("Good", [("CLOSED_PLANAR", sq)]),
            RoiSpec("Bad", [("CLOSED_PLANAR", sq)], frame_of_reference_uid="1.2.3.5"),
        ],
        tmp_path / "b.dcm",
    )
    rt = read_rtstruct(p)
    assert roi_mask_on_ct(rt, 1, ct).sum() == 100
    with pytest.raises(SegmentationError, match=r"ROI 2 \(Bad\).*Frame of Reference 1\.2\.3\.5"):
        roi_mask_on_ct(rt, 2, ct)


def test_contour_off_the_ct_slices_refused(tmp_path: Path, ct: CtSeries, ct_datasets) -> None:  # type: ignore[no-untyped-def]
    vol = ct.volume
    tilted = square(vol, 10, 100, 140, 100, 140)
    tilted[2:, 2] += 3.0  # two corners raised 3 mm: an oblique plane
    between = square(vol, 10, 100, 140, 100, 140)
    between[:, 2] += 2.5  # half a slice up
    outside = square(vol, 47, 100, 140, 100, 140)
    outside[:, 2] += 5.0  # one slice above the last
    p = make_rtstruct(
        ct_datasets,
        [
            RoiSpec("Tilted", [("CLOSED_PLANAR", square(vol, 9, 1, 5, 1, 5)), ("CLOSED_PLANAR", tilted)]),
            RoiSpec("Between", [("CLOSED_PLANAR", between)]),
            RoiSpec("Outside", [("CLOSED_PLANAR", outside)]),
        ],
        tmp_path / "rt.dcm",
    )
    rt = read_rtstruct(p)
    z = float(np.mean(tilted[:, 2]))
    with pytest.raises(
        SegmentationError, match=rf"ROI 1 \(Tilted\) contour 2 \(z = {z:.2f} mm\) is not in one CT slice plane"
    ):
        roi_mask_on_ct(rt, 1, ct)
    with pytest.raises(SegmentationError, match=r"ROI 2 \(Between\) contour 1 .* lies between CT slices 10 and 11"):
        roi_mask_on_ct(rt, 2, ct)
    with pytest.raises(SegmentationError, match=r"ROI 3 \(Outside\) contour 1 .* slice 48, outside CT series"):
        roi_mask_on_ct(rt, 3, ct)


def test_point_rois_and_empty_rois(tmp_path: Path, ct: CtSeries, ct_datasets) -> None:  # type: ignore[no-untyped-def]
    pt = np.array([[-20.5, 31.25, float(ct.volume.index_to_lps([0, 0, 12])[2])]])
    p = make_rtstruct(
        ct_datasets,
        [
            RoiSpec("Marker", [("POINT", pt)], interpreted_type="MARKER"),
            RoiSpec("Two markers", [("POINT", pt), ("POINT", pt + 1)], interpreted_type="MARKER"),
            RoiSpec("No contours", [], interpreted_type="ORGAN"),
            RoiSpec("Nodule", [("CLOSED_PLANAR", square(ct.volume, 3, 5, 8, 5, 8))]),
        ],
        tmp_path / "rt.dcm",
    )
    assert _dciodvfy_errors(p) == []
    rt = read_rtstruct(p)
    assert roi_point(rt, 1) == SeedPoint(-20.5, 31.25, float(pt[0, 2]))
    assert not roi_mask_on_ct(rt, 1, ct).any()  # POINTs are not rasterised
    with pytest.raises(SegmentationError, match=r"ROI 2 \(Two markers\) has 2 POINT coordinates"):
        roi_point(rt, 2)
    assert roi_point(rt, 3) is None and not roi_mask_on_ct(rt, 3, ct).any()
    assert roi_point(rt, 4) is None and roi_mask_on_ct(rt, 4, ct).sum() == 9
    with pytest.raises(SegmentationError, match=r"has no ROI number 9 \(ROIs: 1:Marker, 2:Two markers"):
        roi_mask_on_ct(rt, 9, ct)


def test_list_and_select_rois(tmp_path: Path, ct: CtSeries, ct_datasets) -> None:  # type: ignore[no-untyped-def]
    sq = [("CLOSED_PLANAR", square(ct.volume, 3, 5, 8, 5, 8))]
    p = make_rtstruct(
        ct_datasets,
        [RoiSpec("GTV-1", sq, number=4), RoiSpec("Lung_L", sq, interpreted_type="ORGAN", number=7)],
        tmp_path / "rt.dcm",
    )
    rt = read_rtstruct(p)
    assert [(r.number, r.name, r.interpreted_type) for r in list_rois(rt)] == [
        (4, "GTV-1", "GTV"),
        (7, "Lung_L", "ORGAN"),
    ]
    assert rt.frame_of_reference_uid == ct.frame_of_reference_uid
    assert rt.referenced_series_uids == (ct.series_instance_uid,)
    assert [r.number for r in select_rois(rt, [])] == [4, 7]
    assert [r.number for r in select_rois(rt, ["7"])] == [7]
    assert [r.number for r in select_rois(rt, ["GTV-1"])] == [4]
    assert select_rois(rt, ["nope"]) == []
    # the index sees it as an RTSTRUCT referencing the CT series
    shutil.copy2(p, tmp_path / "idx.dcm")
    rec = next(r for r in index_folder(tmp_path).of_kind(InstanceKind.RTSTRUCT) if r.path.name == "idx.dcm")
    assert rec.referenced_series_uids == (ct.series_instance_uid,)


def test_pydicom_rtstruct_test_file(tmp_path: Path) -> None:
    """A structure set written by other software (pydicom's test data): an EXTERNAL contour
    stack and two ISOCENTER points."""
    src = get_testdata_file("rtstruct.dcm")
    assert isinstance(src, str)
    p = save_with_preamble(Path(src), tmp_path / "rtstruct.dcm")
    rt = read_rtstruct(p)
    assert [(r.number, r.name, r.interpreted_type) for r in list_rois(rt)] == [
        (1, "patient", "EXTERNAL"),
        (2, "Isocenter 1", "ISOCENTER"),
        (3, "Isocenter 2", "ISOCENTER"),
    ]
    assert all(c.geometric_type == "CLOSED_PLANAR" for c in rt.roi(1).contours)
    assert rt.roi(1).contours[0].points.shape == (5, 3)
    np.testing.assert_array_equal(rt.roi(1).contours[0].points[0], [-200.0, 150.0, -200.0])
    assert roi_point(rt, 2) == SeedPoint(0.0, 0.0, 0.0)
    assert rt.frame_of_reference_uid == "1.2.826.0.1.3680043.8.498.2010020400001.2"


def test_malformed_contour_is_confined_to_its_roi(tmp_path: Path, ct: CtSeries, ct_datasets) -> None:  # type: ignore[no-untyped-def]
    sq = [("CLOSED_PLANAR", square(ct.volume, 3, 5, 8, 5, 8))]
    p = make_rtstruct(ct_datasets, [RoiSpec("Good", sq), RoiSpec("Broken", sq)], tmp_path / "rt.dcm")
    ds = pydicom.dcmread(p)
    ds.ROIContourSequence[1].ContourSequence[0].NumberOfContourPoints = 5
    ds.save_as(p)
    rt = read_rtstruct(p)
    assert roi_mask_on_ct(rt, 1, ct).sum() == 9
    with pytest.raises(
        SegmentationError, match=r"ROI 2 \(Broken\) contour 1: NumberOfContourPoints is 5 but ContourData holds 4"
    ):
        roi_mask_on_ct(rt, 2, ct)
    ds.ROIContourSequence[1].ContourSequence[0].NumberOfContourPoints = 4
    ds.ROIContourSequence[1].ContourSequence[0].ContourData = (
        ds.ROIContourSequence[1].ContourSequence[0].ContourData[:-1]
    )
    ds.save_as(p)
    with pytest.raises(SegmentationError, match=r"ContourData has 11 values, not a positive multiple of 3"):
        roi_mask_on_ct(read_rtstruct(p), 2, ct)


def test_not_an_rtstruct_refused(tmp_path: Path) -> None:
    with pytest.raises(
        SegmentationError, match=r"is not an RT Structure Set \(SOPClassUID 1\.2\.840\.10008\.5\.1\.4\.1\.1\.66\.4"
    ):
        read_rtstruct(SAMPLE_SEG)
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(SegmentationError, match="cannot be read"):
        read_rtstruct(tmp_path / "junk.dcm")


def test_large_contour_is_fast(ct: CtSeries) -> None:
    """A body outline of 2000 vertices over the whole 512 x 512 slice, 48 slices: well under
    a second per slice stack (the fill is vectorised)."""
    import time

    t = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    poly = np.column_stack([255.5 + 240.3 * np.cos(t), 255.5 + 200.7 * np.sin(t)])
    t0 = time.perf_counter()
    masks = [fill_polygons([poly], (512, 512)) for _ in range(48)]
    elapsed = time.perf_counter() - t0
    np.testing.assert_array_equal(masks[0], polygon2mask((512, 512), poly))
    assert elapsed < 10.0
