"""What people see of a lesion in every output: a short unique label and a colour.

Lesion ids of DICOM lesions are ``<CT series UID>/<SEG UID>/<n>``: unique, but longer than
the 64 characters of a DICOM Tracking Identifier or Segment Label, and all alike within a
series. The label is made for people instead, for example
``FMCIB lesion 2 - Nodule (SEG #3)``: the lesion's 1-based position among the lesions of
its case (the order of ``features.csv``), the segment, ROI or mask label it came from, and
where that is. It is unique within the case (so within one SR and one SEG), at most 64
characters and ASCII apart from the segment's own label. The full lesion id stays in
``features.csv``, ``run.json`` and in the Tracking Unique Identifier, derived from it.

The colour of lesion *n* is the *n*-th of :func:`lesion_colours`: the SEG's Recommended
Display CIELab Value and the outline on the QC pictures.
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..records import Lesion, LesionResult, SeedSource

if TYPE_CHECKING:
    import highdicom as hd

#: Longest Tracking Identifier / Segment Label we write (the SEG's Segment Label is LO).
MAX_LABEL = 64
#: 20 colours far apart for the eye (sRGB), used in this order; more lesions get colours
#: spread over the hue circle by the golden angle.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
)
_ROW = re.compile(r":row(\d+)$")


@dataclass(frozen=True)
class LesionLabel:
    """The label and colour of one lesion.

    Attributes:
        number: 1-based position of the lesion among the results of its case.
        text: the label, at most :data:`MAX_LABEL` characters.
        rgb: display colour, sRGB 0-255.
    """

    number: int
    text: str
    rgb: tuple[int, int, int]

    def cielab(self) -> hd.color.CIELabColor:
        """The colour as DICOM's Recommended Display CIELab Value (highdicom imported here:
        the QC pictures use the label without loading it)."""
        import highdicom as hd

        return hd.color.CIELabColor.from_rgb(*self.rgb)


def lesion_colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct sRGB colours: :data:`PALETTE`, then golden-angle hues."""
    out: list[tuple[int, int, int]] = []
    seen: set[tuple[int, int, int]] = set()
    i = 0
    while len(out) < n:
        if i < len(PALETTE):
            rgb = PALETTE[i]
        else:
            h = (i * 0.6180339887498949) % 1.0
            s = 0.55 + 0.4 * ((i // 3) % 2)
            v = 0.95 - 0.25 * ((i // 2) % 2)
            r, g, b = colorsys.hsv_to_rgb(h, s, v)
            rgb = (round(r * 255), round(g * 255), round(b * 255))
        i += 1
        if rgb not in seen:
            seen.add(rgb)
            out.append(rgb)
    return out


def _origin(lesion: Lesion) -> tuple[str, str]:
    """(what the lesion is, where it came from) for its label."""
    number = lesion.segment_number
    name = (lesion.segment_label or "").strip()
    source = lesion.seed_source
    if source is SeedSource.SEGMENT_CENTROID:
        return name or "segment", f"SEG #{number}" if number is not None else "SEG"
    if source in (SeedSource.ROI_CENTROID, SeedSource.ROI_POINT):
        return name or "ROI", f"ROI #{number}" if number is not None else "ROI"
    if source is SeedSource.MASK_CENTROID:
        return "mask " + (name or f"label {number}"), ""
    row = _ROW.search(lesion.lesion_id)
    return "seed point", f"row {row.group(1)}" if row else ""


def label_text(number: int, lesion: Lesion) -> str:
    """``FMCIB lesion <number> - <what> (<where>)``, the *what* shortened to fit 64 characters."""
    what, where = _origin(lesion)
    head = f"FMCIB lesion {number}"
    tail = f" ({where})" if where else ""
    room = MAX_LABEL - len(head) - len(tail) - 3
    if room < 1:
        return (head + tail)[:MAX_LABEL]
    if len(what) > room:
        what = what[: room - 1].rstrip() + "~"
    return f"{head} - {what}{tail}"


def lesion_labels(results: Sequence[LesionResult]) -> dict[str, LesionLabel]:
    """Lesion id -> :class:`LesionLabel` for the results of one case, numbered in order.

    Every exporter of a case passes the same results, so the SR, the SEG and the QC page
    give a lesion the same label and colour.
    """
    colours = lesion_colours(len(results))
    return {
        r.lesion.lesion_id: LesionLabel(n, label_text(n, r.lesion), colours[n - 1])
        for n, r in enumerate(results, start=1)
    }
