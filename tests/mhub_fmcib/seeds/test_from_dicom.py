"""Seeds from a SEG with many segments (issue 15.12): streamed one segment at a time as voxel
lists read from the slices each segment references, they equal the seeds of the whole-grid
mask path (the one before the change), rebuilt here from highdicom's pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fmcib_testlib.dicom_builders import SAMPLE, lattice_label, make_label_seg, read_ct_datasets

from mhub_fmcib.dicom.ct import CtSeries, assemble_ct
from mhub_fmcib.dicom.index import InstanceKind, index_folder
from mhub_fmcib.dicom.seg import read_seg
from mhub_fmcib.records import LesionMask
from mhub_fmcib.seeds.from_dicom import lesions_from_segments
from mhub_fmcib.seeds.geometry import centre_of_mass_lps, seed_inside_mask

N_SEGMENTS = 150


@pytest.fixture(scope="module")
def ct() -> CtSeries:
    return assemble_ct(index_folder(SAMPLE / "dicom" / "ct").of_kind(InstanceKind.CT), decode=False)


def whole_grid_seeds(seg_path: Path, ct: CtSeries) -> dict[int, tuple[tuple[float, float, float], bool, LesionMask]]:
    """The path before the change: per segment a whole-grid mask from every CT slice."""
    seg = read_seg(seg_path)
    out = {}
    for s in seg.segments:
        px = seg.seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(ct.sop_instance_uids),
            segment_numbers=[s.number],
            assert_missing_frames_are_empty=True,
            combine_segments=False,
        )
        mask = np.asarray(px[..., 0] > 0).transpose(2, 1, 0)
        seed = centre_of_mass_lps(mask, ct.volume)
        out[s.number] = ((seed.x, seed.y, seed.z), seed_inside_mask(seed, mask, ct.volume), LesionMask.of("", mask))
    return out


def test_many_segments_give_the_same_seeds_as_whole_grid_masks(tmp_path: Path, ct: CtSeries) -> None:
    label = lattice_label(ct.volume.shape, N_SEGMENTS, seed=3)
    path = make_label_seg(read_ct_datasets(), label, tmp_path / "many.dcm")
    seg = read_seg(path)
    # each segment's frames reference the one CT slice its ellipsoid lies on (1-3 slices)
    assert all(refs is not None and 1 <= len(refs) <= 3 for refs in seg.source_uids.values())
    rec = index_folder(tmp_path).of_kind(InstanceKind.SEG)
    lesions, masks, failures = lesions_from_segments(rec, ct, [])
    assert failures == [] and len(lesions) == len(masks) == N_SEGMENTS
    before = whole_grid_seeds(path, ct)
    for lesion, mask in zip(lesions, masks, strict=True):
        number = lesion.origin.segment_number  # type: ignore[union-attr]
        seed, inside, old_mask = before[number]
        assert (lesion.seed.x, lesion.seed.y, lesion.seed.z) == seed  # bit-identical
        assert lesion.seed_inside_mask is inside
        assert mask.offset == old_mask.offset and mask.grid_shape == old_mask.grid_shape
        np.testing.assert_array_equal(mask.crop, old_mask.crop)
        # the label map's own centre of mass (independent of highdicom)
        idx = np.argwhere(label == number).mean(axis=0)
        np.testing.assert_allclose(lesion.seed.as_array(), ct.volume.index_to_lps(idx), atol=1e-9)


def test_sample_seg_seed_unchanged(ct: CtSeries) -> None:
    """The sample nodule's seed is the one sample_data/README.md records."""
    rec = index_folder(SAMPLE / "dicom" / "seg").of_kind(InstanceKind.SEG)
    lesions, _, failures = lesions_from_segments(rec, ct, [])
    assert failures == [] and len(lesions) == 1
    np.testing.assert_allclose(lesions[0].seed.as_array(), [-21.859, -120.536, -611.496], atol=1e-3)
    assert (lesions[0].seed.x, lesions[0].seed.y, lesions[0].seed.z) == whole_grid_seeds(rec[0].path, ct)[1][0]
