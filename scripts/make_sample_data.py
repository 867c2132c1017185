#!/usr/bin/env python
"""Regenerate mhub-fmcib's ``sample_data/`` from pyradiomics' lung1 test case.

The source is the pinned source distribution ``pyradiomics_bhklab-3.1.4.tar.gz``
(sha256 :data:`ARCHIVE_SHA256`), either given with ``--archive`` or fetched with
``pip download``. From its ``data/lung1_image.nrrd`` (a 512x512x48 chest CT, int16 HU,
0.5703125 x 0.5703125 x 5 mm) and ``data/lung1_label.nrrd`` (label 1: an 837-voxel
lung nodule) this script writes::

    sample_data/
      nrrd/lung1_image.nrrd, nrrd/lung1_label.nrrd   copied byte for byte
      dicom/ct/CT_0001.dcm ... CT_0048.dcm            CT Image Storage, JPEG-LS lossless
      dicom/seg/SEG_lung1_nodule.dcm                  DICOM SEG (BINARY), segment "Nodule"
      seeds.csv                                       nodule centre of mass, LPS mm
      README.md, MANIFEST.sha256

Every UID is derived from fixed strings, and every date and time is fixed, so a rerun
with the same versions of pydicom, highdicom and pyjpegls writes identical bytes.

Usage::

    .venv/bin/python scripts/make_sample_data.py [--archive PATH] [--out sample_data]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    generate_uid,
)
from pydicom.valuerep import DA, DT, TM, DSfloat

ARCHIVE_NAME = "pyradiomics_bhklab-3.1.4.tar.gz"
ARCHIVE_SHA256 = "a44a087efc4ede91b5dfa5cf0de58ea3596bfaec1ef2484f278504b0a8fd5ffb"
PIP_REQUIREMENT = "pyradiomics-bhklab==3.1.4"
IMAGE_MEMBER = "data/lung1_image.nrrd"
LABEL_MEMBER = "data/lung1_label.nrrd"
NODULE_LABEL = 1

UID_ENTROPY_ROOT = "mhub-fmcib sample_data lung1 v1"
"""Fixed seed of every UID; change it (v2, ...) only when the content changes."""

STUDY_DATE = "20240101"
STUDY_TIME = "120000"
SEG_DATE = "20240102"
SEG_TIME = "120000"
PATIENT_NAME = "FMCIB^Sample"
PATIENT_ID = "LUNG1-SAMPLE"
MANUFACTURER = "mhub-fmcib"
SOFTWARE_VERSION = "make_sample_data.py 1"

CT_DIR = Path("dicom/ct")
SEG_DIR = Path("dicom/seg")
SEG_FILE = SEG_DIR / "SEG_lung1_nodule.dcm"
NRRD_DIR = Path("nrrd")
SEEDS_FILE = Path("seeds.csv")
MANIFEST_FILE = Path("MANIFEST.sha256")
README_FILE = Path("README.md")


class SampleDataError(Exception):
    """The source archive is missing, corrupt or not what this script expects."""


@dataclass(frozen=True)
class SourceImages:
    """The two NRRD files of lung1, as bytes and as SimpleITK images.

    ``image`` is int16 HU on a (512, 512, 48) ITK grid in LPS mm; ``label`` is on the
    same grid with the nodule as label :data:`NODULE_LABEL`.
    """

    image_bytes: bytes
    label_bytes: bytes
    image: sitk.Image
    label: sitk.Image


def sha256_of(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sample_uid(*parts: str) -> UID:
    """A UID derived only from :data:`UID_ENTROPY_ROOT` and ``parts`` (deterministic)."""
    return generate_uid(entropy_srcs=[UID_ENTROPY_ROOT, *parts])


def obtain_archive(archive: Path | None, workdir: Path) -> Path:
    """Return the path of the pinned archive, downloading it with pip when not given.

    Raises :class:`SampleDataError` if the file is missing, pip fails, or the sha256 does
    not equal :data:`ARCHIVE_SHA256`.
    """
    if archive is None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            "pyradiomics-bhklab",
            "--dest",
            str(workdir),
            PIP_REQUIREMENT,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        archive = workdir / ARCHIVE_NAME
        if result.returncode != 0 or not archive.is_file():
            raise SampleDataError(
                f"`{' '.join(cmd)}` did not produce {ARCHIVE_NAME} (exit {result.returncode}):\n"
                f"{result.stderr.strip()}\nDownload it elsewhere and pass --archive PATH."
            )
    if not archive.is_file():
        raise SampleDataError(f"--archive {archive} does not exist or is not a file.")
    digest = sha256_of(archive.read_bytes())
    if digest != ARCHIVE_SHA256:
        raise SampleDataError(
            f"{archive} has sha256 {digest}, expected {ARCHIVE_SHA256} "
            f"({ARCHIVE_NAME}). Use the exact sdist of {PIP_REQUIREMENT}."
        )
    return archive


def read_member(tar: tarfile.TarFile, member_suffix: str) -> bytes:
    """Bytes of the single archive member whose path ends in ``/member_suffix``."""
    names = [m for m in tar.getmembers() if m.isfile() and m.name.endswith("/" + member_suffix)]
    if len(names) != 1:
        raise SampleDataError(
            f"expected exactly one */{member_suffix} in the archive, found "
            f"{[m.name for m in names]}; is it really {ARCHIVE_NAME}?"
        )
    handle = tar.extractfile(names[0])
    if handle is None:
        raise SampleDataError(f"cannot read {names[0].name} from the archive")
    return handle.read()


def sitk_from_nrrd_bytes(data: bytes, workdir: Path, name: str) -> sitk.Image:
    """Read NRRD bytes with SimpleITK (via a temporary file)."""
    path = workdir / name
    path.write_bytes(data)
    return sitk.ReadImage(str(path))


def load_sources(archive: Path, workdir: Path) -> SourceImages:
    """Extract and read lung1's image and label, checking they share one grid."""
    with tarfile.open(archive, "r:gz") as tar:
        image_bytes = read_member(tar, IMAGE_MEMBER)
        label_bytes = read_member(tar, LABEL_MEMBER)
    image = sitk_from_nrrd_bytes(image_bytes, workdir, "image.nrrd")
    label = sitk_from_nrrd_bytes(label_bytes, workdir, "label.nrrd")
    if image.GetPixelID() != sitk.sitkInt16:
        raise SampleDataError(f"{IMAGE_MEMBER} is {image.GetPixelIDTypeAsString()}, not int16")
    for attr in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        if not np.allclose(getattr(image, attr)(), getattr(label, attr)(), atol=1e-6):
            raise SampleDataError(f"{LABEL_MEMBER} differs from {IMAGE_MEMBER} in {attr[3:]}")
    if not np.any(sitk.GetArrayViewFromImage(label) == NODULE_LABEL):
        raise SampleDataError(f"{LABEL_MEMBER} has no voxel of label {NODULE_LABEL}")
    return SourceImages(image_bytes, label_bytes, image, label)


