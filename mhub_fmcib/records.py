"""Typed, immutable records passed between the stages of the pipeline.

Conventions, used everywhere in this package:

* **LPS**: physical coordinates are DICOM patient coordinates in millimetres,
  x increasing to the patient's Left, y to Posterior, z to Superior.
* **Voxel index order (i, j, k)**: ``Volume.array[i, j, k]``; ``i`` runs along the DICOM
  row direction (the column index), ``j`` along the column direction (the row index) and
  ``k`` along the slice normal. This is ITK's (x, y, z) index order.
* An ``affine`` is a 4×4 float64 matrix taking a homogeneous voxel index to LPS mm.

Every record validates itself at construction: one that exists is valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Literal

import numpy as np
import numpy.typing as npt

#: Patch edge length in voxels (1 mm each) that the FMCIB encoder sees.
PATCH_SIZE = 50
#: Number of features the FMCIB encoder produces per patch.
N_FEATURES = 4096

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _readonly(a: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    a = np.asarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def _check_affine(affine: npt.NDArray[np.float64], what: str) -> npt.NDArray[np.float64]:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"{what}: affine must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: affine has non-finite entries: {a.tolist()}")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise ValueError(f"{what}: affine's last row must be (0, 0, 0, 1), got {a[3].tolist()}")
    if abs(np.linalg.det(a[:3, :3])) < 1e-9:
        raise ValueError(f"{what}: affine is singular (zero spacing or degenerate directions)")
    return a


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image and its geometry.

    Attributes:
        array: voxel values, shape (I, J, K) in (i, j, k) index order (see module docstring).
            CT volumes hold Hounsfield units (any real dtype; float32 or int16 in practice).
        affine: (4, 4) float64, (i, j, k, 1) -> (x, y, z, 1) in LPS mm.
    """

    array: npt.NDArray[np.generic]
    affine: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        if np.asarray(self.array).ndim != 3:
            raise ValueError(f"Volume array must be 3D, got shape {np.shape(self.array)}")
        if min(np.shape(self.array)) < 1:
            raise ValueError(f"Volume array is empty: shape {np.shape(self.array)}")
        object.__setattr__(self, "array", _readonly(self.array))
        object.__setattr__(self, "affine", _readonly(_check_affine(self.affine, "Volume")))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(I, J, K) in voxels."""
        s = self.array.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k in mm."""
        n = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(n[0]), float(n[1]), float(n[2]))

    @property
    def direction(self) -> npt.NDArray[np.float64]:
        """(3, 3) unit column vectors of the i, j, k axes in LPS."""
        d: npt.NDArray[np.float64] = self.affine[:3, :3] / np.asarray(self.spacing)
        return d

    @property
    def origin(self) -> tuple[float, float, float]:
        """LPS mm of the centre of voxel (0, 0, 0)."""
        o = self.affine[:3, 3]
        return (float(o[0]), float(o[1]), float(o[2]))

    def index_to_lps(self, ijk: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map continuous voxel indices, shape (..., 3), to LPS mm, shape (..., 3)."""
        p = np.asarray(ijk, dtype=np.float64)
        out: npt.NDArray[np.float64] = p @ self.affine[:3, :3].T + self.affine[:3, 3]
        return out

    def lps_to_index(self, lps: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map LPS mm, shape (..., 3), to continuous voxel indices, shape (..., 3)."""
        p = np.asarray(lps, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        out: npt.NDArray[np.float64] = p @ inv[:3, :3].T + inv[:3, 3]
        return out

    def contains_lps(self, lps: SeedPoint | npt.ArrayLike) -> bool:
        """Whether an LPS point lies within the volume's voxels (edges included)."""
        p = lps.as_array() if isinstance(lps, SeedPoint) else np.asarray(lps, dtype=np.float64)
        ijk = self.lps_to_index(p)
        return bool(np.all(ijk >= -0.5) and np.all(ijk <= np.asarray(self.shape) - 0.5))


@dataclass(frozen=True)
class SeedPoint:
    """A point in LPS mm (x to the Left, y to Posterior, z to Superior)."""

    x: float
    y: float
    z: float

    def __post_init__(self) -> None:
        for name in ("x", "y", "z"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"SeedPoint.{name} must be a finite number of mm, got {v!r}")
            object.__setattr__(self, name, float(v))

    def as_array(self) -> npt.NDArray[np.float64]:
        """(3,) float64 array (x, y, z) in LPS mm."""
        return np.array([self.x, self.y, self.z], dtype=np.float64)


class SeedSource(str, Enum):
    """Where a lesion's seed point came from."""

    SEGMENT_CENTROID = "segment_centroid"
    """Centre of mass of a DICOM SEG segment, on the CT grid."""
    ROI_CENTROID = "roi_centroid"
    """Centre of mass of an RTSTRUCT ROI rasterised on the CT grid."""
    ROI_POINT = "roi_point"
    """The single POINT contour of an RTSTRUCT ROI."""
    MASK_CENTROID = "mask_centroid"
    """Centre of mass of a label in a mask file (NIfTI, NRRD, MHA)."""
    USER = "user"
    """Given by the user in a seeds CSV."""


#: A coded concept as (CodeValue, CodingSchemeDesignator, CodeMeaning).
CodeTuple = tuple[str, str, str]


@dataclass(frozen=True)
class Lesion:
    """One lesion to measure: a seed point and where it came from.

    ``lesion_id`` is unique within a run and stable across re-runs on the same input.
    DICOM identifiers are ``None`` for file inputs; file names are ``None`` for DICOM inputs.
    """

    lesion_id: str
    seed: SeedPoint
    seed_source: SeedSource
    seed_inside_mask: bool | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    seg_sop_instance_uid: str | None = None
    segment_number: int | None = None
    segment_label: str | None = None
    finding_type: CodeTuple | None = None
    finding_site: CodeTuple | None = None
    image_path: str | None = None
    mask_path: str | None = None
    passthrough: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.lesion_id:
            raise ValueError("Lesion.lesion_id must not be empty")
        if self.segment_number is not None and self.segment_number < 1:
            raise ValueError(f"segment numbers start at 1, got {self.segment_number}")


@dataclass(frozen=True, eq=False)
class Patch:
    """The 50 mm cube the encoder sees for one seed.

    Attributes:
        array: float32, shape (50, 50, 50) in (z, y, x) order (the reference's transposed
            LPS array), values in normalised units ``(HU + 1024) / 3072``; zero padding
            where the cube leaves the volume.
        affine: (4, 4) float64 taking the homogeneous index (a, b, c, 1) of ``array[a, b, c]``
            to LPS mm. Padding voxels are included (they lie outside the image).
        valid: per array axis (z, y, x), the half-open [start, stop) range of voxels
            that came from inside the resampled image (the rest is padding).
    """

    array: npt.NDArray[np.float32]
    affine: npt.NDArray[np.float64]
    valid: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

    def __post_init__(self) -> None:
        a = np.asarray(self.array)
        if a.ndim != 3 or a.dtype != np.float32:
            raise ValueError(f"Patch array must be 3D float32, got {a.dtype} {a.shape}")
        object.__setattr__(self, "array", _readonly(a))
        object.__setattr__(self, "affine", _readonly(_check_affine(self.affine, "Patch")))
        for axis, (lo, hi) in enumerate(self.valid):
            if not 0 <= lo < hi <= a.shape[axis]:
                raise ValueError(f"Patch.valid[{axis}] = {(lo, hi)} is not inside {a.shape}")

    def corners_lps(self) -> npt.NDArray[np.float64]:
        """(8, 3) LPS mm of the cube's outer corners (voxel edges, not centres)."""
        n = self.array.shape
        grid = np.array([[a, b, c] for a in (-0.5, n[0] - 0.5) for b in (-0.5, n[1] - 0.5) for c in (-0.5, n[2] - 0.5)])
        out: npt.NDArray[np.float64] = grid @ self.affine[:3, :3].T + self.affine[:3, 3]
        return out


class LesionStatus(str, Enum):
    """Outcome of one lesion."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True, eq=False)
class LesionResult:
    """Features (or the reason there are none) for one lesion.

    Attributes:
        features: float32, shape (4096,) when ``status`` is OK, else ``None``.
        predictions: name -> value of each configured linear head.
    """

    lesion: Lesion
    status: LesionStatus
    features: npt.NDArray[np.float32] | None = None
    patch: Patch | None = None
    error: str | None = None
    predictions: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.status is LesionStatus.OK:
            if self.features is None or np.shape(self.features) != (N_FEATURES,):
                raise ValueError(f"an OK LesionResult needs {N_FEATURES} features")
            object.__setattr__(self, "features", _readonly(np.asarray(self.features, np.float32)))
        elif not self.error:
            raise ValueError("a failed LesionResult needs an error message")


@dataclass(frozen=True)
class CaseFailure:
    """A problem that stopped a whole case (a series that cannot be read, a SEG with no CT)
    or a single file, before any lesion could be formed."""

    case_id: str
    reason: str
    paths: tuple[str, ...] = ()
    kind: Literal["case", "file"] = "case"
    error_type: str = "CaseError"
