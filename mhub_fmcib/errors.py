"""Exceptions of mhub-fmcib.

Every message says what was seen and how to fix it. A :class:`CaseError` concerns one
lesion or one series and never stops a batch; the pipeline records it and moves on.
"""

from __future__ import annotations


class FmcibError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(FmcibError):
    """A setting or command-line option is invalid or missing."""


class NothingToMeasureError(FmcibError):
    """The input holds nothing to measure (no CT with a segmentation, no seed, no selected
    segment): exit code 3, with what to pass instead."""


class CaseError(FmcibError):
    """A problem confined to one case (one series, one segment, one seed)."""


class DicomImportError(CaseError):
    """A DICOM file or series cannot be read or would give wrong geometry."""


class CalibrationError(DicomImportError):
    """A CT's rescale to HU is unusable: RescaleSlope 0 (every voxel the same value), or a
    slope or intercept that is not a finite number."""


class GeometryError(DicomImportError):
    """A series' slices do not form a regular 3D grid (gaps, duplicates, tilt, mixed orientation)."""


class SegmentationError(CaseError):
    """A SEG, RTSTRUCT or mask file cannot be placed on its CT, or a segment is empty."""


class NothingSelectedError(SegmentationError):
    """``--segments`` selects none of a SEG's segments or an RTSTRUCT's ROIs."""


class SeedError(CaseError):
    """A seed point is outside the image, or looks like it was given in RAS instead of LPS."""


class WeightsError(FmcibError):
    """The encoder weights file is missing, unreadable or does not match the FMCIB encoder."""


class ExportError(CaseError):
    """A DICOM output (SR, SEG) cannot be built or written for one series."""
