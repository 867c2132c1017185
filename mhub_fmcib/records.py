"""Typed, immutable records passed between the stages of the pipeline.

Conventions, used everywhere in this package:

* **LPS**: physical coordinates are DICOM patient coordinates in millimetres,
  x increasing to the patient's Left, y to Posterior, z to Superior.
* **Voxel index order (i, j, k)**: ``Volume.array[i, j, k]``; ``i`` runs along the DICOM
  row direction (the column index), ``j`` along the column direction (the row index) and
  ``k`` along the slice normal. This is ITK's (x, y, z) index order.
* An ``affine`` is a 4×4 float64 matrix taking a homogeneous voxel index to LPS mm.

Every record validates itself at construction: one that exists is valid. The records that
are stored (lesions, results, failures) have ``to_dict``/``from_dict``: the one serialiser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePath
from typing import Any, Literal

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

    def to_dict(self) -> list[float]:
        """``[x, y, z]`` in LPS mm (JSON keeps the float64 values exactly)."""
        return [self.x, self.y, self.z]

    @classmethod
    def from_dict(cls, v: object) -> SeedPoint:
        """The inverse of :meth:`to_dict`."""
        if not isinstance(v, (list, tuple)) or len(v) != 3:
            raise ValueError(f"a seed is [x, y, z] in LPS mm, got {v!r}")
        return cls(float(v[0]), float(v[1]), float(v[2]))


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


def _code(v: object) -> CodeTuple | None:
    """A coded concept from its JSON form (a 3-list) or ``None``."""
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise ValueError(f"a coded concept is [value, scheme, meaning], got {v!r}")
    return (str(v[0]), str(v[1]), str(v[2]))


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)


@dataclass(frozen=True)
class SeriesRef:
    """The DICOM CT series a lesion lies on."""

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SeriesRef:
        return cls(
            study_instance_uid=str(d["study_instance_uid"]),
            series_instance_uid=str(d["series_instance_uid"]),
            frame_of_reference_uid=_opt_str(d.get("frame_of_reference_uid")),
        )


@dataclass(frozen=True)
class DicomOrigin:
    """A lesion that is one segment of a DICOM SEG or one ROI of an RTSTRUCT on a CT series.

    Attributes:
        series: the CT series.
        source_kind: ``"SEG"`` or ``"RTSTRUCT"``.
        source_sop_instance_uid: SOPInstanceUID of the SEG or RTSTRUCT.
        segment_number: SegmentNumber (SEG) or ROINumber (RTSTRUCT), from 1.
        segment_label: SegmentLabel or ROIName.
        finding_type, finding_site: the segment's coded property type and anatomic region.
        seg_match: how the SEG/RTSTRUCT was matched to the CT series: ``"referenced_series"``
            (it names the series) or ``"frame_of_reference"`` (its referenced series is absent;
            placed on the one CT series of its study with its Frame of Reference).
    """

    series: SeriesRef
    source_kind: Literal["SEG", "RTSTRUCT"]
    source_sop_instance_uid: str
    segment_number: int
    segment_label: str
    finding_type: CodeTuple | None = None
    finding_site: CodeTuple | None = None
    seg_match: Literal["referenced_series", "frame_of_reference"] | None = None

    def __post_init__(self) -> None:
        if self.source_kind not in ("SEG", "RTSTRUCT"):
            raise ValueError(f"DicomOrigin.source_kind must be SEG or RTSTRUCT, got {self.source_kind!r}")
        if self.segment_number < 1:
            raise ValueError(f"segment numbers start at 1, got {self.segment_number}")

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": "dicom",
            "series": self.series.to_dict(),
            "source_kind": self.source_kind,
            "source_sop_instance_uid": self.source_sop_instance_uid,
            "segment_number": self.segment_number,
            "segment_label": self.segment_label,
            "finding_type": list(self.finding_type) if self.finding_type else None,
            "finding_site": list(self.finding_site) if self.finding_site else None,
            "seg_match": self.seg_match,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DicomOrigin:
        kind = str(d["source_kind"])
        if kind not in ("SEG", "RTSTRUCT"):
            raise ValueError(f"DicomOrigin.source_kind must be SEG or RTSTRUCT, got {kind!r}")
        return cls(
            series=SeriesRef.from_dict(d["series"]),
            source_kind="SEG" if kind == "SEG" else "RTSTRUCT",
            source_sop_instance_uid=str(d["source_sop_instance_uid"]),
            segment_number=int(d["segment_number"]),
            segment_label=str(d["segment_label"]),
            finding_type=_code(d.get("finding_type")),
            finding_site=_code(d.get("finding_site")),
            seg_match=_seg_match(d.get("seg_match")),
        )


@dataclass(frozen=True)
class FileOrigin:
    """A lesion of a file input: a label of a mask file, or a row of a seeds CSV.

    Attributes:
        image_path: the image file (or the DICOM series folder a seeds CSV names).
        mask_path: the mask file, for mask inputs.
        mask_label: the label value in the mask (from 1), for mask inputs.
        series: the DICOM CT series when ``image_path`` is a DICOM series folder.
        row: the 1-based data row of a seeds CSV, for seeds inputs.
    """

    image_path: str
    mask_path: str | None = None
    mask_label: int | None = None
    series: SeriesRef | None = None
    row: int | None = None

    def __post_init__(self) -> None:
        if self.mask_label is not None and self.mask_label < 1:
            raise ValueError(f"mask labels start at 1, got {self.mask_label}")

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": "file",
            "image_path": self.image_path,
            "mask_path": self.mask_path,
            "mask_label": self.mask_label,
            "series": self.series.to_dict() if self.series else None,
            "row": self.row,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileOrigin:
        return cls(
            image_path=str(d["image_path"]),
            mask_path=_opt_str(d.get("mask_path")),
            mask_label=None if d.get("mask_label") is None else int(d["mask_label"]),
            series=SeriesRef.from_dict(d["series"]) if d.get("series") else None,
            row=None if d.get("row") is None else int(d["row"]),
        )


Origin = DicomOrigin | FileOrigin


def origin_from_dict(d: Mapping[str, Any] | None) -> Origin | None:
    """The inverse of ``DicomOrigin.to_dict`` / ``FileOrigin.to_dict``."""
    if d is None:
        return None
    if d.get("kind") == "dicom":
        return DicomOrigin.from_dict(d)
    if d.get("kind") == "file":
        return FileOrigin.from_dict(d)
    raise ValueError(f"unknown lesion origin {d!r}")


def make_lesion_id(origin: Origin) -> str:
    """The lesion id, unique within a run and stable across re-runs (the one place it is formed):

    * DICOM: ``<CT SeriesInstanceUID>/<SEG or RTSTRUCT SOPInstanceUID>/<segment or ROI number>``
    * mask file: ``<image file name>#label<label>``
    * seeds CSV: ``<image file or folder name>:row<row>``
    """
    if isinstance(origin, DicomOrigin):
        return f"{origin.series.series_instance_uid}/{origin.source_sop_instance_uid}/{origin.segment_number}"
    name = PurePath(origin.image_path).name
    if origin.mask_label is not None:
        return f"{name}#label{origin.mask_label}"
    if origin.row is not None:
        return f"{name}:row{origin.row}"
    raise ValueError(f"a file origin needs a mask label or a seeds row to name its lesion: {origin}")


#: The identifying columns of a lesion in ``features.csv`` (and ``run.json``), in order.
LESION_ID_COLUMNS = (
    "lesion_id",
    "study_instance_uid",
    "series_instance_uid",
    "seg_sop_instance_uid",
    "segment_number",
    "segment_label",
    "seg_match",
    "image_path",
    "mask_path",
)


def _seg_match(value: object) -> Literal["referenced_series", "frame_of_reference"] | None:
    if value is None:
        return None
    if value == "referenced_series":
        return "referenced_series"
    if value == "frame_of_reference":
        return "frame_of_reference"
    raise ValueError(f"seg_match must be referenced_series or frame_of_reference, got {value!r}")


@dataclass(frozen=True)
class Lesion:
    """One lesion to measure: a seed point and where it came from.

    ``lesion_id`` is unique within a run and stable across re-runs on the same input (formed
    by :func:`make_lesion_id`). ``origin`` says where the lesion comes from (``None`` only for
    lesions made up in code, e.g. tests); the flat properties below read it.
    """

    lesion_id: str
    seed: SeedPoint
    seed_source: SeedSource
    seed_inside_mask: bool | None = None
    origin: Origin | None = None
    passthrough: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.lesion_id:
            raise ValueError("Lesion.lesion_id must not be empty")

    @property
    def series(self) -> SeriesRef | None:
        """The DICOM CT series the lesion lies on, if any."""
        return self.origin.series if self.origin is not None else None

    @property
    def study_instance_uid(self) -> str | None:
        return self.series.study_instance_uid if self.series else None

    @property
    def series_instance_uid(self) -> str | None:
        return self.series.series_instance_uid if self.series else None

    @property
    def frame_of_reference_uid(self) -> str | None:
        return self.series.frame_of_reference_uid if self.series else None

    @property
    def seg_sop_instance_uid(self) -> str | None:
        """SOPInstanceUID of the SEG the lesion is a segment of (``None`` for RTSTRUCT ROIs)."""
        o = self.origin
        return o.source_sop_instance_uid if isinstance(o, DicomOrigin) and o.source_kind == "SEG" else None

    @property
    def segment_number(self) -> int | None:
        """SEG segment number, RTSTRUCT ROI number or mask label."""
        o = self.origin
        return o.segment_number if isinstance(o, DicomOrigin) else o.mask_label if o is not None else None

    @property
    def segment_label(self) -> str | None:
        o = self.origin
        if isinstance(o, DicomOrigin):
            return o.segment_label
        return f"label {o.mask_label}" if o is not None and o.mask_label is not None else None

    @property
    def seg_match(self) -> str | None:
        """How the SEG/RTSTRUCT was matched to the CT (:class:`DicomOrigin`), else ``None``."""
        return self.origin.seg_match if isinstance(self.origin, DicomOrigin) else None

    @property
    def finding_type(self) -> CodeTuple | None:
        return self.origin.finding_type if isinstance(self.origin, DicomOrigin) else None

    @property
    def finding_site(self) -> CodeTuple | None:
        return self.origin.finding_site if isinstance(self.origin, DicomOrigin) else None

    @property
    def image_path(self) -> str | None:
        return self.origin.image_path if isinstance(self.origin, FileOrigin) else None

    @property
    def mask_path(self) -> str | None:
        return self.origin.mask_path if isinstance(self.origin, FileOrigin) else None

    def id_columns(self) -> dict[str, str | int | None]:
        """The :data:`LESION_ID_COLUMNS` of this lesion, name -> value."""
        return {c: getattr(self, c) for c in LESION_ID_COLUMNS}

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (the case store's); :meth:`from_dict` reads it back equal."""
        return {
            "lesion_id": self.lesion_id,
            "seed": self.seed.to_dict(),
            "seed_source": self.seed_source.value,
            "seed_inside_mask": self.seed_inside_mask,
            "origin": self.origin.to_dict() if self.origin is not None else None,
            "passthrough": [list(kv) for kv in self.passthrough],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Lesion:
        inside = d.get("seed_inside_mask")
        return cls(
            lesion_id=str(d["lesion_id"]),
            seed=SeedPoint.from_dict(d["seed"]),
            seed_source=SeedSource(str(d["seed_source"])),
            seed_inside_mask=None if inside is None else bool(inside),
            origin=origin_from_dict(d.get("origin")),
            passthrough=tuple((str(kv[0]), str(kv[1])) for kv in d.get("passthrough") or ()),
        )


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

    def read_corners_lps(self) -> npt.NDArray[np.float64]:
        """(8, 3) LPS mm corners of the region the encoder read from the image: the outer voxel
        edges of the valid voxels (:attr:`valid`; the rest of the 50 mm cube is zero padding).
        Equal to :meth:`corners_lps` when the cube lies inside the image."""
        (za, zb), (ya, yb), (xa, xb) = self.valid
        grid = np.array(
            [[a, b, c] for a in (za - 0.5, zb - 0.5) for b in (ya - 0.5, yb - 0.5) for c in (xa - 0.5, xb - 0.5)]
        )
        out: npt.NDArray[np.float64] = grid @ self.affine[:3, :3].T + self.affine[:3, 3]
        return out


@dataclass(frozen=True, eq=False)
class LesionMask:
    """A lesion's segmentation (SEG segment, RTSTRUCT ROI or mask label) on its CT grid,
    cropped to the mask's bounding box to keep it small. Lives only while its case is
    processed (for the QC outlines); never stored.

    Attributes:
        lesion_id: the lesion it belongs to.
        grid_shape: (I, J, K) of the CT volume.
        offset: (i, j, k) of ``crop[0, 0, 0]`` on the CT grid.
        crop: bool, the mask inside its bounding box (all False when the mask is empty).
    """

    lesion_id: str
    grid_shape: tuple[int, int, int]
    offset: tuple[int, int, int]
    crop: npt.NDArray[np.bool_]

    def __post_init__(self) -> None:
        c = np.asarray(self.crop)
        if c.ndim != 3 or c.dtype != np.bool_:
            raise ValueError(f"LesionMask.crop must be a 3D bool array, got {c.dtype} {c.shape}")
        if any(o < 0 or o + n > g for o, n, g in zip(self.offset, c.shape, self.grid_shape, strict=True)):
            raise ValueError(f"LesionMask crop {c.shape} at {self.offset} is not inside the grid {self.grid_shape}")
        object.__setattr__(self, "crop", _readonly(c))

    @classmethod
    def of(cls, lesion_id: str, mask: npt.NDArray[np.bool_]) -> LesionMask:
        """Crop a full (I, J, K) bool mask to its bounding box."""
        m = np.asarray(mask, dtype=bool)
        shape = (int(m.shape[0]), int(m.shape[1]), int(m.shape[2]))
        nz = np.nonzero(m)
        if nz[0].size == 0:
            return cls(lesion_id, shape, (0, 0, 0), np.zeros((0, 0, 0), dtype=bool))
        lo = [int(a.min()) for a in nz]
        hi = [int(a.max()) + 1 for a in nz]
        crop = np.ascontiguousarray(m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
        return cls(lesion_id, shape, (lo[0], lo[1], lo[2]), crop)

    @classmethod
    def of_voxels(cls, lesion_id: str, grid_shape: tuple[int, int, int], voxels: npt.ArrayLike) -> LesionMask:
        """The mask of ``voxels``, (N, 3) integer (i, j, k) indices inside ``grid_shape``,
        without a whole-grid array; equal to :meth:`of` on the mask they set."""
        v = np.asarray(voxels, dtype=np.int64).reshape(-1, 3)
        shape = (int(grid_shape[0]), int(grid_shape[1]), int(grid_shape[2]))
        if len(v) == 0:
            return cls(lesion_id, shape, (0, 0, 0), np.zeros((0, 0, 0), dtype=bool))
        lo = v.min(axis=0)
        hi = v.max(axis=0) + 1
        crop = np.zeros(tuple(int(n) for n in hi - lo), dtype=bool)
        rel = v - lo
        crop[rel[:, 0], rel[:, 1], rel[:, 2]] = True
        return cls(lesion_id, shape, (int(lo[0]), int(lo[1]), int(lo[2])), crop)

    def contains(self, ijk: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """For (N, 3) integer CT indices: whether each voxel is in the mask (False outside)."""
        rel = np.asarray(ijk, dtype=np.int64).reshape(-1, 3) - np.asarray(self.offset, dtype=np.int64)
        inside = np.all((rel >= 0) & (rel < np.asarray(self.crop.shape, dtype=np.int64)), axis=1)
        out = np.zeros(len(rel), dtype=bool)
        sel = rel[inside]
        out[inside] = self.crop[sel[:, 0], sel[:, 1], sel[:, 2]]
        return out

    def slice_k(self, k: int) -> npt.NDArray[np.bool_]:
        """The mask on CT slice ``k``, shape (I, J)."""
        out = np.zeros(self.grid_shape[:2], dtype=bool)
        kk = k - self.offset[2]
        if 0 <= kk < self.crop.shape[2]:
            (i0, j0), (ni, nj) = self.offset[:2], self.crop.shape[:2]
            out[i0 : i0 + ni, j0 : j0 + nj] = self.crop[:, :, kk]
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

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form without ``features`` and ``patch`` (the case store keeps the
        features in a ``.npy`` file; patches are not kept); :meth:`from_dict` reads it back."""
        return {
            "lesion": self.lesion.to_dict(),
            "status": self.status.value,
            "error": self.error,
            "predictions": [list(p) for p in self.predictions],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], features: npt.NDArray[np.float32] | None = None) -> LesionResult:
        """The inverse of :meth:`to_dict`; ``features`` (4096,) are required for an OK result."""
        status = LesionStatus(str(d["status"]))
        return cls(
            lesion=Lesion.from_dict(d["lesion"]),
            status=status,
            features=features if status is LesionStatus.OK else None,
            error=None if d.get("error") is None else str(d["error"]),
            predictions=tuple((str(k), float(v)) for k, v in d.get("predictions") or ()),
        )


@dataclass(frozen=True)
class CaseFailure:
    """A problem that stopped a whole case (a series that cannot be read, a SEG with no CT)
    or a single file, before any lesion could be formed.

    Made with :meth:`of` from the exception that describes it: ``error_type`` is that
    exception's class name and ``reason`` its message.
    """

    case_id: str
    reason: str
    error_type: str
    paths: tuple[str, ...] = ()
    kind: Literal["case", "file"] = "case"

    @classmethod
    def of(
        cls, case_id: str, error: BaseException, paths: Sequence[str] = (), kind: Literal["case", "file"] = "case"
    ) -> CaseFailure:
        """The failure described by ``error`` (its class name and message)."""
        return cls(case_id=case_id, reason=str(error), error_type=type(error).__name__, paths=tuple(paths), kind=kind)

    def to_dict(self) -> dict[str, object]:
        """As stored in case records and in ``run.json``'s ``errors``."""
        return {
            "case_id": self.case_id,
            "kind": self.kind,
            "error_type": self.error_type,
            "reason": self.reason,
            "paths": list(self.paths),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CaseFailure:
        kind = str(d["kind"])
        if kind not in ("case", "file"):
            raise ValueError(f"CaseFailure.kind must be case or file, got {kind!r}")
        return cls(
            case_id=str(d["case_id"]),
            reason=str(d["reason"]),
            error_type=str(d["error_type"]),
            paths=tuple(str(p) for p in d["paths"]),
            kind="case" if kind == "case" else "file",
        )
