"""Generators of bad inputs for the fault suite (issue 5) and the batch benchmark.

Every generator is seeded (``random.Random``) and writes into a given folder; each returns
:class:`BadInput` records that say which files it wrote and which outcomes are acceptable
for them. Bad *series* are small: 3 slices of 96 x 96 voxels cropped around the sample
nodule, stored uncompressed, each with its own Study/Series/Frame-of-Reference/SOP UIDs and
its own SEG (a clone of one highdicom-built template SEG with the UIDs re-mapped), so that a
bad series is a case of its own and never poisons a good one.
"""

from __future__ import annotations

import copy
import os
import random
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .dicom_builders import ct_files, make_seg
from .export_builder import nodule_mask

#: Crop of the sample CT around the nodule used for bad series: columns (i), rows (j), slices (k).
CROP_I = (170, 266)
CROP_J = (312, 408)
CROP_K = (32, 35)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


class Outcome(str, Enum):
    """How the pipeline may account for a bad input."""

    SKIPPED = "skipped"
    """Every path of the input is in run.json ``skipped_files`` with a reason."""
    CASE_FAILED = "case_failed"
    """Its CT series UID is the id of a failure (case level) in failures.csv."""
    SEG_FAILED = "seg_failed"
    """A failures.csv row is about its SEG (id ``SEG <uid>`` or a lesion of that SEG)."""
    PATH_NAMED = "path_named"
    """Every path of the input appears in the paths or reason of a failures.csv row."""
    OK = "ok"
    """Its case is measured (valid image data with hostile metadata)."""
    NOTED = "noted"
    """Indexed as a CT series without a SEG: named in run.json ``notes``, not a case."""
    NOT_INDEXED = "not_indexed"
    """Not a regular file (directory, symlink): neither indexed nor followed."""


@dataclass(frozen=True)
class BadInput:
    """One generated bad input.

    Attributes:
        category: fault family (``truncated``, ``random_dicm``, ...).
        variant: what exactly was done (for messages).
        paths: the damaged files (or links/folders) it consists of.
        allowed: outcomes that count as correct accounting.
        series_uid: CT series UID of the bad series, when the input is one.
        seg_uid: SOPInstanceUID of its SEG, when it has one.
        series_paths: every file of the bad series (for "nothing else indexed" checks).
    """

    category: str
    variant: str
    paths: tuple[Path, ...]
    allowed: frozenset[Outcome]
    series_uid: str | None = None
    seg_uid: str | None = None
    series_paths: tuple[Path, ...] = field(default=())


@dataclass(frozen=True)
class Template:
    """The 3-slice 96 x 96 CT crop (native pixel data) and a SEG of the nodule on it."""

    ct: tuple[pydicom.Dataset, ...]
    seg: pydicom.Dataset


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=["fmcib-faults", *map(str, parts)])


@lru_cache(maxsize=1)
def _template_cached(workdir: str) -> Template:
    ct: list[pydicom.Dataset] = []
    study, series, frame = _uid("t-study"), _uid("t-series"), _uid("t-for")
    (i0, i1), (j0, j1), (k0, k1) = CROP_I, CROP_J, CROP_K
    for k, p in enumerate(ct_files()[k0:k1]):
        ds = pydicom.dcmread(p)
        px = ds.pixel_array[j0:j1, i0:i1].copy()  # (rows, cols)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        sp = [float(v) for v in ds.PixelSpacing]  # (row spacing, column spacing)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient]) + i0 * sp[1] * iop[:3] + j0 * sp[0] * iop[3:]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.Rows, ds.Columns = px.shape
        ds.PixelData = px.astype(np.int16 if ds.PixelRepresentation else np.uint16).tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        for kw in ("LargestImagePixelValue", "SmallestImagePixelValue"):
            if kw in ds:
                del ds[kw]
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = _uid("t-sop", k)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName = "FAULT", "Fault^Template"
        ct.append(ds)
    mask = nodule_mask()[i0:i1, j0:j1, k0:k1]
    seg_path = Path(workdir) / "template_seg.dcm"
    make_seg(ct, {"Nodule": mask}, seg_path)
    return Template(ct=tuple(ct), seg=pydicom.dcmread(seg_path))


