"""DICOM and QC outputs: TID 1500 SR, patch region SEG, QC pictures, output layout."""

from .layout import (
    SEG_FILE_NAME,
    SR_FILE_NAME,
    ExportError,
    atomic_write_dataset,
    derive_uid,
    dicom_output_dir,
    safe_file_stem,
)
from .patch_seg import PatchRegionSeg, build_patch_region_seg, cube_mask, write_seg
from .qc import render_patch_image, write_qc_index
from .sr import build_feature_sr, write_sr

__all__ = [
    "SEG_FILE_NAME",
    "SR_FILE_NAME",
    "ExportError",
    "PatchRegionSeg",
    "atomic_write_dataset",
    "build_feature_sr",
    "build_patch_region_seg",
    "cube_mask",
    "derive_uid",
    "dicom_output_dir",
    "render_patch_image",
    "safe_file_stem",
    "write_qc_index",
    "write_seg",
    "write_sr",
]
