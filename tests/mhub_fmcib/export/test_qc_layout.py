"""QC pictures and index, output layout, atomic writes, deterministic UIDs, provenance."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from mhub_fmcib.export import (
    ExportError,
    atomic_write_dataset,
    derive_uid,
    dicom_output_dir,
    render_patch_image,
    safe_file_stem,
    write_qc_index,
)
from mhub_fmcib.export.qc import SCALE, qc_file_name, seed_voxel
from mhub_fmcib.provenance import Provenance, collect_provenance
from mhub_fmcib.records import SeedPoint


def test_qc_pictures_and_index(tmp_path: Path, ct_factory, result_factory, failed_factory) -> None:  # type: ignore[no-untyped-def]
    cts, vol = ct_factory()
    rng = np.random.default_rng(0)
    nasty = '../<script>alert("x")</script>/les'
    ok = result_factory(vol, cts[0], nasty, SeedPoint(0.0, 0.0, 0.0), rng)
    edge = result_factory(vol, cts[0], "edge", SeedPoint(37.0, 39.0, 12.0), rng)
    bad = failed_factory(cts[0], "failed & <b>", SeedPoint(1e3, 0, 0), "seed <outside> & away")
    index = write_qc_index(tmp_path, [ok, edge, bad])
    assert index == tmp_path / "qc" / "index.html"
    pngs = sorted((tmp_path / "qc").glob("*.png"))
    assert len(pngs) == 2
    assert all(p.parent == tmp_path / "qc" for p in pngs)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.png", p.name) for p in pngs)
    page = index.read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "seed &lt;outside&gt; &amp; away" in page
    assert "failed &amp; &lt;b&gt;" in page
    assert page.count('<tr class="ok">') == 2
    assert page.count('<tr class="failed">') == 1
    assert f'src="{qc_file_name(ok)}"' in page

    # the seed voxel is the patch voxel whose centre is nearest the seed (affine inverse)
    for res in (ok, edge):
        z, y, x = seed_voxel(res.patch, res.lesion.seed.as_array())
        centre = res.patch.affine @ np.array([z, y, x, 1.0])
        assert np.all(np.abs(centre[:3] - res.lesion.seed.as_array()) <= 0.5 + 1e-9)
    img = Image.open(tmp_path / "qc" / qc_file_name(ok)).convert("RGB")
    assert img.size == render_patch_image(ok).size
    a = np.asarray(img)
    z, y, x = seed_voxel(ok.patch, ok.lesion.seed.as_array())
    # red cross arm next to the seed in the axial tile (first tile, after the title bar)
    px = a[30 + y * SCALE + SCALE // 2, 6 + x * SCALE + SCALE // 2 + 2 * SCALE]
    assert tuple(px) == (255, 0, 0)
    # a pixel far from the marker is grey (lung window of the patch), R == G == B
    g = a[30 + 2, 6 + 2]
    assert g[0] == g[1] == g[2]
    hu = float(ok.patch.array[z, 0, 0]) * 3072 - 1024
    assert int(g[0]) == int(np.round(np.clip((hu + 1350) / 1500, 0, 1) * 255))


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