def index_to_lps(image: sitk.Image) -> npt.NDArray[np.float64]:
    """4x4 affine from ITK index (i, j, k) to LPS mm."""
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing(), dtype=np.float64)
    affine[:3, 3] = image.GetOrigin()
    return affine


def ds_list(values: Sequence[float]) -> list[DSfloat]:
    """Decimal String values of at most 16 characters (DICOM's limit)."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def build_ct_series(image: sitk.Image) -> list[Dataset]:
    """One JPEG-LS-lossless CT Image Storage dataset per slice k of ``image``.

    Stored value = HU - RescaleIntercept (unsigned 16-bit container); geometry: row
    cosine = direction column 0, column cosine = direction column 1, IPP of slice k =
    origin + k * spacing_z * direction column 2.
    """
    hu = sitk.GetArrayFromImage(image)  # (K, J, I) = (slices, rows, columns)
    intercept = min(-1024, int(hu.min()))
    stored_full = hu.astype(np.int32) - intercept
    if int(stored_full.max()) > 0xFFFF:
        raise SampleDataError(f"HU range {hu.min()}..{hu.max()} does not fit 16 bits")
    stored = stored_full.astype(np.uint16)
    bits_stored = max(12, int(stored.max()).bit_length())

    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.array(image.GetSpacing(), dtype=np.float64)
    origin = np.array(image.GetOrigin(), dtype=np.float64)
    n_slices = hu.shape[0]

    study_uid = sample_uid("study")
    series_uid = sample_uid("ct-series")
    frame_uid = sample_uid("frame-of-reference")

    datasets: list[Dataset] = []
    for k in range(n_slices):
        sop_uid = sample_uid("ct-instance", str(k))
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta.ImplementationVersionName = "PYDICOM " + pydicom.__version__

        # SOP Common
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.InstanceCreationDate = STUDY_DATE
        ds.InstanceCreationTime = STUDY_TIME
        # Patient
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "Synthetic identifiers; pixels from pyradiomics test data"
        # General Study
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = STUDY_DATE
        ds.StudyTime = STUDY_TIME
        ds.ReferringPhysicianName = ""
        ds.StudyID = "FMCIB1"
        ds.AccessionNumber = ""
        ds.StudyDescription = "mhub-fmcib sample: pyradiomics lung1 chest CT"
        # General Series
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.SeriesDate = STUDY_DATE
        ds.SeriesTime = STUDY_TIME
        ds.SeriesDescription = "lung1 CT (from pyradiomics lung1_image.nrrd)"
        ds.BodyPartExamined = "CHEST"
        ds.PatientPosition = "HFS"
        # Frame of Reference
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        # General Equipment
        ds.Manufacturer = MANUFACTURER
        ds.ManufacturerModelName = "make_sample_data.py"
        ds.SoftwareVersions = SOFTWARE_VERSION
        # General Image
        ds.InstanceNumber = k + 1
        ds.ContentDate = STUDY_DATE
        ds.ContentTime = STUDY_TIME
        ds.AcquisitionNumber = 1
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.DerivationDescription = "Converted from NRRD; pixel values unchanged (lossless)"
        ds.BurnedInAnnotation = "NO"
        ds.LossyImageCompression = "00"
        # Image Plane
        ds.PixelSpacing = ds_list([spacing[1], spacing[0]])  # row spacing (j), column spacing (i)
        ds.ImageOrientationPatient = ds_list([*direction[:, 0], *direction[:, 1]])
        ds.ImagePositionPatient = ds_list(origin + k * spacing[2] * direction[:, 2])
        ds.SliceThickness = DSfloat(float(spacing[2]), auto_format=True)
        ds.SpacingBetweenSlices = DSfloat(float(spacing[2]), auto_format=True)
        ds.SliceLocation = DSfloat(
            float(np.dot(origin + k * spacing[2] * direction[:, 2], direction[:, 2])),
            auto_format=True,
        )
        # Image Pixel + CT Image
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = int(hu.shape[1])
        ds.Columns = int(hu.shape[2])
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = DSfloat(intercept)
        ds.RescaleSlope = DSfloat(1)
        ds.RescaleType = "HU"
        ds.KVP = ""
        ds.WindowCenter = DSfloat(-600)
        ds.WindowWidth = DSfloat(1500)
        ds.WindowCenterWidthExplanation = "LUNG"

        # Lossless: keep the SOP Instance UID (pydicom would otherwise make a random one).
        ds.compress(
            JPEGLSLossless,
            np.ascontiguousarray(stored[k]),
            encoding_plugin="pyjpegls",
            generate_instance_uid=False,
        )
        datasets.append(ds)
    return datasets


def build_seg(ct: Sequence[Dataset], label: sitk.Image) -> hd.seg.Segmentation:
    """A BINARY DICOM SEG of label :data:`NODULE_LABEL`, one frame per CT slice it covers."""
    mask = sitk.GetArrayFromImage(label) == NODULE_LABEL  # (K, rows, columns)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Nodule",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        tracking_uid=sample_uid("segment", "nodule"),
        tracking_id="lung1 nodule",
        anatomic_regions=[codes.SCT.Lung],
    )
    seg = hd.seg.Segmentation(
        source_images=list(ct),
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=sample_uid("seg-series"),
        series_number=100,
        sop_instance_uid=sample_uid("seg-instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="make_sample_data.py",
        software_versions=SOFTWARE_VERSION,
        device_serial_number="0",
        content_description="Nodule of pyradiomics lung1 (lung1_label.nrrd label 1)",
        content_creator_name="FMCIB^Sample",
        content_label="NODULE",
        series_description="lung1 nodule SEG",
        content_date=SEG_DATE,
        content_time=SEG_TIME,
        series_date=SEG_DATE,
        series_time=SEG_TIME,
    )
    # highdicom stamps "now" and a random Dimension Organization UID; pin them so that
    # reruns write identical bytes.
    seg.InstanceCreationDate = DA(SEG_DATE)
    seg.InstanceCreationTime = TM(SEG_TIME)
    for item in seg.ContributingEquipmentSequence:
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DT(SEG_DATE + SEG_TIME)
    dimension_uid = sample_uid("seg-dimension-organization")
    for item in (*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence):
        item.DimensionOrganizationUID = dimension_uid
    return seg


def centre_of_mass_lps(label: sitk.Image) -> npt.NDArray[np.float64]:
    """Centre of mass (mean voxel index mapped to LPS mm) of label :data:`NODULE_LABEL`, (3,)."""
    kji = np.argwhere(sitk.GetArrayFromImage(label) == NODULE_LABEL).astype(np.float64)
    ijk = kji.mean(axis=0)[::-1]
    return (index_to_lps(label) @ np.append(ijk, 1.0))[:3]


def dataset_bytes(ds: Dataset) -> bytes:
    """The DICOM Part 10 file of ``ds``."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def seeds_csv(seed: npt.NDArray[np.float64]) -> bytes:
    """The seeds CSV: one row for the NRRD image, one for the DICOM CT series folder."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_path", "coordX", "coordY", "coordZ", "lesion_name"])
    for path in (NRRD_DIR / "lung1_image.nrrd", CT_DIR):
        writer.writerow([path.as_posix(), *(f"{v:.6f}" for v in seed), "lung1_nodule"])
    return buffer.getvalue().encode()


README_TEMPLATE = """\
# sample_data: a real chest CT with one lung nodule

