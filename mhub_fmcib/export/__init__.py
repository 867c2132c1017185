"""DICOM and QC outputs: TID 1500 SR, patch region SEG, QC pictures, output layout.

The names below are loaded on first use (PEP 562): importing ``mhub_fmcib.export.atomic``
or ``.tables`` does not import highdicom and the SR/SEG builders (~1-2 s), which a run
without DICOM outputs never needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "SEG_FILE_NAME": "layout",
    "SR_FILE_NAME": "layout",
    "ExportError": "layout",
    "atomic_write_dataset": "layout",
    "derive_uid": "layout",
    "dicom_output_dir": "layout",
    "safe_file_stem": "layout",
    "PatchRegionSeg": "patch_seg",
    "build_patch_region_seg": "patch_seg",
    "build_patch_region_segs": "patch_seg",
    "iter_patch_region_segs": "patch_seg",
    "cube_mask": "patch_seg",
    "write_seg": "patch_seg",
    "render_patch_image": "qc",
    "write_qc_index": "qc",
    "build_feature_sr": "sr",
    "build_feature_srs": "sr",
    "iter_feature_srs": "sr",
    "SrPart": "sr",
    "sr_file_name": "layout",
    "write_sr": "sr",
    "write_srs": "sr",
    "write_feature_srs": "sr",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