def template(workdir: Path) -> Template:
    """The template (built once per process; ``workdir`` holds its SEG file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return _template_cached(str(workdir))


def _template_uids(t: Template) -> list[str]:
    d0 = t.ct[0]
    return [
        str(d0.StudyInstanceUID),
        str(d0.SeriesInstanceUID),
        str(d0.FrameOfReferenceUID),
        *(str(d.SOPInstanceUID) for d in t.ct),
        str(t.seg.SeriesInstanceUID),
        str(t.seg.SOPInstanceUID),
    ]


def remap_uids(ds: pydicom.Dataset, mapping: dict[str, str]) -> pydicom.Dataset:
    """A deep copy of ``ds`` with every UI value found in ``mapping`` replaced (nested
    sequences and the file meta included)."""
    out = copy.deepcopy(ds)
    for d in (out, out.file_meta):
        for elem in d.iterall():
            if elem.VR == "UI" and isinstance(elem.value, str) and elem.value in mapping:
                elem.value = mapping[elem.value]
    return out


@dataclass
class SeriesClone:
    """A fresh copy of the template under new UIDs (datasets not yet written)."""

    name: str
    ct: list[pydicom.Dataset]
    seg: pydicom.Dataset
    mapping: dict[str, str]

    @property
    def series_uid(self) -> str:
        return str(self.ct[0].SeriesInstanceUID)

    @property
    def seg_uid(self) -> str:
        return str(self.seg.SOPInstanceUID)


def clone_series(t: Template, name: str, overrides: dict[str, str] | None = None) -> SeriesClone:
    """The template under new UIDs derived from ``name``; ``overrides`` maps template
    role names (``study``, ``series``, ``for``, ``sop0``.., ``seg_series``, ``seg_sop``) to
    values used instead (e.g. a hostile ``'../../etc'``)."""
    roles = ["study", "series", "for", *(f"sop{k}" for k in range(len(t.ct))), "seg_series", "seg_sop"]
    overrides = overrides or {}
    mapping = {old: overrides.get(role, _uid(name, role)) for role, old in zip(roles, _template_uids(t), strict=True)}
    return SeriesClone(
        name=name, ct=[remap_uids(d, mapping) for d in t.ct], seg=remap_uids(t.seg, mapping), mapping=mapping
    )


def write_ds(ds: pydicom.Dataset, path: Path) -> Path:
    """Save without validation or normalisation (hostile values are kept as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=False)
    return path


def write_clone(c: SeriesClone, folder: Path, with_seg: bool = True) -> tuple[list[Path], Path | None]:
    """Write the CT slices (``IM<k>``) and the SEG (``SEG.dcm``) into ``folder``."""
    cts = [write_ds(d, folder / f"IM{k}") for k, d in enumerate(c.ct)]
    seg = write_ds(c.seg, folder / "SEG.dcm") if with_seg else None
    return cts, seg


# --------------------------------------------------------------------------- generators


Gen = Callable[[Template, Path, random.Random], list[BadInput]]
FAIL = frozenset({Outcome.CASE_FAILED})


def _series_input(
    category: str,
    variant: str,
    c: SeriesClone,
    cts: Sequence[Path],
    seg: Path | None,
    damaged: Sequence[Path],
    allowed: frozenset[Outcome],
) -> BadInput:
    return BadInput(
        category=category,
        variant=variant,
        paths=tuple(damaged),
        allowed=allowed,
        series_uid=c.series_uid,
        seg_uid=c.seg_uid if seg else None,
        series_paths=(*cts, *([seg] if seg else [])),
    )


def _pixel_data_offset(data: bytes) -> int:
    off = data.rfind(b"\xe0\x7f\x10\x00")
    if off < 0:
        raise ValueError("no PixelData element")
    return off