Generated by `scripts/make_sample_data.py`; do not edit by hand.

## Files

- `nrrd/lung1_image.nrrd`: chest CT, 512 x 512 x 48 voxels, {sx} x {sy} x {sz} mm,
  int16 HU, LPS; an unchanged copy of pyradiomics' `data/lung1_image.nrrd`.
- `nrrd/lung1_label.nrrd`: label map on the same grid, label 1 = one lung nodule of
  {n_vox} voxels; an unchanged copy of `data/lung1_label.nrrd`.
- `dicom/ct/CT_0001.dcm` ... `CT_{n_ct:04d}.dcm`: the same CT as one DICOM CT Image Storage
  series, one file per slice, JPEG-LS lossless (`1.2.840.10008.1.2.4.80`). Stored value =
  HU + {neg_int} (RescaleIntercept {intercept}, RescaleSlope 1). ImagePositionPatient,
  ImageOrientationPatient, PixelSpacing and SliceThickness come from the NRRD's origin,
  direction and spacing. This folder holds exactly one series.
- `dicom/seg/SEG_lung1_nodule.dcm`: DICOM Segmentation (BINARY, made with highdicom) of
  label 1. Segment 1 "Nodule": category SCT 49755003 "Morphologically abnormal
  structure", type SCT 27925004 "Nodule", anatomic region SCT 39607008 "Lung", algorithm
  MANUAL. It references the CT series and shares its Frame of Reference.
