"""Whether a CT series is an ORIGINAL image in Hounsfield units, from its first file's header.

FMCIB was trained on CT in HU. These are measured, but ``run.json`` warns about them:

* a RescaleType other than HU (data set, or an enhanced CT's functional groups);
* an ImageType DERIVED enhanced CT (multi-frame: perfusion and material maps come so);
* an ImageType DERIVED image that names a map (:data:`NON_HU_TERMS`: PERFUSION, IODINE, …).

A single-frame DERIVED\\SECONDARY\\AXIAL CT (a re-encoded or re-sliced series, the sample
study among them) is still HU and is not warned about.
"""

from __future__ import annotations

from pathlib import Path

import pydicom

from .read import NOT_PARSED, read_dataset
from .uids import ENHANCED_CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE

#: ImageType values (3 and later) of derived images that are not attenuation in HU.
NON_HU_TERMS = frozenset(
    {"PERFUSION", "IODINE", "VMI", "MONOENERGETIC", "EFFECTIVE_Z", "ELECTRON_DENSITY", "MATERIAL", "WATER",
     "FAT", "SUBTRACTION", "CBF", "CBV", "MTT", "TTP", "TMAX", "FLOW", "BLOOD_FLOW", "BLOOD_VOLUME", "PERMEABILITY",
     "URIC_ACID", "CALCIUM", "VIRTUAL_NON_CONTRAST"}
)  # fmt: skip
_ENHANCED = frozenset({ENHANCED_CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE})


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip().upper() for v in value.split("\\")]
    try:
        return [str(v).strip().upper() for v in value]  # type: ignore[attr-defined]
    except TypeError:
        return [str(value).strip().upper()]


def _rescale_types(ds: pydicom.Dataset) -> list[str]:
    """RescaleType of the data set and of an enhanced CT's shared/first per-frame groups."""
    found = [str(ds.RescaleType)] if "RescaleType" in ds else []
    groups = [*ds.get("SharedFunctionalGroupsSequence", []), *ds.get("PerFrameFunctionalGroupsSequence", [])[:1]]
    for group in groups:
        for item in group.get("PixelValueTransformationSequence", []):
            if "RescaleType" in item:
                found.append(str(item.RescaleType))
    return [v.strip().upper() for v in found]


def calibration_warning(path: Path, series_uid: str) -> str | None:
    """The warning for a CT that may not be an original image in HU (rules in the module
    docstring); ``None`` otherwise, or when the header cannot be read (import reports that)."""
    try:
        ds = read_dataset(path, stop_before_pixels=True)
    except NOT_PARSED:
        return None
    image_type = _values(ds.get("ImageType"))
    rescale = _rescale_types(ds)
    problems = []
    derived = bool(image_type) and image_type[0] != "ORIGINAL"
    if derived and (str(ds.get("SOPClassUID", "")) in _ENHANCED or NON_HU_TERMS & set(image_type[2:])):
        problems.append("ImageType " + "\\".join(image_type) + " (not ORIGINAL)")
    bad_rescale = sorted({r for r in rescale if r not in ("HU", "")})
    if bad_rescale:
        problems.append(f"RescaleType {', '.join(bad_rescale)} (not HU)")
    if not problems:
        return None
    return (
        f"CT series {series_uid} ({path}): {'; '.join(problems)}. FMCIB was trained on original CT in "
        "Hounsfield units; features of this image were computed but may not be meaningful"
    )
