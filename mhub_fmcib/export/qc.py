"""QC pictures: what the encoder saw for each lesion, and an index page listing them all.

Written **per case**, while the case's CT and patches are in memory
(:func:`write_case_qc`): for every lesion with a patch ``OUTPUT/qc/<stem>.png``, and for
every lesion ``OUTPUT/qc/<stem>.json`` (the row of the index page: patient, study, series,
label, status, picture). At the end of the run :func:`write_qc_index` writes
``OUTPUT/qc/index.html`` from those rows (a lesion of a case that wrote none still gets a
row, from its result).

A picture (:func:`render_lesion_picture`) shows, left to right, the axial, coronal and
sagittal planes of the 50³ patch through the seed voxel (4x enlarged, nearest neighbour)
and a context view, the full CT slice through the seed with the region the encoder read
(and, for a cube leaving the image, the full 50 mm cube dashed). On every view: the seed
(red cross), the outline of the lesion's segmentation in the lesion's colour (when it came
from a segmentation), orientation letters (R/L, A/P, S/I) and a 10 mm scale bar. The
window is chosen from the patch's HU: lung (W 1500 / L −600) when at least a quarter of
the voxels the encoder read are below −500 HU, else soft tissue (W 400 / L 40).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from ..errors import SeedError
from ..patch import read_block
from ..records import CaseFailure, LesionMask, LesionResult, LesionStatus, Patch, Volume
from .atomic import atomic_write, atomic_write_json, atomic_write_text
from .labels import LesionLabel, lesion_labels
from .layout import safe_file_stem

if TYPE_CHECKING:
    import pydicom

#: Enlargement of each 50x50 patch plane.
SCALE = 4
#: Edge of the context view in pixels.
CONTEXT_PX = 240
#: Length of the scale bar in mm.
SCALE_BAR_MM = 10.0
_GAP = 8
_TITLE_H = 22
_CAPTION_H = 18
_SEED = (255, 0, 0)
_BOX = (255, 220, 0)
_TEXT = (255, 255, 255)


@dataclass(frozen=True)
class Window:
    """A display window in HU."""

    name: str
    centre: float
    width: float


LUNG = Window("lung", -600.0, 1500.0)
SOFT_TISSUE = Window("soft tissue", 40.0, 400.0)


@dataclass(frozen=True)
class QcCase:
    """What a case's QC pictures need beyond the lesion results.

    Attributes:
        volume: the CT (HU) the patches were cut from; the slices through the seeds must be
            decoded (they are: each patch reads its seed's slice).
        patient_id, study_date, series_description: from the CT headers ("" when absent).
        masks: lesion id -> the segment, ROI or mask label the lesion came from, on
            ``volume``'s grid (none for seed points).
        demonstration: the run uses random-initialised weights.
        slabs: the decoded slices of ``volume`` when it is a DICOM CT decoded only where
            the patches read (:attr:`mhub_fmcib.dicom.ct.CtSeries.slabs`); then ``volume``
            gives the geometry only.
    """

    volume: Volume
    patient_id: str = ""
    study_date: str = ""
    series_description: str = ""
    masks: Mapping[str, LesionMask] | None = None
    demonstration: bool = False
    slabs: tuple[Volume, ...] = ()


@dataclass(frozen=True)
class QcRow:
    """One row of ``qc/index.html`` (stored as ``qc/<stem>.json`` by :func:`write_case_qc`)."""

    lesion_id: str
    label: str
    status: str
    patient_id: str
    study_date: str
    series_description: str
    seed_lps_mm: tuple[float, float, float]
    seed_source: str
    detail: str
    error: str
    picture: str
    window: str
    demonstration: bool

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form; :meth:`from_dict` reads it back equal."""
        return {**asdict(self), "seed_lps_mm": list(self.seed_lps_mm)}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> QcRow:
        seed = d["seed_lps_mm"]
        if not isinstance(seed, list | tuple) or len(seed) != 3:
            raise ValueError(f"seed_lps_mm must be three numbers, got {seed!r}")
        x, y, z = (float(v) for v in seed)
        text = {k: str(d[k]) for k in cls.__dataclass_fields__ if k not in ("seed_lps_mm", "demonstration")}
        return cls(**text, seed_lps_mm=(x, y, z), demonstration=bool(d["demonstration"]))


def case_from_ct(
    volume: Volume,
    ct_datasets: Sequence[pydicom.Dataset] = (),
    masks: Mapping[str, LesionMask] | None = None,
    demonstration: bool = False,
    slabs: Sequence[Volume] = (),
) -> QcCase:
    """A :class:`QcCase` with the patient, study and series read from the CT headers."""

    def header(keyword: str) -> str:
        return str(ct_datasets[0].get(keyword, "") or "") if ct_datasets else ""

    return QcCase(
        volume=volume,
        patient_id=header("PatientID"),
        study_date=_date(header("StudyDate")),
        series_description=header("SeriesDescription"),
        masks=masks,
        demonstration=demonstration,
        slabs=tuple(slabs),
    )


def _date(da: str) -> str:
    return f"{da[:4]}-{da[4:6]}-{da[6:8]}" if len(da) == 8 and da.isdigit() else da


# --- geometry of the views ----------------------------------------------------------------


def seed_voxel(patch: Patch, seed_lps: npt.ArrayLike) -> tuple[int, int, int]:
    """(z, y, x) index of the patch voxel containing ``seed_lps`` (via the inverse affine),
    clamped to the patch."""
    p = np.append(np.asarray(seed_lps, dtype=np.float64), 1.0)
    idx = (np.linalg.inv(patch.affine) @ p)[:3]
    n = patch.array.shape
    z, y, x = (int(np.clip(np.floor(v + 0.5), 0, s - 1)) for v, s in zip(idx, n, strict=True))
    return z, y, x


def direction_letter(v: npt.ArrayLike) -> str:
    """The patient direction an LPS vector points to most: L, R, P, A, S or I."""
    a = np.asarray(v, dtype=np.float64)
    axis = int(np.argmax(np.abs(a)))
    return ("RL", "AP", "IS")[axis][int(a[axis] > 0)]


@dataclass(frozen=True, eq=False)
class _View:
    """One 2D view: HU pixels, the LPS directions of screen right and screen down, the
    size of a pixel in mm, the seed's pixel, the mask pixels (or None) and boxes to draw
    ((x0, y0, x1, y1) in pixels, dashed?)."""

    name: str
    hu: npt.NDArray[np.float64]
    right: npt.NDArray[np.float64]
    down: npt.NDArray[np.float64]
    pixel_mm: float
    seed: tuple[float, float]
    mask: npt.NDArray[np.bool_] | None
    boxes: tuple[tuple[tuple[float, float, float, float], bool], ...] = ()


def _patch_views(result: LesionResult, mask: LesionMask | None, volume: Volume | None) -> list[_View]:
    """Axial, coronal and sagittal planes of the patch through the seed voxel.

    Patch axes (z, y, x) run along the affine's columns (S, P, L for the reference's LPS
    reorientation); axial rows run along y, columns along x; coronal and sagittal are shown
    with z reversed (superior up).
    """
    patch = result.patch
    if patch is None:
        raise ValueError(f"lesion {result.lesion.lesion_id!r} has no patch to draw")
    hu = np.asarray(patch.array, dtype=np.float64) * 3072.0 - 1024.0
    z, y, x = seed_voxel(patch, result.lesion.seed.as_array())
    nz = hu.shape[0]
    cols = patch.affine[:3, :3]
    on_patch = _mask_on_patch(mask, volume, patch) if mask is not None and volume is not None else None
    planes = [
        ("axial", hu[z], on_patch[z] if on_patch is not None else None, cols[:, 2], cols[:, 1], (x, y)),
        ("coronal", hu[::-1, y, :], _pl(on_patch, np.s_[::-1, y, :]), cols[:, 2], -cols[:, 0], (x, nz - 1 - z)),
        ("sagittal", hu[::-1, :, x], _pl(on_patch, np.s_[::-1, :, x]), cols[:, 1], -cols[:, 0], (y, nz - 1 - z)),
    ]
    return [_View(name, img, right, down, 1.0, (float(c), float(r)), m) for name, img, m, right, down, (c, r) in planes]


def _pl(
    arr: npt.NDArray[np.bool_] | None, index: tuple[slice | int, slice | int, slice | int]
) -> npt.NDArray[np.bool_] | None:
    return None if arr is None else arr[index]


def _mask_on_patch(mask: LesionMask, volume: Volume, patch: Patch) -> npt.NDArray[np.bool_]:
    """The lesion's mask sampled (nearest CT voxel) at the patch's voxel centres, (z, y, x)."""
    n = patch.array.shape
    idx = np.stack(np.meshgrid(*(np.arange(s) for s in n), indexing="ij"), axis=-1).reshape(-1, 3)
    lps = idx @ patch.affine[:3, :3].T + patch.affine[:3, 3]
    ijk = np.floor(volume.lps_to_index(lps) + 0.5).astype(np.int64)
    return mask.contains(ijk).reshape(n)


def _slice_hu(volume: Volume, k: int, slabs: Sequence[Volume]) -> npt.NDArray[np.float64]:
    """HU of CT slice ``k``, (I, J) (from ``slabs`` when given; -1024 where not decoded)."""
    window = (slice(0, volume.shape[0]), slice(0, volume.shape[1]), slice(k, k + 1))
    try:
        return np.asarray(read_block(volume, window, slabs), dtype=np.float64)[:, :, 0]
    except SeedError:
        return np.full(volume.shape[:2], -1024.0)


def _context_view(result: LesionResult, volume: Volume, mask: LesionMask | None, slabs: Sequence[Volume] = ()) -> _View:
    """The full CT slice (k) through the seed, with the read region and the 50 mm cube."""
    patch = result.patch
    if patch is None:
        raise ValueError(f"lesion {result.lesion.lesion_id!r} has no patch to draw")
    ijk = volume.lps_to_index(result.lesion.seed.as_array())
    k = int(np.clip(np.floor(ijk[2] + 0.5), 0, volume.shape[2] - 1))
    hu = np.nan_to_num(_slice_hu(volume, k, slabs).T, nan=-1024.0)
    d = volume.direction
    normal = np.cross(d[:, 0], d[:, 1])
    name = {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal"}.get(direction_letter(normal), "sagittal")
    boxes = []
    full = patch.corners_lps()
    read = patch.read_corners_lps()
    if not np.allclose(full, read):
        boxes.append((_box_on_slice(volume, full), True))
    boxes.append((_box_on_slice(volume, read), False))
    return _View(
        f"{name} CT slice {k + 1}/{volume.shape[2]}",
        hu,
        d[:, 0],
        d[:, 1],
        float(volume.spacing[0]),
        (float(ijk[0]), float(ijk[1])),
        mask.slice_k(k).T if mask is not None else None,
        tuple(boxes),
    )


def _box_on_slice(volume: Volume, corners_lps: npt.NDArray[np.float64]) -> tuple[float, float, float, float]:
    """The in-plane bounding box (pixel edges, x0 y0 x1 y1) of LPS corners on a slice."""
    ij = volume.lps_to_index(corners_lps)[:, :2]
    lo, hi = ij.min(axis=0), ij.max(axis=0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


# --- drawing -------------------------------------------------------------------------------


def choose_window(patch: Patch) -> Window:
    """Lung window when at least 25 % of the voxels the encoder read are below −500 HU,
    else soft tissue."""
    (za, zb), (ya, yb), (xa, xb) = patch.valid
    hu = np.asarray(patch.array[za:zb, ya:yb, xa:xb], dtype=np.float64) * 3072.0 - 1024.0
    return LUNG if float(np.mean(hu < -500.0)) >= 0.25 else SOFT_TISSUE


def window_grey(hu: npt.NDArray[np.float64], window: Window) -> npt.NDArray[np.uint8]:
    """HU -> 0..255 grey in ``window`` (clipped)."""
    lo = window.centre - window.width / 2
    g = np.clip((np.asarray(hu, dtype=np.float64) - lo) / window.width, 0.0, 1.0) * 255.0
    return np.round(g).astype(np.uint8)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _tile(view: _View, window: Window, zoom: float, colour: tuple[int, int, int]) -> Image.Image:
    """The view windowed, enlarged ``zoom`` times, with its overlays."""
    grey = window_grey(view.hu, window)
    h, w = grey.shape
    size = (max(1, round(w * zoom)), max(1, round(h * zoom)))
    rgb = np.repeat(np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.NEAREST))[..., None], 3, axis=2)
    if view.mask is not None and view.mask.any():
        big = np.asarray(Image.fromarray(view.mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0
        from scipy import ndimage  # ~0.4 s to import: only where a QC picture is drawn

        edge = big & ~ndimage.binary_erosion(big, iterations=1)
        rgb[edge] = colour
    tile = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    draw = ImageDraw.Draw(tile)
    for (x0, y0, x1, y1), dashed in view.boxes:
        box = [(x0 + 0.5) * zoom - 0.5, (y0 + 0.5) * zoom - 0.5, (x1 + 0.5) * zoom - 0.5, (y1 + 0.5) * zoom - 0.5]
        _rect(draw, box, (160, 160, 160) if dashed else _BOX, dashed)
    _cross(draw, ((view.seed[0] + 0.5) * zoom, (view.seed[1] + 0.5) * zoom), max(6.0, 3 * zoom))
    _letters(draw, view, tile.size)
    _scale_bar(draw, SCALE_BAR_MM / view.pixel_mm * zoom, tile.size)
    return tile


def _rect(draw: ImageDraw.ImageDraw, box: list[float], colour: tuple[int, int, int], dashed: bool) -> None:
    x0, y0, x1, y1 = box
    if not dashed:
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=1)
        return
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        n = max(1, int(np.hypot(b[0] - a[0], b[1] - a[1]) // 4))
        for i in range(0, n, 2):
            t0, t1 = i / n, min(1.0, (i + 1) / n)
            draw.line(
                [
                    (a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0),
                    (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1),
                ],
                fill=colour,
            )


def _cross(draw: ImageDraw.ImageDraw, centre: tuple[float, float], r: float) -> None:
    cx, cy = centre
    gap = r / 3
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        draw.line([(cx + dx * gap, cy + dy * gap), (cx + dx * r, cy + dy * r)], fill=_SEED, width=1)


def _letters(draw: ImageDraw.ImageDraw, view: _View, size: tuple[int, int]) -> None:
    """Orientation letters at the middle of each edge."""
    w, h = size
    font = _font(12)
    right, down = direction_letter(view.right), direction_letter(view.down)
    left, up = direction_letter(-view.right), direction_letter(-view.down)
    for text, (x, y) in (
        (left, (3, h / 2 - 7)),
        (right, (w - 11, h / 2 - 7)),
        (up, (w / 2 - 4, 2)),
        (down, (w / 2 - 4, h - 16)),
    ):
        draw.text((x, y), text, fill=(255, 255, 0), font=font, stroke_width=1, stroke_fill=(0, 0, 0))


def _scale_bar(draw: ImageDraw.ImageDraw, length_px: float, size: tuple[int, int]) -> None:
    """A 10 mm bar at the bottom left."""
    _, h = size
    x0, y = 6.0, h - 8.0
    draw.line([(x0, y), (x0 + length_px, y)], fill=_TEXT, width=2)
    draw.line([(x0, y - 3), (x0, y + 2)], fill=_TEXT, width=1)
    draw.line([(x0 + length_px, y - 3), (x0 + length_px, y + 2)], fill=_TEXT, width=1)
    draw.text((x0 + length_px + 4, y - 8), f"{SCALE_BAR_MM:.0f} mm", fill=_TEXT, font=_font(11))


def render_lesion_picture(
    result: LesionResult,
    label: LesionLabel,
    volume: Volume | None = None,
    mask: LesionMask | None = None,
    slabs: Sequence[Volume] = (),
) -> tuple[Image.Image, Window]:
    """The lesion's picture (see the module docstring) and the window it uses.

    Args:
        result: a result with a patch.
        label: its label (title) and colour (outline).
        volume: the CT the patch was cut from; without it there is no context view.
        mask: the lesion's segmentation on ``volume``'s grid (outline), if any.
        slabs: where ``volume``'s voxels are when it is geometry only (:class:`QcCase`).
    """
    if result.patch is None:
        raise ValueError(f"lesion {result.lesion.lesion_id!r} has no patch to draw")
    window = choose_window(result.patch)
    views = [(v, float(SCALE)) for v in _patch_views(result, mask, volume)]
    if volume is not None:
        ctx = _context_view(result, volume, mask, slabs)
        views.append((ctx, CONTEXT_PX / max(ctx.hu.shape)))
    tiles = [(_tile(v, window, zoom, label.rgb), v.name) for v, zoom in views]
    width = sum(t.width for t, _ in tiles) + _GAP * (len(tiles) + 1)
    height = _TITLE_H + max(t.height for t, _ in tiles) + _CAPTION_H + _GAP
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    seed = result.lesion.seed
    title = (
        f"{label.text}   seed LPS ({seed.x:.1f}, {seed.y:.1f}, {seed.z:.1f}) mm   "
        f"{window.name} window W{window.width:.0f} L{window.centre:.0f}"
    )
    draw.text((_GAP, 4), _fit(draw, title, width - 2 * _GAP, _font(13)), fill=_TEXT, font=_font(13))
    x = _GAP
    for tile, name in tiles:
        canvas.paste(tile, (x, _TITLE_H))
        draw.text((x, _TITLE_H + tile.height + 2), name, fill=(200, 200, 200), font=_font(12))
        x += tile.width + _GAP
    return canvas, window


def _fit(draw: ImageDraw.ImageDraw, text: str, width: float, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> str:
    """``text``, shortened with "…" so that it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


# --- files ---------------------------------------------------------------------------------


def qc_stem(lesion_id: str) -> str:
    """Safe file stem of a lesion's QC files (no path separators, unique per lesion id)."""
    return safe_file_stem(lesion_id)


def qc_file_name(result: LesionResult) -> str:
    """Safe PNG file name of a lesion."""
    return qc_stem(result.lesion.lesion_id) + ".png"


def _detail(result: LesionResult) -> str:
    les = result.lesion
    parts = [f"lesion id {les.lesion_id}"]
    if les.study_instance_uid:
        parts.append(f"study {les.study_instance_uid}")
    if les.series_instance_uid:
        parts.append(f"series {les.series_instance_uid}")
    if les.seg_sop_instance_uid:
        parts.append(f"segmentation {les.seg_sop_instance_uid} #{les.segment_number}")
    if les.image_path:
        parts.append(f"image {les.image_path}")
    if les.mask_path:
        parts.append(f"mask {les.mask_path}")
    return "; ".join(parts)


def _row(result: LesionResult, label: str, case: QcCase | None, picture: str, window: str) -> QcRow:
    seed = result.lesion.seed
    return QcRow(
        lesion_id=result.lesion.lesion_id,
        label=label,
        status=result.status.value,
        patient_id=case.patient_id if case else "",
        study_date=case.study_date if case else "",
        series_description=case.series_description if case else "",
        seed_lps_mm=(seed.x, seed.y, seed.z),
        seed_source=result.lesion.seed_source.value,
        detail=_detail(result),
        error=result.error or "",
        picture=picture,
        window=window,
        demonstration=case.demonstration if case else False,
    )


def write_case_qc(output: Path, results: Sequence[LesionResult], case: QcCase | None) -> list[Path]:
    """Write the QC files of one case (while its CT and patches are in memory): a PNG per
    lesion with a patch and a row file per lesion. Returns the files written."""
    qc_dir = Path(output) / "qc"
    labels = lesion_labels(results)
    written: list[Path] = []
    masks = case.masks if case is not None and case.masks is not None else {}
    for r in results:
        label = labels[r.lesion.lesion_id]
        picture = window = ""
        if r.patch is not None:
            image, win = render_lesion_picture(
                r, label, case.volume if case else None, masks.get(r.lesion.lesion_id), case.slabs if case else ()
            )
            picture, window = qc_file_name(r), win.name
            written.append(_write_png(qc_dir / picture, image))
        row = _row(r, label.text, case, picture, window)
        path = qc_dir / (qc_stem(r.lesion.lesion_id) + ".json")
        written.append(atomic_write_json(path, row.to_dict(), indent=1))
    return written


def _write_png(path: Path, image: Image.Image) -> Path:
    """A picture as PNG, through the one atomic writer."""
    return atomic_write(path, lambda fh: image.save(fh, format="PNG"))


def render_patch_image(result: LesionResult) -> Image.Image:
    """The picture of a lesion without its CT (patch planes only), labelled as lesion 1."""
    return render_lesion_picture(result, lesion_labels([result])[result.lesion.lesion_id])[0]


# --- the index page ------------------------------------------------------------------------


def _load_row(qc_dir: Path, result: LesionResult) -> QcRow | None:
    path = qc_dir / (qc_stem(result.lesion.lesion_id) + ".json")
    try:
        row = QcRow.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return row if row.lesion_id == result.lesion.lesion_id else None


def index_rows(output: Path, results: Sequence[LesionResult]) -> list[QcRow]:
    """The rows of the index: each result's row file when its case wrote one (status and
    error always from the result), else a row from the result alone."""
    qc_dir = Path(output) / "qc"
    rows = []
    fallback = lesion_labels(results)
    for r in results:
        row = _load_row(qc_dir, r)
        if row is None:
            row = _row(r, fallback[r.lesion.lesion_id].text, None, "", "")
        if row.picture and not (qc_dir / row.picture).is_file():
            row = replace(row, picture="")
        rows.append(replace(row, status=r.status.value, error=r.error or ""))
    return rows


_CSS = """
body{font-family:system-ui,sans-serif;margin:12px;max-width:1376px;color:#111}
h1{font-size:20px;margin:4px 0} p.note{margin:4px 0 10px;font-size:13px;color:#333}
.demo{background:#b00020;color:#fff;font-weight:bold;padding:8px 12px;margin:8px 0;font-size:16px}
table{border-collapse:collapse;width:100%;table-layout:fixed}
td{border-top:1px solid #bbb;padding:6px;vertical-align:top;font-size:13px;overflow-wrap:anywhere}
td.info{width:360px} td.pic img{max-width:100%;height:auto;display:block}
.label{font-weight:bold;font-size:14px} .status{display:inline-block;padding:0 6px;border-radius:3px}
tr.ok .status{background:#cfc} tr.failed .status{background:#fbb} tr.failed td{background:#fff3f3}
.detail{color:#555;font-size:11px} .error{color:#900;font-weight:bold}
"""


def _row_html(row: QcRow) -> str:
    e = html.escape
    who = (
        " · ".join(e(v) for v in (row.patient_id, row.study_date, row.series_description) if v) or "(no patient/study)"
    )
    seed = ", ".join(f"{v:.1f}" for v in row.seed_lps_mm)
    info = [
        f'<div class="label">{e(row.label)}</div>',
        f"<div>{who}</div>",
        f'<div><span class="status">{e(row.status)}</span> seed ({seed}) mm LPS, {e(row.seed_source)}'
        + (f", {e(row.window)} window" if row.window else "")
        + "</div>",
    ]
    if row.error:
        info.append(f'<div class="error">{e(row.error)}</div>')
    info.append(f'<div class="detail" title="{e(row.detail, quote=True)}">{e(row.detail)}</div>')
    if row.picture:
        src, alt = e(row.picture, quote=True), e(row.label, quote=True)
        pic = f'<img src="{src}" alt="{alt}" title="{e(row.lesion_id, quote=True)}">'
    else:
        pic = "no picture: no patch was cut for this lesion" if row.status != "ok" else "no picture"
    cls = "ok" if row.status == LesionStatus.OK.value else "failed"
    return f'<tr class="{cls}"><td class="info">{"".join(info)}</td><td class="pic">{pic}</td></tr>'


def _failure_html(f: CaseFailure) -> str:
    e = html.escape
    return (
        f'<tr class="failed"><td class="info"><div class="label">{e(f.case_id)}</div>'
        f'<div><span class="status">{e(f.kind)} failed</span> {e(f.error_type)}</div></td>'
        f'<td><div class="error">{e(f.reason)}</div></td></tr>'
    )


def write_qc_index(
    output: Path,
    results: Sequence[LesionResult],
    failures: Sequence[CaseFailure] = (),
    demonstration: bool = False,
) -> Path:
    """Write ``OUTPUT/qc/index.html``: a row per lesion (from the per-case row files and the
    results), then a row per case or file failure; returns its path.

    A results' patch is no longer needed here: pictures were written per case by
    :func:`write_case_qc`. The demonstration banner shows when ``demonstration`` is set or
    any case wrote its rows in a demonstration run.
    """
    qc_dir = Path(output) / "qc"
    rows = index_rows(output, results)
    demo = demonstration or any(r.demonstration for r in rows)
    n_ok = sum(r.status == LesionStatus.OK.value for r in rows)
    banner = (
        '<div class="demo">DEMONSTRATION RUN: random-initialised weights. The features are '
        "meaningless; run with the published FMCIB weights for real measurements.</div>"
        if demo
        else ""
    )
    body = "\n".join([*(_row_html(r) for r in rows), *(_failure_html(f) for f in failures)])
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mhub-fmcib QC</title>
<style>{_CSS}</style>
</head><body>
{banner}<h1>mhub-fmcib QC: {n_ok} of {len(rows)} lesions measured</h1>
<p class="note">Per lesion: axial, coronal and sagittal planes through the seed of the 50 mm patch
the encoder saw, and the CT slice through the seed with the region the encoder read (yellow box;
dashed grey: the full 50 mm cube where it leaves the image). Red cross: seed; coloured outline:
the lesion's segmentation; letters: patient orientation; bar: 10 mm. Research use only.</p>
<table><tbody>
{body}
</tbody></table></body></html>
"""
    index = qc_dir / "index.html"
    return atomic_write_text(index, page)