- `seeds.csv`: `image_path,coordX,coordY,coordZ,lesion_name`, the nodule's centre of mass
  in LPS mm, once for the NRRD image and once for the DICOM series folder `dicom/ct`;
  paths are relative to this folder.
- `MANIFEST.sha256`: sha256 of every other file (`sha256sum -c MANIFEST.sha256` here).

Nodule centre of mass (LPS mm): ({seed_x}, {seed_y}, {seed_z}).

The DICOM patient and study are synthetic: PatientName `{patient_name}`, PatientID
`{patient_id}`, StudyDate {study_date}. All UIDs derive from a fixed string, so reruns give
the same UIDs; the DICOM bytes are identical across reruns with the same versions of
pydicom, highdicom and pyjpegls (here: pydicom {pydicom_version}, highdicom {highdicom_version}).

## Provenance and licence

The two NRRD files come from the source distribution of `{requirement}` on PyPI,
`{archive_name}` with sha256
`{archive_sha}`,
members `{image_member}` and `{label_member}`.
That archive's `data/README.md` describes them only as "the test cases and baseline used
to ensure consistent results from features implemented in PyRadiomics"; it does not name
the dataset the lung1 CT was taken from. PyRadiomics, including its test data, is
distributed under the BSD-3-Clause licence ("Copyright 2017 Harvard Medical School",
`LICENSE.txt` in the archive), which allows redistribution with that notice. The DICOM
files are derived from those NRRD files by this project.