def truncated(t: Template, root: Path, rng: random.Random, n: int = 36) -> list[BadInput]:
    """One slice (or the SEG) of a bad series cut at an offset: inside the preamble, the
    file meta, the data set header, the PixelData element header and the pixel data."""
    out = []
    for m in range(n):
        c = clone_series(t, f"trunc{m}")
        folder = root / "bad" / f"trunc{m:03d}"
        cts, seg = write_clone(c, folder)
        assert seg is not None
        target = seg if m % 6 == 5 else cts[rng.randrange(len(cts))]
        data = target.read_bytes()
        pix = _pixel_data_offset(data)
        zone = m % 5
        lo_hi = [(1, 132), (132, 300), (300, pix), (pix, pix + 12), (pix + 12, len(data) - 1)][zone]
        cut = rng.randrange(lo_hi[0], max(lo_hi[0] + 1, lo_hi[1]))
        target.write_bytes(data[:cut])
        variant = f"{target.name} cut at byte {cut} of {len(data)} (zone {zone})"
        if target == seg:
            allowed = frozenset({Outcome.SKIPPED, Outcome.SEG_FAILED})
        else:
            # header damage: the file is skipped (the other slices may still form a series)
            # or the series fails; pixel damage: the series fails
            allowed = FAIL if zone == 4 else frozenset({Outcome.SKIPPED, Outcome.CASE_FAILED})
        out.append(_series_input("truncated", variant, c, cts, seg, [target], allowed))
    return out


def _meta_bytes(sop_class: str, sop: str) -> bytes:
    from io import BytesIO

    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = BytesIO()
    write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buf.getvalue()


def random_dicm(t: Template, root: Path, rng: random.Random, n: int = 40) -> list[BadInput]:
    """Random bytes behind a DICM preamble: pure noise, a valid file meta followed by noise,
    element headers with absurd lengths, a valid header then noise instead of pixels."""
    out = []
    folder = root / "junk" / "dicm"
    folder.mkdir(parents=True, exist_ok=True)
    good = t.ct[0]
    for m in range(n):
        kind = m % 5
        pre = bytes(rng.randrange(256) for _ in range(128)) if m % 2 else b"\0" * 128
        noise = rng.randbytes(rng.randrange(0, 4096))
        if kind == 0:
            body = noise
        elif kind == 1:
            body = _meta_bytes(good.SOPClassUID, _uid("dicm", m))[132:] + noise
        elif kind == 2:  # (0008,0016) UI with a 4 GB length, then (7FE0,0010) OB of 2 GB
            meta = _meta_bytes(good.SOPClassUID, _uid("dicm", m))[132:]
            body = meta + struct.pack("<HH2sH", 0x0008, 0x0016, b"UI", 0xFFFF) + noise
            body += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0x7FFFFFFF) + noise[:64]
        elif kind == 3:  # a good header, pixels replaced by noise (length field kept)
            ds = copy.deepcopy(good)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid("dicm-px", m)
            ds.SeriesInstanceUID = _uid("dicm-px-series", m)
            p = write_ds(ds, folder / f"tmp{m}")
            data = p.read_bytes()
            p.unlink()
            off = _pixel_data_offset(data) + 12
            body = data[132:off] + rng.randbytes(len(data) - off)
        else:  # undefined-length sequence that never ends
            meta = _meta_bytes(good.SOPClassUID, _uid("dicm", m))[132:]
            body = meta + struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF) + noise
        p = folder / (f"noise{m:03d}.dcm" if m % 3 else f"noise{m:03d}")
        p.write_bytes(pre + b"DICM" + body)
        # a good header with noise pixels is a CT of its own series (no SEG): it is
        # indexed, noted as a series without SEG, never a case; the rest is skipped
        if kind == 3:
            allowed, series = frozenset({Outcome.SKIPPED, Outcome.NOTED}), _uid("dicm-px-series", m)
        else:
            allowed, series = frozenset({Outcome.SKIPPED}), None
        out.append(BadInput("random_dicm", f"kind {kind}, {len(body)} bytes", (p,), allowed, series_uid=series))
    return out


