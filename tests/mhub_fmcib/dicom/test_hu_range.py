"""The HU plausibility warning (issue 15.11): thresholds, and the range streamed while the
slices a patch reads are decoded."""

from __future__ import annotations

import numpy as np
import pytest
from fmcib_testlib.dicom_builders import SAMPLE

from mhub_fmcib.dicom.ct import assemble_ct, decode_slices
from mhub_fmcib.dicom.hu_range import MAX_BELOW, MIN_ABOVE, hu_range_of, hu_range_warning
from mhub_fmcib.dicom.index import InstanceKind, index_folder


@pytest.mark.parametrize(
    ("lo", "hi", "says"),
    [
        (-1024.0, 3071.0, None),  # a chest CT
        (-1000.0, -400.0, None),  # lung and a little tissue
        (0.0, 0.0, "every decoded voxel is 0 HU (a constant image)"),
        (-1024.0, -1024.0, "a constant image"),
        (-3000.0, MAX_BELOW - 1, "all below -500 HU (no soft tissue)"),
        (MIN_ABOVE + 1, 4000.0, "all above 500 HU (no air nor soft tissue)"),
        (MAX_BELOW, 100.0, None),  # on the thresholds: plausible
        (-1000.0, MIN_ABOVE, None),
    ],
)
def test_thresholds(lo: float, hi: float, says: str | None) -> None:
    warning = hu_range_warning("CT series 1.2.3", (lo, hi))
    if says is None:
        assert warning is None
    else:
        assert warning is not None and says in warning
        assert warning.startswith("CT series 1.2.3: implausible Hounsfield units")
        assert "RescaleSlope/RescaleIntercept" in warning


def test_range_of_arrays_ignores_non_finite_values() -> None:
    assert hu_range_of(np.array([[-5, 7]], dtype=np.int16)) == (-5.0, 7.0)
    assert hu_range_of(np.array([np.nan, 3.0, -2.5, np.inf], dtype=np.float32)) == (-2.5, 3.0)
    assert hu_range_of(np.full(4, np.nan)) is None
    assert hu_range_of(np.zeros(0)) is None
    assert hu_range_warning("x", None) is None


def test_range_is_that_of_the_decoded_slices() -> None:
    records = index_folder(SAMPLE / "dicom" / "ct").of_kind(InstanceKind.CT)
    full = assemble_ct(records)
    arr = np.asarray(full.volume.array)
    assert full.hu_range == (float(arr.min()), float(arr.max()))
    assert hu_range_warning("sample", full.hu_range) is None
    lazy = assemble_ct(records, decode=False)
    assert lazy.hu_range is None
    part = decode_slices(lazy, [3, 4, 20])
    sub = arr[:, :, [3, 4, 20]]
    assert part.hu_range == (float(sub.min()), float(sub.max()))
    assert [s.shape[2] for s in part.slabs] == [2, 1]
