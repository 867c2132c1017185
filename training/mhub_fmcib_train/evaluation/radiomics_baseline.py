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
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    for p in (image, mask, params):
        if not Path(p).is_file():
            raise ConfigError(f"file not found: {p}")
    extractor = featureextractor.RadiomicsFeatureExtractor(str(params))
    img = sitk.ReadImage(str(image))
    msk = sitk.ReadImage(str(mask))
    lab = label if label is not None else int(extractor.settings.get("label", 1))
    if not np.any(sitk.GetArrayViewFromImage(msk) == lab):
        raise SegmentationError(f"{mask}: no voxel has label {lab}; pass the lesion's label")
    try:
        result = extractor.execute(img, msk, label=lab)
    except ValueError as exc:  # pyradiomics reports geometry mismatches as ValueError
        raise SegmentationError(f"pyradiomics could not use {mask} on {image}: {exc}") from exc
    return {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}


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