## Regenerate

```
.venv/bin/python scripts/make_sample_data.py                      # pip-downloads the archive
.venv/bin/python scripts/make_sample_data.py --archive PATH/{archive_name}
```

The script verifies the archive's sha256 and fails on a mismatch.
`tests/test_sample_data.py` checks these files against the NRRD with two independent
DICOM readers (pydicom, SimpleITK/GDCM), highdicom's SEG reader, scipy and `dciodvfy`.

## sha256

```
{manifest}```
"""


def readme_text(
    sources: SourceImages,
    seed: npt.NDArray[np.float64],
    intercept: int,
    n_ct: int,
    manifest: str,
) -> str:
    """The README of ``sample_data/``."""
    sx, sy, sz = sources.image.GetSpacing()
    n_vox = int(np.count_nonzero(sitk.GetArrayViewFromImage(sources.label) == NODULE_LABEL))
    return README_TEMPLATE.format(
        sx=f"{sx:.10g}",
        sy=f"{sy:.10g}",
        sz=f"{sz:.10g}",
        n_vox=n_vox,
        n_ct=n_ct,
        neg_int=-intercept,
        intercept=intercept,
        seed_x=f"{seed[0]:.3f}",
        seed_y=f"{seed[1]:.3f}",
        seed_z=f"{seed[2]:.3f}",
        patient_name=PATIENT_NAME,
        patient_id=PATIENT_ID,
        study_date=STUDY_DATE,
        pydicom_version=pydicom.__version__,
        highdicom_version=hd.__version__,
        requirement=PIP_REQUIREMENT,
        archive_name=ARCHIVE_NAME,
        archive_sha=ARCHIVE_SHA256,
        image_member=IMAGE_MEMBER,
        label_member=LABEL_MEMBER,
        manifest=manifest,
    )


def make_sample_data(archive: Path | None, out: Path) -> dict[Path, str]:
    """Write ``out`` (replacing its generated content); return {relative path: sha256}."""
    with tempfile.TemporaryDirectory(prefix="mhub-fmcib-sample-") as tmp:
        workdir = Path(tmp)
        sources = load_sources(obtain_archive(archive, workdir), workdir)

    ct = build_ct_series(sources.image)
    seg = build_seg(ct, sources.label)
    seed = centre_of_mass_lps(sources.label)

    files: dict[Path, bytes] = {
        NRRD_DIR / "lung1_image.nrrd": sources.image_bytes,
        NRRD_DIR / "lung1_label.nrrd": sources.label_bytes,
    }
    for ds in ct:
        files[CT_DIR / f"CT_{int(ds.InstanceNumber):04d}.dcm"] = dataset_bytes(ds)
    files[SEG_FILE] = dataset_bytes(seg)
    files[SEEDS_FILE] = seeds_csv(seed)

    for sub in (NRRD_DIR, CT_DIR, SEG_DIR):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)

    digests = {rel: sha256_of(data) for rel, data in sorted(files.items())}
    readme = readme_text(
        sources,
        seed,
        int(ct[0].RescaleIntercept),
        len(ct),
        "".join(f"{d}  {rel.as_posix()}\n" for rel, d in digests.items()),
    ).encode()
    (out / README_FILE).write_bytes(readme)
    digests[README_FILE] = sha256_of(readme)
    manifest = "".join(f"{d}  {rel.as_posix()}\n" for rel, d in sorted(digests.items()))
    (out / MANIFEST_FILE).write_text(manifest)
    return digests


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--archive",
        type=Path,
        default=None,
        help=f"path to {ARCHIVE_NAME} (default: pip download {PIP_REQUIREMENT})",
    )
    parser.add_argument("--out", type=Path, default=Path("sample_data"), help="output folder")
    args = parser.parse_args(argv)
    try:
        digests = make_sample_data(args.archive, args.out)
    except SampleDataError as exc:
        print(f"make_sample_data: {exc}", file=sys.stderr)
        return 1
    total = sum((args.out / rel).stat().st_size for rel in digests)
    print(f"wrote {len(digests)} files + {MANIFEST_FILE} to {args.out} ({total / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
