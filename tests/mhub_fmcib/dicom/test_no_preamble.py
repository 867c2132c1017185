"""Files without the 128-byte preamble and ``DICM`` prefix (older exports, pydicom's own
``rtstruct.dcm``) are read when they parse as DICOM; other files stay "not a DICOM file"."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
from fmcib_testlib.dicom_builders import SAMPLE_SEG, ct_files
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset

from mhub_fmcib.cli import _has_file_for
from mhub_fmcib.config import InputKind
from mhub_fmcib.dicom.ct import assemble_ct
from mhub_fmcib.dicom.index import InstanceKind, SkipReason, index_folder
from mhub_fmcib.dicom.rtstruct import read_rtstruct
from mhub_fmcib.plan import plan_dicom_folder
from mhub_fmcib.seeds.from_dicom import lesions_from_segments


def write_without_preamble(src: Path, dest: Path) -> Path:
    """``src`` decompressed and written as a bare data set: no preamble, no ``DICM``, no file
    meta (explicit VR little endian, the encoding a reader must detect)."""
    ds = pydicom.dcmread(src)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress(generate_instance_uid=False)  # the SEG references the original UIDs
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, implicit_vr=False, little_endian=True, enforce_file_format=False)
    assert dest.read_bytes()[128:132] != b"DICM" and dest.read_bytes()[:4] == b"\x08\x00\x05\x00"
    return dest


def test_pydicoms_rtstruct_without_preamble_is_indexed_and_read(tmp_path: Path) -> None:
    src = Path(get_testdata_file("rtstruct.dcm"))
    assert src.read_bytes()[128:132] != b"DICM"  # the package's file is still the stranger
    shutil.copy2(src, tmp_path / "rtstruct.dcm")
    (tmp_path / "notes.txt").write_text("not dicom at all\n")
    no_meta = Path(get_testdata_file("no_meta.dcm"))  # a bare data set without a SOP Class UID
    shutil.copy2(no_meta, tmp_path / "no_meta.dcm")
    idx = index_folder(tmp_path)
    [rec] = idx.instances
    ref = pydicom.dcmread(src, force=True)
    assert rec.kind is InstanceKind.RTSTRUCT
    assert rec.sop_instance_uid == ref.SOPInstanceUID and rec.series_instance_uid == ref.SeriesInstanceUID
    reasons = {s.path.name: s.reason for s in idx.skipped}
    assert reasons == {"notes.txt": SkipReason.NOT_DICOM, "no_meta.dcm": SkipReason.NOT_DICOM}
    rt = read_rtstruct(tmp_path / "rtstruct.dcm")
    assert {r.info.name for r in rt.rois} == {str(item.ROIName) for item in ref.StructureSetROISequence}
    assert _has_file_for(tmp_path / "rtstruct.dcm", InputKind.DICOM_FOLDER)  # the container's mount check
    assert not _has_file_for(tmp_path / "notes.txt", InputKind.DICOM_FOLDER)


def test_ct_and_seg_without_preamble_give_the_same_case(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    for p in ct_files():
        write_without_preamble(p, bare / "ct" / p.name)
    write_without_preamble(SAMPLE_SEG, bare / "seg.dcm")
    the_plan = plan_dicom_folder(bare)
    assert not the_plan.failures and not the_plan.index.skipped  # type: ignore[union-attr]
    [case] = the_plan.cases
    original = plan_dicom_folder(SAMPLE_SEG.parents[1]).cases[0]
    assert case.case_id == original.case_id and len(case.ct) == len(original.ct) == 48
    got, want = assemble_ct(case.ct), assemble_ct(original.ct)
    np.testing.assert_array_equal(np.asarray(got.volume.array), np.asarray(want.volume.array))
    np.testing.assert_array_equal(got.volume.affine, want.volume.affine)
    lesions, _masks, failures = lesions_from_segments(case.segs, got, ())
    want_lesions, _, _ = lesions_from_segments(original.segs, want, ())
    assert not failures, [f.reason for f in failures]
    assert [les.seed for les in lesions] == [les.seed for les in want_lesions]
