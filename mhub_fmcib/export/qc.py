"""QC pictures: what the encoder saw for each lesion, and an index page listing them all.

Per lesion with a patch, ``OUTPUT/qc/<safe lesion id>.png``: the axial, coronal and
sagittal slices of the 50³ patch through the seed voxel (the patch centre unless the seed
lies near the image border), lung window (W 1500, L -600 HU), seed marked with a red
cross, 4x enlarged (nearest neighbour), ids in the title. ``OUTPUT/qc/index.html`` lists
every lesion (OK or failed) with its picture, status, key ids and error.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from ..records import LesionResult, LesionStatus, Patch
from .atomic import atomic_write, atomic_write_text
from .layout import safe_file_stem

#: Lung window in HU.
WINDOW_CENTRE = -600.0
WINDOW_WIDTH = 1500.0
#: Enlargement of each 50x50 slice.
SCALE = 4
_TITLE_H = 30
_GAP = 6


def seed_voxel(patch: Patch, seed_lps: npt.ArrayLike) -> tuple[int, int, int]:
    """(z, y, x) index of the patch voxel containing ``seed_lps`` (via the inverse affine),
    clamped to the patch."""
    p = np.append(np.asarray(seed_lps, dtype=np.float64), 1.0)
    idx = (np.linalg.inv(patch.affine) @ p)[:3]
    n = patch.array.shape
    z, y, x = (int(np.clip(np.floor(v + 0.5), 0, s - 1)) for v, s in zip(idx, n, strict=True))
    return z, y, x


def _window(normalised: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    hu = normalised.astype(np.float64) * 3072.0 - 1024.0
    lo = WINDOW_CENTRE - WINDOW_WIDTH / 2
    g = np.clip((hu - lo) / WINDOW_WIDTH, 0.0, 1.0) * 255.0
    return np.round(g).astype(np.uint8)


def render_patch_image(result: LesionResult) -> Image.Image:
    """RGB picture of the three orthogonal slices through the seed voxel (see module doc).

    Display orientation: axial as seen from the feet (patient right on the left, anterior
    up); coronal and sagittal with superior up.
    """
    if result.patch is None:
        raise ValueError(f"lesion {result.lesion.lesion_id!r} has no patch to draw")
    arr = np.asarray(result.patch.array)
    z, y, x = seed_voxel(result.patch, result.lesion.seed.as_array())
    # array axes (z, y, x) = (S, P, L) after the reference's LPS reorientation.
    views = [
        (arr[z, :, :], (x, y)),  # rows y (P, anterior up), cols x (L, right shown left)
        (arr[::-1, y, :], (x, arr.shape[0] - 1 - z)),  # rows S up, cols x
        (arr[::-1, :, x], (y, arr.shape[0] - 1 - z)),  # rows S up, cols y (P to the right)
    ]
    tiles = []
    for img2d, (col, row) in views:
        tile = Image.fromarray(_window(img2d)).convert("RGB")
        tile = tile.resize((img2d.shape[1] * SCALE, img2d.shape[0] * SCALE), Image.Resampling.NEAREST)
        d = ImageDraw.Draw(tile)
        cx, cy = col * SCALE + SCALE // 2, row * SCALE + SCALE // 2
        r = 3 * SCALE
        d.line([(cx - r, cy), (cx - SCALE, cy)], fill=(255, 0, 0), width=1)
        d.line([(cx + SCALE, cy), (cx + r, cy)], fill=(255, 0, 0), width=1)
        d.line([(cx, cy - r), (cx, cy - SCALE)], fill=(255, 0, 0), width=1)
        d.line([(cx, cy + SCALE), (cx, cy + r)], fill=(255, 0, 0), width=1)
        tiles.append(tile)
    width = sum(t.width for t in tiles) + _GAP * (len(tiles) + 1)
    height = max(t.height for t in tiles) + _TITLE_H + _GAP
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    xpos = _GAP
    for t in tiles:
        canvas.paste(t, (xpos, _TITLE_H))
        xpos += t.width + _GAP
    seed = result.lesion.seed
    title = (
        f"{result.lesion.lesion_id}  seed LPS ({seed.x:.1f}, {seed.y:.1f}, {seed.z:.1f}) mm  "
        f"axial | coronal | sagittal  W{WINDOW_WIDTH:.0f} L{WINDOW_CENTRE:.0f}"
    )
    ImageDraw.Draw(canvas).text((_GAP, 8), title, fill=(255, 255, 255))
    return canvas


def qc_file_name(result: LesionResult) -> str:
    """Safe PNG file name of a lesion (no path separators, unique per lesion id)."""
    return safe_file_stem(result.lesion.lesion_id) + ".png"


def write_qc_index(output: Path, results: Sequence[LesionResult]) -> Path:
    """Write ``OUTPUT/qc/<lesion>.png`` for every result with a patch and
    ``OUTPUT/qc/index.html`` listing every result; returns the index path."""
    qc_dir = Path(output) / "qc"
    qc_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in results:
        picture = ""
        if r.patch is not None:
            name = qc_file_name(r)
            atomic_write(qc_dir / name, partial(render_patch_image(r).save, format="PNG"))
            src = html.escape(name, quote=True)
            alt = html.escape(r.lesion.lesion_id, quote=True)
            picture = f'<img src="{src}" alt="patch of {alt}">'
        les = r.lesion
        seg = f"{les.seg_sop_instance_uid} #{les.segment_number}" if les.seg_sop_instance_uid else ""
        cells = [
            les.lesion_id,
            r.status.value,
            les.seed_source.value,
            f"({les.seed.x:.2f}, {les.seed.y:.2f}, {les.seed.z:.2f})",
            les.series_instance_uid or les.image_path or "",
            seg or les.mask_path or "",
            r.error or "",
        ]
        cls = "ok" if r.status is LesionStatus.OK else "failed"
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        rows.append(f'<tr class="{cls}">{tds}<td>{picture}</td></tr>')
    n_ok = sum(r.status is LesionStatus.OK for r in results)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mhub-fmcib QC</title>
<style>body{{font-family:sans-serif}} td,th{{border:1px solid #999;padding:4px;vertical-align:top}}
table{{border-collapse:collapse}} tr.failed td{{background:#fdd}} img{{max-width:640px}}</style>
</head><body>
<h1>mhub-fmcib QC: {n_ok} of {len(results)} lesions measured</h1>
<p>Slices through the seed of the 50 mm patch the encoder saw (lung window W1500 L-600);
red cross = seed. Research use only.</p>
<table><thead><tr><th>lesion</th><th>status</th><th>seed source</th><th>seed LPS mm</th>
<th>series / image</th><th>segment / mask</th><th>error</th><th>patch</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""
    index = qc_dir / "index.html"
    return atomic_write_text(index, page)
