"""Whether a CT series is an ORIGINAL image in Hounsfield units, from its first file's header.

FMCIB was trained on CT in HU. These are measured, but ``run.json`` warns about them:

* a RescaleType other than HU (data set, or an enhanced CT's functional groups);
* an ImageType DERIVED enhanced CT (multi-frame: perfusion and material maps come so);
* an ImageType DERIVED image that names a map (:data:`NON_HU_TERMS`: PERFUSION, IODINE, …).

A single-frame DERIVED\\SECONDARY\\AXIAL CT (a re-encoded or re-sliced series, the sample
study among them) is still HU and is not warned about.

Refused (:func:`check_rescale`, the series fails): a RescaleSlope of 0, which makes every
voxel the intercept (a constant image whose features would be measured as if it were a CT),
and a RescaleSlope or RescaleIntercept that is not a finite number; on any slice, or in an
enhanced CT's functional groups. An absent or empty slope is 1 and intercept 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CalibrationError
from .read import not_parsed, read_dataset
from .uids import ENHANCED_CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE

#: ImageType values (3 and later) of derived images that are not attenuation in HU.
NON_HU_TERMS = frozenset(
    {"PERFUSION", "IODINE", "VMI", "MONOENERGETIC", "EFFECTIVE_Z", "ELECTRON_DENSITY", "MATERIAL", "WATER",
     "FAT", "SUBTRACTION", "CBF", "CBV", "MTT", "TTP", "TMAX", "FLOW", "BLOOD_FLOW", "BLOOD_VOLUME", "PERMEABILITY",
     "URIC_ACID", "CALCIUM", "VIRTUAL_NON_CONTRAST"}
)  # fmt: skip
_ENHANCED = frozenset({ENHANCED_CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE})

if TYPE_CHECKING:
    import pydicom

    from .ct import CtSeries


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
    except not_parsed():
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


def _rescales(ds: pydicom.Dataset) -> Iterator[tuple[str, pydicom.Dataset]]:
    """(where, item) of every place a rescale is given: the data set, and an enhanced CT's
    shared and per-frame PixelValueTransformationSequence items."""
    yield "", ds
    for name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for n, group in enumerate(ds.get(name, [])):
            for item in group.get("PixelValueTransformationSequence", []):
                where = " (shared functional groups)" if name.startswith("Shared") else f" (frame {n + 1})"
                yield where, item


def _number(item: pydicom.Dataset, keyword: str) -> float | str | None:
    """The item's value of ``keyword`` as a float; ``None`` when absent or empty; the text
    seen when it is not one number."""
    try:
        value = item.get(keyword)
    except (TypeError, ValueError, OverflowError):  # pydicom converts DS text on access
        raw = item.get_item(keyword)
        text = getattr(raw, "value", b"")
        return text.decode("latin-1", "replace").strip() if isinstance(text, bytes) else str(text)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def check_rescale(ct: CtSeries) -> None:
    """Refuse a CT series whose rescale to HU is unusable (module docstring).

    Raises:
        CalibrationError: naming the file, where in it, and the value seen.
    """
    series = ct.series_instance_uid
    for k, ds in enumerate(ct.datasets):
        path = ct.paths[k] if k < len(ct.paths) else str(getattr(ds, "filename", "") or "its file")
        for where, item in _rescales(ds):
            slope, intercept = _number(item, "RescaleSlope"), _number(item, "RescaleIntercept")
            if slope == 0:
                raise CalibrationError(
                    f"CT series {series}: {path}{where} has RescaleSlope 0, so every voxel would be "
                    f"{intercept if isinstance(intercept, float) else 0.0:g} HU (a constant image, not a CT to "
                    "measure). Fix the export's RescaleSlope (1 for most CTs) or leave the series out."
                )
            for keyword, value in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
                if isinstance(value, str) or (isinstance(value, float) and not math.isfinite(value)):
                    raise CalibrationError(
                        f"CT series {series}: {path}{where} has {keyword} {value!r}, which is not a finite "
                        "number, so its pixels cannot be converted to HU. Fix the export's "
                        f"{keyword} or leave the series out."
                    )