def _delete_or_spoil(ds: pydicom.Dataset, kw: str, how: str, rng: random.Random) -> None:
    if how == "delete":
        del ds[kw]
    elif how == "empty":
        ds[kw].value = None
    elif how == "garbage":
        if kw == "Rows":
            ds.Rows = 0
        else:  # stored with VR LO so that the text survives writing
            ds.add_new(ds[kw].tag, "LO", ["abc", "def"])
    elif how == "short":
        if kw == "Rows":
            ds.Rows = 0
        else:
            ds[kw].value = list(ds[kw].value)[:-1]
    elif how == "nan":
        if kw == "Rows":
            ds.Rows = 0
        else:
            ds.add_new(ds[kw].tag, "LO", ["nan"] * len(list(ds[kw].value)))


def missing_geometry(t: Template, root: Path, rng: random.Random) -> list[BadInput]:
    """ImagePositionPatient, ImageOrientationPatient, PixelSpacing or Rows deleted, empty,
    unparsable, too short or NaN, on every slice or on one slice."""
    out = []
    m = 0
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows"):
        for how in ("delete", "empty", "garbage", "short", "nan"):
            for where in ("all", "one"):
                if kw == "Rows" and how in ("short", "nan"):
                    if where == "one":
                        continue
                c = clone_series(t, f"geom{m}")
                targets = c.ct if where == "all" else [c.ct[rng.randrange(len(c.ct))]]
                for ds in targets:
                    _delete_or_spoil(ds, kw, how, rng)
                cts, seg = write_clone(c, root / "bad" / f"geom{m:03d}")
                damaged = [p for p, d in zip(cts, c.ct, strict=True) if any(d is x for x in targets)]
                out.append(_series_input("missing_geometry", f"{kw} {how} on {where}", c, cts, seg, damaged, FAIL))
                m += 1
    return out


def rows_columns(t: Template, root: Path, rng: random.Random) -> list[BadInput]:
    """Rows/Columns that disagree with the pixel data (more, fewer, swapped-looking)."""
    out = []
    changes = [(1, 0), (-1, 0), (0, 1), (0, -1), (-48, 0), (48, 0), (0, -48), (96, 96), (-95, 0), (100, -50)]
    for m, (dr, dc) in enumerate(changes):
        for where in ("all", "one"):
            c = clone_series(t, f"rc{m}-{where}")
            targets = c.ct if where == "all" else [c.ct[1]]
            for ds in targets:
                ds.Rows, ds.Columns = int(ds.Rows) + dr, int(ds.Columns) + dc
            cts, seg = write_clone(c, root / "bad" / f"rc{m:02d}{where}")
            damaged = [p for p, d in zip(cts, c.ct, strict=True) if any(d is x for x in targets)]
            out.append(
                _series_input("rows_columns", f"Rows{dr:+d} Columns{dc:+d} on {where}", c, cts, seg, damaged, FAIL)
            )
    return out


