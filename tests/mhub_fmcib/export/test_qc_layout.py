"""QC pictures and index, output layout, atomic writes, deterministic UIDs, provenance."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pydicom
import pytest

from mhub_fmcib.export import (
    ExportError,
    atomic_write_dataset,
    derive_uid,
    dicom_output_dir,
    safe_file_stem,
)
from mhub_fmcib.provenance import Provenance, collect_provenance


def test_layout_rejects_escaping_uids(tmp_path: Path) -> None:
    assert dicom_output_dir(tmp_path, "1.2.3", "1.2.3.4") == tmp_path / "dicom" / "1.2.3" / "1.2.3.4"
    for bad in ("../1.2", "1.2/3", "..", "1.02.3", "", "1..2", "1.2 ", "1." + "1" * 70):
        with pytest.raises(ExportError, match="not a valid DICOM UID"):
            dicom_output_dir(tmp_path, bad, "1.2.3")
        with pytest.raises(ExportError, match="not a valid DICOM UID"):
            dicom_output_dir(tmp_path, "1.2.3", bad)


def test_safe_file_stem() -> None:
    names = ["a/b", "a_b", "../..", "x" * 300, "ü nicode", ""]
    stems = [safe_file_stem(n) for n in names]
    assert len(set(stems)) == len(stems)
    for s in stems:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", s)
        assert len(s) <= 89


def test_derive_uid_is_deterministic_and_valid() -> None:
    a = derive_uid("series", "1.2.3", "f" * 64)
    assert a == derive_uid("series", "1.2.3", "f" * 64)
    assert a != derive_uid("series", "1.2.3", "e" * 64)
    assert a != derive_uid("series", "1.2.3" + "f" * 64)  # parts are separated
    assert re.fullmatch(r"2\.25\.[1-9][0-9]*", a)
    assert len(a) <= 64
    assert pydicom.uid.UID(a).is_valid


def test_atomic_write(tmp_path: Path) -> None:
    ds = pydicom.Dataset()
    ds.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = derive_uid("x")
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.PatientName = "A"
    path = tmp_path / "sub" / "x.dcm"
    assert atomic_write_dataset(ds, path) == path
    assert pydicom.dcmread(path).PatientName == "A"
    ds.PatientName = "B"
    atomic_write_dataset(ds, path)
    assert pydicom.dcmread(path).PatientName == "B"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.dcm"]  # no temp files left
    assert path.stat().st_mode & 0o777 == 0o644


def test_provenance() -> None:
    p = collect_provenance("AB" * 32, "/models/model_weights.torch")
    assert p.weights_sha256 == "ab" * 32
    assert p.weights_path_name == "model_weights.torch"
    assert p.torch_version == metadata.version("torch")
    assert p.highdicom_version == metadata.version("highdicom")
    assert p.pydicom_version == metadata.version("pydicom")
    assert p.package_version == metadata.version("mhub-fmcib")
    text = p.as_text()
    for v in (
        p.package_version,
        p.weights_sha256,
        p.torch_version,
        p.highdicom_version,
        p.pydicom_version,
    ):
        assert v in text
    assert Provenance(**p.as_dict()) == p  # type: ignore[arg-type]
    assert f"weights_sha256={p.weights_sha256}" in p.as_parameters()
    with pytest.raises(ValueError, match="64 lower-case hex"):
        collect_provenance("abc", "w.torch")


def test_qc_context_slice_is_read_from_the_slabs() -> None:
    """Issue 15.12: with a DICOM CT decoded only where the patch reads (a geometry-only
    volume and slabs), the QC picture is the one drawn from the whole decoded volume (the
    CT slice through the seed comes from its slab, not a blank placeholder)."""
    import numpy as np
    from fmcib_testlib.dicom_builders import SAMPLE

    from mhub_fmcib.dicom.ct import assemble_ct, decode_slices
    from mhub_fmcib.dicom.index import InstanceKind, index_folder
    from mhub_fmcib.export.labels import lesion_labels
    from mhub_fmcib.export.qc import render_lesion_picture
    from mhub_fmcib.patch import extract_patch, slices_read
    from mhub_fmcib.records import Lesion, LesionResult, LesionStatus, SeedPoint, SeedSource

    records = index_folder(SAMPLE / "dicom" / "ct").of_kind(InstanceKind.CT)
    full = assemble_ct(records)
    seed = SeedPoint(-21.858572, -120.535814, -611.496416)
    part = decode_slices(assemble_ct(records, decode=False), slices_read(full.volume, [seed]))
    assert part.slabs and part.volume.array.strides == (0, 0, 0)
    lesion = Lesion("nodule", seed, SeedSource.USER)
    patch = extract_patch(full.volume, seed)
    result = LesionResult(lesion, LesionStatus.OK, np.zeros(4096, np.float32), patch)
    label = lesion_labels([result])["nodule"]
    want, _ = render_lesion_picture(result, label, full.volume)
    got, _ = render_lesion_picture(result, label, part.volume, slabs=part.slabs)
    blank, _ = render_lesion_picture(result, label, part.volume)  # no slabs: the placeholder
    assert np.array_equal(np.asarray(got), np.asarray(want))
    assert not np.array_equal(np.asarray(blank), np.asarray(want))
