"""Whether a CT's Hounsfield units are plausible, from the range of the voxels decoded.

A CT in HU holds air outside the body (about -1000 HU) and soft tissue (0 to 100 HU) in
almost every slice; a 50 mm patch around a lesion sees both within its slices. These are
measured, but ``run.json`` warns about them (:func:`hu_range_warning`):

* every decoded voxel has the same value (a constant image: RescaleSlope 0, a blank export);
* the largest value is below :data:`MAX_BELOW` (-500 HU): no soft tissue at all, e.g. values
  stored without their rescale, or an image of another modality;
* the smallest value is above :data:`MIN_ABOVE` (500 HU): no air nor soft tissue, e.g. a
  rescale applied twice or an intercept missing (stored values 0..4095 read as HU).

The range is accumulated slice by slice while the slices are decoded
(:attr:`mhub_fmcib.dicom.ct.CtSeries.hu_range`): for a DICOM CT it covers the slices the
patches read, not necessarily the whole series.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: A CT whose largest HU is below this holds no soft tissue (lung parenchyma is -900..-500).
MAX_BELOW = -500.0
#: A CT whose smallest HU is above this holds neither air, fat nor soft tissue.
MIN_ABOVE = 500.0


def hu_range_of(array: npt.ArrayLike) -> tuple[float, float] | None:
    """(min, max) of the finite values of ``array`` (HU); ``None`` when there is none."""
    a = np.asarray(array)
    if a.size == 0:
        return None
    if np.issubdtype(a.dtype, np.integer):
        return float(a.min()), float(a.max())
    finite = np.isfinite(a)
    if not finite.any():
        return None
    if not finite.all():
        a = a[finite]
    return float(a.min()), float(a.max())


def hu_range_warning(what: str, hu_range: tuple[float, float] | None) -> str | None:
    """The ``run.json`` warning for an implausible HU range (rules in the module docstring)
    of image ``what`` (e.g. ``CT series 1.2.3``); ``None`` when it is plausible or unknown."""
    if hu_range is None:
        return None
    lo, hi = hu_range
    if lo == hi:
        problem = f"every decoded voxel is {lo:g} HU (a constant image)"
    elif hi < MAX_BELOW:
        problem = f"its values span {lo:g}..{hi:g} HU, all below {MAX_BELOW:g} HU (no soft tissue)"
    elif lo > MIN_ABOVE:
        problem = f"its values span {lo:g}..{hi:g} HU, all above {MIN_ABOVE:g} HU (no air nor soft tissue)"
    else:
        return None
    return (
        f"{what}: implausible Hounsfield units: {problem}. Check RescaleSlope/RescaleIntercept and that the "
        "image is a CT in HU; features of this image were computed but may not be meaningful"
    )