def absurd_dimensions(t: Template, root: Path, rng: random.Random) -> list[BadInput]:
    """Headers claiming gigabytes: 65535 x 65535 slices, 40000 x 40000, huge NumberOfFrames
    on CT and SEG. The pixel data stays small; nothing may allocate what the header claims."""
    out = []
    variants: list[tuple[str, Callable[[SeriesClone], list[pydicom.Dataset]]]] = []

    def set_all(rows: int, cols: int) -> Callable[[SeriesClone], list[pydicom.Dataset]]:
        def f(c: SeriesClone) -> list[pydicom.Dataset]:
            for d in c.ct:
                d.Rows, d.Columns = rows, cols
            return c.ct

        return f

    def frames(value: str, on_seg: bool) -> Callable[[SeriesClone], list[pydicom.Dataset]]:
        def f(c: SeriesClone) -> list[pydicom.Dataset]:
            if on_seg:
                c.seg.NumberOfFrames = value
                return [c.seg]
            for d in c.ct:
                d.NumberOfFrames = value
            return c.ct

        return f

    def seg_dims(rows: int, cols: int) -> Callable[[SeriesClone], list[pydicom.Dataset]]:
        def f(c: SeriesClone) -> list[pydicom.Dataset]:
            c.seg.Rows, c.seg.Columns = rows, cols
            return [c.seg]

        return f

    variants += [
        ("CT 65535x65535 all slices", set_all(65535, 65535)),
        ("CT 40000x40000 all slices", set_all(40000, 40000)),
        ("CT 65535x96 all slices", set_all(65535, 96)),
        ("CT NumberOfFrames 2147483647", frames("2147483647", False)),
        ("CT NumberOfFrames 99999999999", frames("99999999999", False)),
        ("SEG NumberOfFrames 2147483647", frames("2147483647", True)),
        ("SEG 65535x65535", seg_dims(65535, 65535)),
        ("SEG 40000x40000", seg_dims(40000, 40000)),
    ]
    for m, (name, fn) in enumerate(variants):
        c = clone_series(t, f"absurd{m}")
        touched = fn(c)
        cts, seg = write_clone(c, root / "bad" / f"absurd{m:02d}")
        if touched and touched[0] is c.seg:
            assert seg is not None
            allowed = frozenset({Outcome.SEG_FAILED, Outcome.SKIPPED})
            damaged = [seg]
        else:
            allowed = frozenset({Outcome.CASE_FAILED, Outcome.SKIPPED})
            damaged = cts
        out.append(_series_input("absurd_dimensions", name, c, cts, seg, damaged, allowed))
    return out


def duplicate_sops(t: Template, root: Path, rng: random.Random) -> list[BadInput]:
    """A slice's SOPInstanceUID in a second (or third) file with different pixels: both
    valid (ambiguous: the series fails), or the copy damaged (dropped and named)."""
    out = []
    for m in range(8):
        c = clone_series(t, f"dup{m}")
        folder = root / "bad" / f"dup{m:02d}"
        cts, seg = write_clone(c, folder)
        k = m % len(c.ct)
        dup = copy.deepcopy(c.ct[k])
        px = np.frombuffer(dup.PixelData, dtype=np.int16).copy()
        px[rng.randrange(px.size)] += 1 + rng.randrange(100)
        dup.PixelData = px.tobytes()
        copies = [write_ds(dup, folder / "copies" / f"DUP{m}_a")]
        damaged_copy = m % 2 == 1
        if damaged_copy:
            data = copies[0].read_bytes()
            copies[0].write_bytes(data[: len(data) - 1000])
            allowed = frozenset({Outcome.PATH_NAMED})
        else:
            allowed = FAIL
        if m >= 6:  # a third, valid, different copy
            third = copy.deepcopy(dup)
            px[0] += 7
            third.PixelData = px.tobytes()
            copies.append(write_ds(third, folder / "copies" / f"DUP{m}_b"))
            allowed = FAIL
        variant = f"slice {k} duplicated {'(damaged copy)' if damaged_copy else ''} x{len(copies)}"
        out.append(_series_input("duplicate_sop", variant, c, [*cts, *copies], seg, copies, allowed))
    return out


def seg_missing_series(t: Template, root: Path, rng: random.Random) -> list[BadInput]:
    """SEGs whose referenced CT series is not in the input (alone in their own study)."""
    out = []
    for m in range(8):
        c = clone_series(t, f"segmiss{m}")
        seg = c.seg
        if m % 4 == 0:
            del seg.ReferencedSeriesSequence
        elif m % 4 == 1:
            seg.ReferencedSeriesSequence[0].SeriesInstanceUID = _uid("nowhere", m)
        elif m % 4 == 2:
            seg.ReferencedSeriesSequence[0].SeriesInstanceUID = ""
        else:
            seg.FrameOfReferenceUID = _uid("other-for", m)
        p = write_ds(seg, root / "bad" / f"segmiss{m:02d}" / "SEG.dcm")
        out.append(
            BadInput("seg_missing_series", f"variant {m % 4}", (p,), frozenset({Outcome.SEG_FAILED}), seg_uid=c.seg_uid)
        )
    return out


