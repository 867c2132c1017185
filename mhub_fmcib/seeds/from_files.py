"""Seeds of file inputs: one per non-zero label of a mask file, or one per row of a
reference-format seeds CSV (``image_path, coordX, coordY, coordZ`` in LPS mm)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dicom.ct import CtSeries
from ..errors import CaseError, ConfigError, SegmentationError
from ..image_io import read_mask
from ..records import CaseFailure, FileOrigin, Lesion, SeedPoint, SeedSource, SeriesRef, Volume, make_lesion_id
from .geometry import centre_of_mass_lps, seed_inside_mask

SEED_COLUMNS = ("image_path", "coordX", "coordY", "coordZ")


def series_ref(ct: CtSeries) -> SeriesRef:
    """The identity of a DICOM CT series."""
    return SeriesRef(ct.study_instance_uid, ct.series_instance_uid, ct.frame_of_reference_uid)


def lesions_from_mask(
    case_id: str, image: Path, mask_path: Path, volume: Volume
) -> tuple[list[Lesion], list[CaseFailure]]:
    """One lesion per non-zero label of a mask file on ``volume``'s grid."""
    try:
        labels = read_mask(mask_path, like=volume)
    except (CaseError, ValueError, FileNotFoundError) as e:
        return [], [CaseFailure.of(case_id, e, [str(mask_path)])]
    lesions = []
    for value in (int(v) for v in np.unique(labels) if v != 0):
        mask = labels == value
        seed = centre_of_mass_lps(mask, volume, f"{mask_path} label {value}")
        origin = FileOrigin(image_path=str(image), mask_path=str(mask_path), mask_label=value)
        lesions.append(
            Lesion(
                lesion_id=make_lesion_id(origin),
                seed=seed,
                seed_source=SeedSource.MASK_CENTROID,
                seed_inside_mask=seed_inside_mask(seed, mask, volume),
                origin=origin,
            )
        )
    if not lesions:
        error = SegmentationError(f"mask {mask_path} has no non-zero label: nothing to measure")
        return [], [CaseFailure.of(case_id, error, [str(mask_path)])]
    return lesions, []


@dataclass(frozen=True)
class SeedRow:
    """One row of a reference-format seeds CSV.

    Attributes:
        row_number: 1-based data row number in the file (header excluded).
        image: the image file or DICOM series folder, resolved against the CSV's folder.
        seed: LPS mm.
        passthrough: the other columns, in file order.
    """

    row_number: int
    image: Path
    seed: SeedPoint
    passthrough: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class BadSeedRow:
    """A seeds CSV row that cannot be used, and why."""

    row_number: int
    reason: str


def read_seeds_csv(path: Path) -> tuple[list[SeedRow], list[BadSeedRow]]:
    """Read a seeds CSV in the reference format (``image_path, coordX, coordY, coordZ``,
    LPS mm; other columns are passed through). Relative image paths are resolved against
    the CSV's folder.

    Raises:
        ConfigError: the file is missing or lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"seeds file {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in SEED_COLUMNS if c not in header]
        if missing:
            raise ConfigError(
                f"seeds file {path} lacks column(s) {', '.join(missing)}; the reference format "
                f"has columns {', '.join(SEED_COLUMNS)} (coordinates in LPS mm); found {header}"
            )
        rows: list[SeedRow] = []
        bad: list[BadSeedRow] = []
        for n, raw in enumerate(reader, start=1):
            rec = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            try:
                seed = SeedPoint(float(rec["coordX"]), float(rec["coordY"]), float(rec["coordZ"]))
            except ValueError as e:
                bad.append(BadSeedRow(n, f"{path} row {n}: coordinates must be numbers in LPS mm ({e})"))
                continue
            if not rec["image_path"]:
                bad.append(BadSeedRow(n, f"{path} row {n}: empty image_path"))
                continue
            image = Path(rec["image_path"])
            if not image.is_absolute():
                image = path.parent / image
            extra = tuple((k, v) for k, v in rec.items() if k not in SEED_COLUMNS)
            rows.append(SeedRow(row_number=n, image=image, seed=seed, passthrough=extra))
    return rows, bad


def lesions_from_rows(image: Path, rows: tuple[SeedRow, ...], ct: CtSeries | None) -> list[Lesion]:
    """One lesion per seed row of an image (``ct`` when the image is a DICOM series folder)."""
    series = series_ref(ct) if ct is not None else None
    lesions = []
    for row in rows:
        origin = FileOrigin(image_path=str(image), series=series, row=row.row_number)
        lesions.append(
            Lesion(
                lesion_id=make_lesion_id(origin),
                seed=row.seed,
                seed_source=SeedSource.USER,
                origin=origin,
                passthrough=row.passthrough,
            )
        )
    return lesions
