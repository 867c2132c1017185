"""Per-case exporters hooked into the pipeline: DICOM SR (TID 1500), the patch-region SEG
and QC pictures. Each returns the files it wrote; a failure is recorded for its case only.
They run while the case's CT, patches and segmentation masks are in memory (the pipeline
drops them after the case). A demonstration run (random-initialised weights,
``Provenance.demonstration``) is marked in each of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Precision, RunConfig
from ..dicom.ct import CtSeries
from ..dicom.read import read_dataset
from ..plan import Case, DicomSegCase
from ..provenance import Provenance
from ..records import CaseFailure, LesionMask, LesionResult, LesionStatus, Volume
from .atomic import write_each
from .layout import ExportError

if TYPE_CHECKING:
    import pydicom

    from .patch_seg import PatchRegionSeg

# The SR and SEG builders (highdicom, ~1 s to import) and the QC pictures (scipy.ndimage,
# ~0.4 s) are imported by the hooks that use them, so a run without them never loads them.


@dataclass(frozen=True, eq=False)
class CaseOutcome:
    """What one case produced (the input of every hook).

    ``masks``: the segmentations (SEG segment, RTSTRUCT ROI, mask label) the lesions were
    seeded from, cropped on the CT grid (none for seed points): the QC outlines.
    ``warnings``: for ``run.json`` (an implausible HU range).
    """

    case: Case
    results: tuple[LesionResult, ...]
    failures: tuple[CaseFailure, ...]
    ct: CtSeries | None = None
    volume: Volume | None = None
    seconds: float = 0.0
    masks: tuple[LesionMask, ...] = ()
    warnings: tuple[str, ...] = ()


#: Called after each case with its outcome; returns the files it wrote (exporters hook in
#: here). A raised FmcibError is recorded as a failure of that case.
CaseHook = Callable[[Case, CaseOutcome], Sequence[Path]]

#: What highdicom and pydicom raise when an input header holds a value they refuse to copy
#: into an output (a PatientName that is no person name, a UID that is a path, ...).
_HEADER_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError)


def _header_error(what: str, series_uid: str, e: Exception, flag: str) -> ExportError:
    return ExportError(
        f"the {what} of CT series {series_uid} cannot be built from its input headers "
        f"({type(e).__name__}: {e}); fix those headers (PatientName, UIDs, ...) or run with {flag}. "
        "Its features are in features.csv."
    )


def _check_frame_of_reference(what: str, ct: CtSeries, flag: str) -> None:
    """A DICOM output placed on the CT needs its FrameOfReferenceUID (type 1 in SR and SEG)."""
    if not ct.frame_of_reference_uid:
        raise ExportError(
            f"the {what} of CT series {ct.series_instance_uid} cannot be written: the CT has no "
            f"FrameOfReferenceUID, which a DICOM {what} must name. Run with {flag} to skip it; the "
            "features are in features.csv."
        )


def make_hooks(config: RunConfig, provenance: Provenance) -> list[CaseHook]:
    """The exporters ``config`` asks for (SR and SEG need a DICOM CT)."""
    hooks: list[CaseHook] = []
    if config.export_sr:
        hooks.append(
            lambda case, outcome: export_sr(
                case, outcome, config.output, provenance, config.sr_max_lesions, config.precision
            )
        )
    if config.export_seg:
        hooks.append(lambda case, outcome: export_patch_seg(outcome, config.output, provenance))
    if config.export_qc:
        hooks.append(lambda case, outcome: export_qc(outcome, config.output, provenance.demonstration))
    return hooks


def _ok(outcome: CaseOutcome) -> bool:
    return outcome.ct is not None and any(r.status is LesionStatus.OK for r in outcome.results)


def export_sr(
    case: Case,
    outcome: CaseOutcome,
    output: Path,
    provenance: Provenance,
    max_lesions: int,
    precision: Precision = Precision.FP32,
) -> Sequence[Path]:
    """The TID 1500 SR(s) of the case's CT series (when it has an OK lesion): one, or one
    per ``max_lesions`` lesions (:func:`.sr.iter_feature_srs`), each written as soon as it
    is built (:func:`.sr.write_feature_srs`); ``precision`` is recorded in their algorithm
    parameters."""
    if not _ok(outcome) or outcome.ct is None:
        return []
    from .sr import iter_feature_srs, write_feature_srs

    _check_frame_of_reference("SR", outcome.ct, "--no-sr")
    segs: dict[str, pydicom.Dataset] = {}
    if isinstance(case, DicomSegCase):
        for rec in case.segs:
            segs[rec.sop_instance_uid] = read_dataset(rec.path, stop_before_pixels=True)
    try:
        parts = iter_feature_srs(
            outcome.ct.datasets,
            outcome.results,
            provenance,
            segs,
            max_lesions=max_lesions,
            demonstration=provenance.demonstration,
            precision=precision,
        )
        return write_feature_srs(parts, output)
    except _HEADER_ERRORS as e:
        raise _header_error("SR", outcome.ct.series_instance_uid, e, "--no-sr") from e


def export_patch_seg(outcome: CaseOutcome, output: Path, provenance: Provenance) -> Sequence[Path]:
    """The "what the model saw" SEG: one 50 mm cube per OK lesion on the CT grid; several
    SEGs where the cubes overlap too much for one (:func:`.patch_seg.iter_patch_region_segs`),
    each written as soon as it is built (all or none: :func:`.atomic.write_each`)."""
    if not _ok(outcome) or outcome.ct is None:
        return []
    from .patch_seg import iter_patch_region_segs

    _check_frame_of_reference("patch-region SEG", outcome.ct, "--no-seg")
    series_uid = outcome.ct.series_instance_uid
    try:
        parts = iter_patch_region_segs(
            outcome.ct.datasets, outcome.ct.volume, outcome.results, provenance, demonstration=provenance.demonstration
        )
        return write_each(parts, lambda part: _write_seg_part(part, output, series_uid))
    except _HEADER_ERRORS as e:
        raise _header_error("patch-region SEG", outcome.ct.series_instance_uid, e, "--no-seg") from e


def _write_seg_part(part: PatchRegionSeg, output: Path, series_uid: str) -> Path | None:
    """Write one patch-region SEG (none when no lesion had a cube on the CT grid)."""
    from .patch_seg import write_seg

    return None if part.dataset is None else write_seg(part.dataset, output, series_uid, part.file_name)


def export_qc(outcome: CaseOutcome, output: Path, demonstration: bool = False) -> Sequence[Path]:
    """The case's QC files (:func:`mhub_fmcib.export.qc.write_case_qc`): a picture per
    measured lesion (patch planes and the CT slice through the seed, outline of its
    segmentation) and a row file per lesion, from which ``qc/index.html`` is built at the
    end of the run (also for cases reused by ``--resume``)."""
    from .qc import case_from_ct, write_case_qc

    if not outcome.results:
        return []
    volume = outcome.ct.volume if outcome.ct is not None else outcome.volume
    if volume is None:
        return write_case_qc(output, outcome.results, None)
    masks = {m.lesion_id: m for m in outcome.masks}
    headers = outcome.ct.datasets if outcome.ct is not None else ()
    slabs = outcome.ct.slabs if outcome.ct is not None else ()
    return write_case_qc(output, outcome.results, case_from_ct(volume, headers, masks, demonstration, slabs))