def seg_empty(t: Template, root: Path, rng: random.Random) -> list[BadInput]:
    """SEGs with no foreground (pixel data zeroed), or whose only segment has no frames."""
    out = []
    for m in range(6):
        c = clone_series(t, f"segempty{m}")
        seg = c.seg
        if m % 3 == 0:
            seg.PixelData = bytes(len(seg.PixelData))
        elif m % 3 == 1:  # segment 1 described, but every frame claims segment 2
            groups = [*seg.PerFrameFunctionalGroupsSequence, *seg.get("SharedFunctionalGroupsSequence", [])]
            for f in groups:
                if "SegmentIdentificationSequence" in f:
                    f.SegmentIdentificationSequence[0].ReferencedSegmentNumber = 2
            d2 = copy.deepcopy(seg.SegmentSequence[0])
            d2.SegmentNumber = 2
            d2.SegmentLabel = "other"
            seg.SegmentSequence.append(d2)
            seg.PixelData = bytes(len(seg.PixelData))
        else:
            seg.SegmentSequence = []
        cts, segp = write_clone(c, root / "bad" / f"segempty{m:02d}")
        assert segp is not None
        allowed = frozenset({Outcome.SEG_FAILED})
        out.append(_series_input("seg_empty", f"variant {m % 3}", c, cts, segp, [segp], allowed))
    return out


#: Hostile strings for PatientID and descriptions (must never reach a file name).
HOSTILE_TEXT = (
    "../../escape",
    "..",
    "/etc/passwd",
    "a/b/c",
    "..\\..\\win",
    "nul\x00inside",
    "Ünïcödé 患者 ✓",
    "~/x",
    "$(touch pwned)",
    "con.txt",
    "-rf",
    ". ",
)


def hostile_metadata(t: Template, root: Path, rng: random.Random) -> list[BadInput]:
    """Valid series whose PatientID, PatientName, Study/SeriesDescription hold path
    separators, '..', NUL and non-ASCII: they must be measured, and no output path may
    depend on these values."""
    out = []
    texts = list(HOSTILE_TEXT)
    for m in range(6):
        c = clone_series(t, f"hostile{m}")
        vals = [texts[(m * 3 + j) % len(texts)] for j in range(4)]
        for ds in [*c.ct, c.seg]:
            ds.PatientID = vals[0]
            ds.PatientName = vals[1]
            ds.StudyDescription = vals[2]
            ds.SeriesDescription = vals[3]
        cts, seg = write_clone(c, root / "bad" / f"hostile{m:02d}")
        for p in cts:
            out.append(_series_input("hostile_metadata", f"{vals!r}", c, cts, seg, [p], frozenset({Outcome.OK})))
    return out


#: Hostile UIDs: path traversal and separators.
HOSTILE_UIDS = ("../../etc", "..", "../escape", "1.2/../../x", "/tmp/abs", "1.2.3/4")


def hostile_uids(t: Template, root: Path, rng: random.Random) -> list[BadInput]:
    """SeriesInstanceUID / StudyInstanceUID / SOPInstanceUID / FrameOfReferenceUID that are
    paths ('../../etc'): the case must fail clearly and nothing may be written outside OUTPUT."""
    out = []
    roles = ["series", "study", "sop0", "for", "series", "study", "seg_sop", "series"]
    for m, role in enumerate(roles):
        evil = HOSTILE_UIDS[m % len(HOSTILE_UIDS)]
        c = clone_series(t, f"evil{m}", overrides={role: evil})
        cts, seg = write_clone(c, root / "bad" / f"evil{m:02d}")
        allowed = frozenset({Outcome.CASE_FAILED, Outcome.SEG_FAILED, Outcome.SKIPPED})
        assert seg is not None
        damaged = cts if role != "seg_sop" else [seg]
        out.append(_series_input("hostile_uid", f"{role}={evil!r}", c, cts, seg, damaged, allowed))
    return out


