"""A small multi-study "PACS export" made from the sample CT: N copies with their own
patient, study, series, frame of reference and SOP instance UIDs, each with a SEG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from .dicom_builders import SAMPLE, ct_files, make_seg, sphere


def nodule_mask() -> np.ndarray:
    from mhub_fmcib.image_io import read_image

    return np.asarray(read_image(SAMPLE / "nrrd" / "lung1_label.nrrd").array) == 1


def make_study(dest: Path, n: int, slices: slice = slice(None), extra_lesion: bool = False) -> list[Path]:
    """Study ``n``: the sample CT (optionally a slab of it) under new UIDs, plus a SEG."""
    study, series, frame = (generate_uid(entropy_srcs=[f"export-{n}-{w}"]) for w in ("study", "series", "for"))
    paths = []
    dss = []
    for i, p in enumerate(ct_files()[slices]):
        ds = pydicom.dcmread(p)
        ds.PatientID = f"P{n:03d}"
        ds.PatientName = f"Export^{n}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"export-{n}-sop-{i}"])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = dest / f"study{n}" / f"IM{i:04d}"
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out)
        paths.append(out)
        dss.append(ds)
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    mask = nodule_mask()[:, :, slices]
    masks = {"Nodule": mask}
    if extra_lesion:
        masks["second"] = sphere(mask.shape, (300, 260, mask.shape[2] // 2), (8, 8, 2))
    if mask.any():
        make_seg(dss, masks, dest / f"study{n}" / "SEG.dcm")
    return paths


def make_export(dest: Path, n_studies: int) -> Path:
    """``dest`` with ``n_studies`` studies (slabs of 20 slices around the nodule)."""
    for n in range(n_studies):
        make_study(dest, n, slices=slice(14, 34), extra_lesion=n % 2 == 1)
    return dest
