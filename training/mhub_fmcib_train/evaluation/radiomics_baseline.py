"""The classical radiomics baseline: pyradiomics features from image + mask files.

Parameters come from the committed ``radiomics_params.yaml`` (the settings of pyradiomics'
own lung1 regression baseline: original image, all 3D classes, bin width 25). Images and
masks are read with SimpleITK (NRRD, NIfTI, MHA); a mask's voxels equal to ``label`` form
the region. The output table has one row per case: ``case_id`` then one column per feature
(``original_<class>_<feature>``), the layout the probe and statistics read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mhub_fmcib.errors import ConfigError, SegmentationError

#: The committed parameter file.
DEFAULT_PARAMS = Path(__file__).with_name("radiomics_params.yaml")


@dataclass(frozen=True)
class RadiomicsCase:
    """One lesion: its image file, mask file and mask label."""

    case_id: str
    image: Path
    mask: Path
    label: int = 1


def extract_radiomics(
    image: Path, mask: Path, params: Path = DEFAULT_PARAMS, label: int | None = None
) -> dict[str, float]:
    """pyradiomics features (diagnostics dropped) of one image/mask pair, name -> value."""
    import SimpleITK as sitk

    for p in (image, mask, params):
        if not Path(p).is_file():
            raise ConfigError(f"file not found: {p}")
    return extract_radiomics_images(
        sitk.ReadImage(str(image)), sitk.ReadImage(str(mask)), params, label, what=f"{mask} on {image}"
    )


def extract_radiomics_images(
    img: Any, msk: Any, params: Path = DEFAULT_PARAMS, label: int | None = None, what: str = "mask"
) -> dict[str, float]:
    """pyradiomics features of SimpleITK image and mask objects (same grid), name -> value."""
    import SimpleITK as sitk
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    extractor = featureextractor.RadiomicsFeatureExtractor(str(params))
    lab = label if label is not None else int(extractor.settings.get("label", 1))
    if not np.any(sitk.GetArrayViewFromImage(msk) == lab):
        raise SegmentationError(f"{what}: no voxel has label {lab}; pass the lesion's label")
    try:
        result = extractor.execute(img, msk, label=lab)
    except ValueError as exc:  # pyradiomics reports geometry mismatches as ValueError
        raise SegmentationError(f"pyradiomics could not use {what}: {exc}") from exc
    return {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}


def dicom_radiomics_table(
    folder: Path,
    params: Path = DEFAULT_PARAMS,
    sources: tuple[str, ...] = ("SEG",),
    segments: Sequence[str] = (),
) -> tuple[pd.DataFrame, list[str]]:
    """pyradiomics features for every segment of every SEG (and/or ROI of every RTSTRUCT)
    in a DICOM folder, with the masks placed on the CT grid exactly as ``mhub-fmcib run``
    places them. Rows are keyed by the same ``case_id`` as ``features.csv``'s
    ``lesion_id``; returns the table and the errors of lesions that could not be measured."""
    from mhub_fmcib.dicom.ct import assemble_ct
    from mhub_fmcib.errors import CaseError
    from mhub_fmcib.image_io import volume_to_sitk
    from mhub_fmcib.plan import DicomSegCase, plan_dicom_folder
    from mhub_fmcib.records import CaseFailure, Volume
    from mhub_fmcib.seeds.from_dicom import iter_segments

    the_plan = plan_dicom_folder(Path(folder), sources=sources)
    errors = [f.reason for f in the_plan.failures]
    rows = []
    for case in the_plan.cases:
        if not isinstance(case, DicomSegCase):
            continue
        try:
            ct = assemble_ct(case.ct)
        except CaseError as exc:
            errors.append(str(exc))
            continue
        image = volume_to_sitk(ct.volume)
        for segment in iter_segments(case.segs, ct, segments):  # the pipeline's own segment loop
            if isinstance(segment, CaseFailure):
                errors.append(segment.reason)
                continue
            try:
                mask = volume_to_sitk(Volume(segment.mask(ct).astype(np.uint8), ct.volume.affine))
                feats = extract_radiomics_images(image, mask, params, 1, what=segment.what)
            except CaseError as exc:
                errors.append(f"{segment.lesion_id}: {exc}")
                continue
            rows.append({"case_id": segment.lesion_id, "segment_label": segment.origin.segment_label, **feats})
    return pd.DataFrame(rows), errors


def read_cases(path: Path) -> list[RadiomicsCase]:
    """Cases CSV with columns ``case_id, image, mask`` and optional ``label``; relative
    paths are taken relative to the CSV's folder."""
    df = pd.read_csv(path, dtype={"case_id": str})
    missing = {"case_id", "image", "mask"} - set(df.columns)
    if missing:
        raise ConfigError(f"{path}: missing columns {sorted(missing)} (need case_id, image, mask)")
    base = Path(path).parent
    return [
        RadiomicsCase(
            str(r.case_id),
            base / str(r.image),
            base / str(r.mask),
            int(r.label) if "label" in df.columns else 1,
        )
        for r in df.itertuples(index=False)
    ]


def radiomics_table(cases: Sequence[RadiomicsCase], params: Path = DEFAULT_PARAMS) -> pd.DataFrame:
    """Feature table: one row per case, ``case_id`` then features in pyradiomics' order."""
    rows = []
    for c in cases:
        feats = extract_radiomics(c.image, c.mask, params, c.label)
        rows.append({"case_id": c.case_id, **feats})
    return pd.DataFrame(rows)