def non_ct(t: Template, root: Path, rng: random.Random) -> list[BadInput]:
    """MR, secondary capture, SR, presentation state, RT dose, PET, a CT localizer, and an
    image with no SOP Class at all: skipped with a reason."""
    out = []
    classes = [MR_IMAGE_STORAGE, SECONDARY_CAPTURE, BASIC_TEXT_SR, GSPS, RT_DOSE, PET_IMAGE_STORAGE]
    variants: list[tuple[str, str | None]] = [(c, None) for c in classes] + [
        ("localizer", "LOCALIZER"),
        ("localizer2", "LOCALIZER"),
        ("no-class", None),
        (MR_IMAGE_STORAGE, None),
        (SECONDARY_CAPTURE, None),
        ("no-uids", None),
    ]
    for m, (cls, image_type) in enumerate(variants):
        ds = copy.deepcopy(t.ct[m % len(t.ct)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid("nonct-study", m), _uid("nonct-series", m)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid("nonct-sop", m)
        if image_type:
            ds.ImageType = ["ORIGINAL", "PRIMARY", image_type]
        elif cls == "no-class":
            del ds.SOPClassUID
            del ds.file_meta.MediaStorageSOPClassUID
        elif cls == "no-uids":
            del ds.SeriesInstanceUID
        else:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = cls
            ds.Modality = {MR_IMAGE_STORAGE: "MR", PET_IMAGE_STORAGE: "PT", RT_DOSE: "RTDOSE"}.get(cls, "OT")
        p = write_ds(ds, root / "junk" / "nonct" / f"obj{m:02d}")
        if cls == "no-uids":  # a CT slice without SeriesInstanceUID: a one-slice series, UID derived (issue 16)
            from mhub_fmcib.dicom.index import InstanceRecord, read_record

            rec = read_record(p)
            assert isinstance(rec, InstanceRecord)
            out.append(BadInput("non_ct", cls, (p,), frozenset({Outcome.NOTED}), series_uid=rec.series_instance_uid))
            continue
        out.append(BadInput("non_ct", cls, (p,), frozenset({Outcome.SKIPPED})))
    return out


def dicomdirs(t: Template, root: Path, rng: random.Random) -> list[BadInput]:
    """DICOMDIR files: empty, listing missing files, listing '../../' paths."""
    out = []
    for m, refs in enumerate([[], ["IM0", "IM1"], ["..", "..", "etc", "passwd"], ["..", "study0", "IM0000"]]):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MEDIA_STORAGE_DIRECTORY
        ds.file_meta.MediaStorageSOPInstanceUID = _uid("dicomdir", m)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.FileSetID = f"FS{m}"
        ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
        ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
        ds.FileSetConsistencyFlag = 0
        rec = pydicom.Dataset()
        rec.DirectoryRecordType = "IMAGE"
        rec.OffsetOfTheNextDirectoryRecord = 0
        rec.RecordInUseFlag = 0xFFFF
        rec.OffsetOfReferencedLowerLevelDirectoryEntity = 0
        if refs:
            rec.ReferencedFileID = refs
        ds.DirectoryRecordSequence = [rec] if refs else []
        p = write_ds(ds, root / "junk" / f"media{m}" / "DICOMDIR")
        out.append(BadInput("dicomdir", f"refs {refs}", (p,), frozenset({Outcome.SKIPPED})))
    return out


def zero_byte(t: Template, root: Path, rng: random.Random, n: int = 10) -> list[BadInput]:
    """Empty files, some named like slices."""
    out = []
    for m in range(n):
        p = root / "junk" / "empty" / (f"IM{m:04d}.dcm" if m % 2 else f"empty{m}")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
        out.append(BadInput("zero_byte", p.name, (p,), frozenset({Outcome.SKIPPED})))
    return out


def directories_like_files(t: Template, root: Path, rng: random.Random) -> list[BadInput]:
    """Folders named like DICOM files (empty, or holding one zero-byte file)."""
    out = []
    for m, name in enumerate(["IM0001.dcm", "SEG.dcm", "DICOMDIR", "CT_0001.dcm", "features.csv"]):
        d = root / "junk" / "dirs" / f"d{m}" / name
        d.mkdir(parents=True)
        paths: list[Path] = [d]
        allowed = frozenset({Outcome.NOT_INDEXED})
        out.append(BadInput("directory_like_file", name, tuple(paths), allowed))
    return out


def symlinks_outside(t: Template, root: Path, outside: Path, rng: random.Random) -> list[BadInput]:
    """Links from inside the input to a valid series with a SEG outside it (file and
    folder links), to /etc/passwd, dangling, and a loop. None may be followed."""
    c = clone_series(t, "outside")
    cts, seg = write_clone(c, outside / "series")
    assert seg is not None
    links = root / "junk" / "links"
    links.mkdir(parents=True, exist_ok=True)
    made = []
    for name, target in [
        ("outside_ct0", cts[0]),
        ("outside_ct1", cts[1]),
        ("outside_seg", seg),
        ("outside_dir", outside / "series"),
        ("passwd", Path("/etc/passwd")),
        ("dangling", root / "nowhere" / "x.dcm"),
        ("loop", links),
    ]:
        p = links / name
        os.symlink(target, p)
        made.append(BadInput("symlink", f"-> {target}", (p,), frozenset({Outcome.NOT_INDEXED}), series_uid=None))
    return made


GENERATORS: tuple[tuple[str, Gen], ...] = (
    ("truncated", truncated),
    ("random_dicm", random_dicm),
    ("missing_geometry", missing_geometry),
    ("rows_columns", rows_columns),
    ("absurd_dimensions", absurd_dimensions),
    ("duplicate_sop", duplicate_sops),
    ("seg_missing_series", seg_missing_series),
    ("seg_empty", seg_empty),
    ("hostile_metadata", hostile_metadata),
    ("hostile_uid", hostile_uids),
    ("non_ct", non_ct),
    ("dicomdir", dicomdirs),
    ("zero_byte", zero_byte),
    ("directory_like_file", directories_like_files),
)


def add_faults(root: Path, outside: Path, workdir: Path, seed: int = 0) -> list[BadInput]:
    """Write every category of bad input below ``root`` (the export), plus the target of
    the outside symlinks below ``outside``. Returns the bad inputs."""
    t = template(workdir)
    rng = random.Random(seed)
    bad: list[BadInput] = []
    for _, gen in GENERATORS:
        bad += gen(t, root, rng)
    bad += symlinks_outside(t, root, outside, rng)
    return bad


def junk_files(root: Path, n: int, seed: int = 0) -> Iterator[Path]:
    """``n`` junk files for benchmarks: zero-byte, random with DICM, random text."""
    rng = random.Random(seed)
    folder = root / "junk"
    folder.mkdir(parents=True, exist_ok=True)
    for m in range(n):
        p = folder / f"junk{m:05d}"
        kind = m % 3
        if kind == 0:
            p.write_bytes(b"")
        elif kind == 1:
            p.write_bytes(b"\0" * 128 + b"DICM" + rng.randbytes(rng.randrange(16, 2048)))
        else:
            p.write_bytes(rng.randbytes(rng.randrange(16, 2048)))
        yield p


# ---- issue 15's operator faults (points 6-11): builders for the CLI-level fault tests

#: Terminal control text: ESC sequences (colour, window title), BEL, CR, C1 CSI, a bidi
#: override and a forged log line after a newline.
CONTROL_TEXT = "\x1b[31mred\x1b]0;title\x07\rERROR forged\x9b2J\u202etxt\nINFO forged"
#: The raw control bytes that must never reach stderr (newline is the log's own).
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def with_control_text(src: Path, dest: Path) -> Path:
    """A copy of the export ``src`` in a folder whose name holds ESC/BEL/CR, with
    PatientName of every file and the label of every SEG segment holding
    :data:`CONTROL_TEXT` (the pixels and UIDs are unchanged). Returns the copy's root."""
    root = dest / ("in" + CONTROL_TEXT.replace("\n", "").replace("/", ""))
    for p in sorted(src.rglob("*")):
        if not p.is_file():
            continue
        out = root / p.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        ds = pydicom.dcmread(p)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = CONTROL_TEXT.replace("\n", " ")
        for seg in ds.get("SegmentSequence", []):
            seg.SegmentLabel = CONTROL_TEXT.replace("\n", " ")[:64]
        ds.save_as(out)
    return root
