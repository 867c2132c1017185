"""Compressed transfer syntaxes and enhanced multi-frame CT give the same HU and geometry as
the uncompressed single-frame series.

Encoders: pydicom's own (RLE, deflate) and its plugins pyjpegls (JPEG-LS) and
pylibjpeg-openjpeg (JPEG 2000); JPEG lossless process 14 has no Python encoder, so GDCM
(through SimpleITK) encodes it and pylibjpeg-libjpeg decodes it. Every recompressed series is
also decoded by GDCM (SimpleITK's series reader) as an independent oracle. The multi-frame
CT is made by highdicom's ``LegacyConvertedEnhancedCTImage``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from fmcib_testlib.dicom_builders import read_ct_datasets
from pydicom.encaps import generate_fragments
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from mhub_fmcib.dicom.ct import CtSeries, assemble_ct
from mhub_fmcib.dicom.index import InstanceKind, index_folder
from mhub_fmcib.errors import GeometryError
from mhub_fmcib.image_io import sitk_to_volume

#: Six consecutive slices of the sample CT (it holds a nodule at slices 23-25).
SUBSET = slice(20, 26)


def _subset() -> list[pydicom.Dataset]:
    """The subset, decompressed to explicit VR little endian (the sample is stored as JPEG-LS)."""
    dss = read_ct_datasets()[SUBSET]
    for d in dss:
        d.decompress()
        assert d.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    return dss


def _write(dss: list[pydicom.Dataset], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n, d in enumerate(dss):
        d.save_as(folder / f"{n:03d}.dcm", enforce_file_format=True)
    return folder


def _assemble(folder: Path) -> CtSeries:
    idx = index_folder(folder)
    assert not idx.skipped
    return assemble_ct(idx.of_kind(InstanceKind.CT))


def _gdcm(folder: Path) -> np.ndarray:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return np.asarray(sitk_to_volume(reader.Execute()).array, dtype=np.float32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> CtSeries:
    return _assemble(_write(_subset(), tmp_path_factory.mktemp("plain")))


def test_reference_subset_is_the_sample(reference: CtSeries) -> None:
    assert reference.volume.shape == (512, 512, 6)
    assert reference.volume.spacing == pytest.approx((0.5703125, 0.5703125, 5.0))
    hu = np.asarray(reference.volume.array)
    assert hu.min() == -1024 and hu.max() > 1000  # air outside the body and bone


def _pydicom_encoder(uid: str) -> Callable[[pydicom.Dataset, Path], None]:
    def encode(ds: pydicom.Dataset, dest: Path) -> None:
        ds.compress(uid)
        ds.save_as(dest, enforce_file_format=True)

    return encode


def _gdcm_jpeg_lossless(ds: pydicom.Dataset, dest: Path) -> None:
    """JPEG lossless SV1 by GDCM: encode the stored values, move the fragments into ``ds``."""
    tmp = dest.with_name(f"gdcm_{dest.name}")  # GDCM picks its writer by the .dcm suffix
    img = sitk.GetImageFromArray(ds.pixel_array[None].astype(np.uint16))
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(tmp))
    writer.SetUseCompression(True)
    writer.SetCompressor("JPEG")
    writer.Execute(img)
    encoded = pydicom.dcmread(tmp)
    assert encoded.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    tmp.unlink()
    ds.PixelData = encoded.PixelData
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.save_as(dest, enforce_file_format=True)


def _deflate(ds: pydicom.Dataset, dest: Path) -> None:
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(dest, enforce_file_format=True)


ENCODERS: dict[str, tuple[str, Callable[[pydicom.Dataset, Path], None]]] = {
    "jpeg-lossless-sv1": (JPEGLosslessSV1, _gdcm_jpeg_lossless),
    "jpeg-ls-lossless": (JPEGLSLossless, _pydicom_encoder(JPEGLSLossless)),
    "jpeg2000-lossless": (JPEG2000Lossless, _pydicom_encoder(JPEG2000Lossless)),
    "rle-lossless": (RLELossless, _pydicom_encoder(RLELossless)),
    "deflated-explicit-le": (DeflatedExplicitVRLittleEndian, _deflate),
}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_compressed_series_gives_identical_hu(name: str, tmp_path: Path, reference: CtSeries) -> None:
    uid, encode = ENCODERS[name]
    folder = tmp_path / name
    folder.mkdir()
    for n, ds in enumerate(_subset()):
        encode(ds, folder / f"{n:03d}.dcm")
    files = sorted(folder.glob("*.dcm"))
    first = pydicom.dcmread(files[0])
    assert first.file_meta.TransferSyntaxUID == uid
    plain_size = 512 * 512 * 2
    if uid == DeflatedExplicitVRLittleEndian:
        # the data set after the file meta is a raw deflate stream
        raw = files[0].read_bytes()
        body = raw[132 + 12 + int.from_bytes(raw[140:144], "little") :]
        assert len(zlib.decompressobj(-15).decompress(body)) > plain_size
        assert files[0].stat().st_size < plain_size
    else:
        frames = list(generate_fragments(first.PixelData))
        assert frames and sum(len(f) for f in frames) < plain_size  # really encapsulated and compressed
    ct = _assemble(folder)
    np.testing.assert_array_equal(np.asarray(ct.volume.array), np.asarray(reference.volume.array))
    np.testing.assert_array_equal(ct.volume.affine, reference.volume.affine)
    # GDCM decodes the same files to the same HU
    np.testing.assert_array_equal(_gdcm(folder), np.asarray(reference.volume.array))


def _multiframe(dss: list[pydicom.Dataset], dest: Path, transfer_syntax_uid: str = ExplicitVRLittleEndian) -> Path:
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=dss,
        series_instance_uid=generate_uid(),
        series_number=900,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        transfer_syntax_uid=transfer_syntax_uid,
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    mf.save_as(dest)
    return dest


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless])
def test_enhanced_multiframe_equals_single_frame(ts: str, tmp_path: Path, reference: CtSeries) -> None:
    dss = _subset()
    rng = np.random.default_rng(1)
    path = _multiframe([dss[i] for i in rng.permutation(len(dss))], tmp_path / "mf" / "ct.dcm", ts)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2.2" and int(ds.NumberOfFrames) == 6
    assert ds.file_meta.TransferSyntaxUID == ts
    ct = _assemble(path.parent)
    assert len(ct.datasets) == 1
    np.testing.assert_array_equal(np.asarray(ct.volume.array), np.asarray(reference.volume.array))
    np.testing.assert_allclose(ct.volume.affine, reference.volume.affine, atol=1e-6)
    assert ct.frame_of_reference_uid == reference.frame_of_reference_uid


def _edit_frame_positions(path: Path, shift: Callable[[int, list[float]], list[float]]) -> None:
    ds = pydicom.dcmread(path)
    for n, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        pos = frame.PlanePositionSequence[0]
        pos.ImagePositionPatient = shift(n, [float(v) for v in pos.ImagePositionPatient])
    ds.save_as(path)


def test_multiframe_gantry_tilt_refused(tmp_path: Path) -> None:
    path = _multiframe(_subset(), tmp_path / "mf" / "ct.dcm")
    # frame origins drift 0.8 mm per frame along y: a tilted acquisition
    _edit_frame_positions(path, lambda n, p: [p[0], p[1] + 0.8 * n, p[2]])
    with pytest.raises(GeometryError, match=r"series .*gantry tilt"):
        _assemble(path.parent)


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda n, p: [p[0], p[1], p[2] + (0.7 if n == 3 else 0.0)], "unevenly spaced"),
        (lambda n, p: [p[0], p[1], p[2] + (5.0 if n >= 3 else 0.0)], "missing"),
    ],
    ids=["uneven", "gap"],
)
def test_multiframe_uneven_frames_refused(
    edit: Callable[[int, list[float]], list[float]], why: str, tmp_path: Path
) -> None:
    path = _multiframe(_subset(), tmp_path / "mf" / "ct.dcm")
    # frames are stored in position order by highdicom: frame n is slice n
    _edit_frame_positions(path, edit)
    with pytest.raises(GeometryError, match=rf"series .*{why}"):
        _assemble(path.parent)


def test_jpeg_ls_uses_the_faster_plugin_with_identical_pixels() -> None:
    """JPEG-LS goes to pyjpegls (installed by our own requirements), which gives the same
    stored values as pylibjpeg, pydicom's default pick."""
    from pydicom.pixels import get_decoder, pixel_array

    from mhub_fmcib.dicom.ct import PREFERRED_DECODER, decode_pixels

    assert PREFERRED_DECODER[JPEGLSLossless] in get_decoder(JPEGLSLossless).available_plugins
    for ds in read_ct_datasets()[SUBSET]:
        assert ds.file_meta.TransferSyntaxUID == JPEGLSLossless
        other = pixel_array(ds, decoding_plugin="pylibjpeg")
        ours = decode_pixels(ds)
        np.testing.assert_array_equal(ours, other)
        assert ours.dtype == other.dtype and ours.shape == (512, 512)
