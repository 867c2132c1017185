"""Build DICOM test inputs from the committed sample study: copies, damaged variants and
SEGs (made with highdicom) for arbitrary masks on the sample CT grid."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "sample_data"
SAMPLE_CT = SAMPLE / "dicom" / "ct"
SAMPLE_SEG = SAMPLE / "dicom" / "seg" / "SEG_lung1_nodule.dcm"


def ct_files() -> list[Path]:
    return sorted(SAMPLE_CT.glob("*.dcm"))


def copy_ct(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(p, dest / p.name)) for p in ct_files()]


def read_ct_datasets(paths: Sequence[Path] | None = None) -> list[pydicom.Dataset]:
    dss = [pydicom.dcmread(p) for p in (paths or ct_files())]
    return sorted(dss, key=lambda d: float(d.ImagePositionPatient[2]))


def make_seg(
    ct: Sequence[pydicom.Dataset],
    masks: Mapping[str, np.ndarray],
    dest: Path,
    *,
    frame_of_reference_uid: str | None = None,
    series_uid: str | None = None,
) -> Path:
    """A BINARY SEG with one segment per ``masks`` entry (label -> bool (I, J, K) on the
    sample CT grid, (columns, rows, slices) with slices sorted by z)."""
    descs = []
    arrays = []
    for n, (label, m) in enumerate(masks.items(), start=1):
        descs.append(
            hd.seg.SegmentDescription(
                segment_number=n,
                segment_label=label,
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Nodule,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
                tracking_uid=generate_uid(),
                tracking_id=label,
                anatomic_regions=[codes.SCT.Lung],
            )
        )
        arrays.append(np.asarray(m, dtype=np.uint8).transpose(2, 1, 0))  # -> (slices, rows, cols)
    pixel = np.stack(arrays, axis=-1)
    seg = hd.seg.Segmentation(
        source_images=list(ct),
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs,
        series_instance_uid=series_uid or generate_uid(),
        series_number=200,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="tests",
        manufacturer_model_name="tests",
        software_versions="0",
        device_serial_number="0",
        omit_empty_frames=True,
    )
    if frame_of_reference_uid:
        seg.FrameOfReferenceUID = frame_of_reference_uid
    dest.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(dest)
    return dest


def sphere(shape: tuple[int, int, int], centre_ijk: Sequence[float], radius_vox: Sequence[float]) -> np.ndarray:
    """bool (I, J, K): an ellipsoid with per-axis radii in voxels."""
    g = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    r = sum(((g[a] - centre_ijk[a]) / radius_vox[a]) ** 2 for a in range(3))
    return np.asarray(r <= 1.0)


def make_label_seg(ct: Sequence[pydicom.Dataset], label: np.ndarray, dest: Path) -> Path:
    """A BINARY SEG with one segment per non-zero value of ``label`` (segment numbers
    1..max, (I, J, K) on the grid of ``ct`` sorted by z; disjoint segments), built from a
    label map so that hundreds of segments need no stack of whole-grid masks."""
    n = int(label.max())
    descs = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"lesion {number}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Nodule,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            tracking_uid=generate_uid(entropy_srcs=[str(dest), str(number)]),
            tracking_id=f"lesion {number}",
        )
        for number in range(1, n + 1)
    ]
    seg = hd.seg.Segmentation(
        source_images=list(ct),
        pixel_array=np.ascontiguousarray(label.transpose(2, 1, 0)).astype(np.uint16),  # (slices, rows, cols)
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs,
        series_instance_uid=generate_uid(),
        series_number=200,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="tests",
        manufacturer_model_name="tests",
        software_versions="0",
        device_serial_number="0",
        omit_empty_frames=True,
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(dest)
    return dest


def lattice_label(shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """uint16 (I, J, K): ``n`` small disjoint ellipsoids (radii 5, 5, 1 voxels) at random
    points of a regular lattice, numbered 1..n."""
    label = np.zeros(shape, dtype=np.uint16)
    lattice = [
        (i, j, k)
        for k in range(4, shape[2] - 3, 8)
        for j in range(60, shape[1] - 50, 20)
        for i in range(60, shape[0] - 50, 20)
    ]
    picks = sorted(np.random.default_rng(seed).choice(len(lattice), size=n, replace=False).tolist())
    for number, p in enumerate(picks, start=1):
        c = lattice[p]
        lo = [max(c[a] - (5, 5, 1)[a], 0) for a in range(3)]
        hi = [min(c[a] + (5, 5, 1)[a] + 1, shape[a]) for a in range(3)]
        g = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij")
        inside = sum(((g[a] - c[a]) / (5, 5, 1)[a]) ** 2 for a in range(3)) <= 1.0
        label[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]][inside] = number
    return label
