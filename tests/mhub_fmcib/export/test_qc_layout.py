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
