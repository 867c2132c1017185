"""Plan the work of a run: which cases (a CT image and its seeds) there are.

A case is the unit of work and of failure: a CT series with the SEGs that reference it,
an image file with its mask, or an image (file or DICOM series folder) with seed rows.
Planning reads headers only; pixels are read when a case is processed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from .config import InputKind, RunConfig
from .dicom.calibration import calibration_warning
from .dicom.index import DicomIndex, InstanceKind, InstanceRecord, index_folder, uids_were_derived
from .errors import SeedError, SegmentationError
from .records import CaseFailure
from .seeds.from_files import SeedRow, read_seeds_csv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DicomSegCase:
    """A CT series and the SEG instances that belong to it."""

    case_id: str
    ct: tuple[InstanceRecord, ...]
    segs: tuple[InstanceRecord, ...]
    #: SOPInstanceUIDs of the SEG/RTSTRUCT instances placed by Frame of Reference (their
    #: referenced series is absent); the others name this CT series
    matched_by_frame_of_reference: frozenset[str] = frozenset()

    def seg_match(self, sop_instance_uid: str) -> Literal["referenced_series", "frame_of_reference"]:
        """How the SEG/RTSTRUCT ``sop_instance_uid`` was matched to this case's CT series."""
        if sop_instance_uid in self.matched_by_frame_of_reference:
            return "frame_of_reference"
        return "referenced_series"

    def input_files(self) -> list[Path]:
        """The files the case reads (its fingerprint covers them)."""
        return [r.path for r in (*self.ct, *self.segs)]

    def failure_paths(self) -> list[str]:
        """The paths named when the whole case fails (its first CT files)."""
        return [str(r.path) for r in self.ct[:3]]

    def settings(self) -> list[str]:
        """Case-specific settings that change its results (none beyond the run's)."""
        return []


@dataclass(frozen=True)
class ImageMaskCase:
    """An image file and its label mask file (each non-zero label is a lesion)."""

    case_id: str
    image: Path
    mask: Path

    def input_files(self) -> list[Path]:
        return [self.image, self.mask]

    def failure_paths(self) -> list[str]:
        return [str(self.image)]

    def settings(self) -> list[str]:
        return []


@dataclass(frozen=True)
class SeedsCase:
    """An image (file, or folder with one DICOM series) and seed rows for it."""

    case_id: str
    image: Path
    rows: tuple[SeedRow, ...]

    def input_files(self) -> list[Path]:
        if self.image.is_dir():
            return sorted(p for p in self.image.rglob("*") if p.is_file())
        return [self.image]

    def failure_paths(self) -> list[str]:
        return [str(self.image)]

    def settings(self) -> list[str]:
        """The seed rows (a changed seed re-runs the case)."""
        return [f"row{r.row_number}={r.seed.x},{r.seed.y},{r.seed.z},{r.passthrough}" for r in self.rows]


Case = DicomSegCase | ImageMaskCase | SeedsCase


@dataclass(frozen=True)
class Plan:
    """Cases to process, problems found while planning, and the DICOM index (if any)."""

    cases: tuple[Case, ...]
    failures: tuple[CaseFailure, ...] = ()
    index: DicomIndex | None = None
    notes: tuple[str, ...] = field(default=())
    #: things a person should look at (``run.json`` ``warnings``), e.g. a SEG placed by Frame of Reference
    warnings: tuple[str, ...] = field(default=())


class SegMatches(NamedTuple):
    """SEG/RTSTRUCT instances by CT series UID, those that match none, and the SOPInstanceUIDs
    of those matched by Frame of Reference (rule 2 of :func:`match_segs_to_ct`)."""

    by_ct: dict[str, list[InstanceRecord]]
    failures: list[CaseFailure]
    by_frame_of_reference: frozenset[str]


def match_segs_to_ct(index: DicomIndex, kinds: tuple[InstanceKind, ...] = (InstanceKind.SEG,)) -> SegMatches:
    """Assign every SEG (and/or RTSTRUCT) to one CT series (rules documented in the README):

    1. a CT series named in its referenced series (SEG: ReferencedSeriesSequence;
       RTSTRUCT: RTReferencedSeriesSequence);
    2. otherwise the one CT series of the same study with its Frame of Reference;
    3. otherwise (none, or several candidates) it fails with the candidates listed.
    """
    ct_series = index.by_series(InstanceKind.CT)
    out: dict[str, list[InstanceRecord]] = defaultdict(list)
    failures: list[CaseFailure] = []
    by_for: set[str] = set()
    candidates = sorted((r for k in kinds for r in index.of_kind(k)), key=lambda r: str(r.path))
    for seg in candidates:
        refs = [s for s in seg.referenced_series_uids if s in ct_series]
        if len(refs) == 1:
            out[refs[0]].append(seg)
            continue
        if len(refs) > 1:
            error = SegmentationError(
                f"{seg.kind.value} {seg.path} references several CT series ({', '.join(refs)}); "
                "split it into one SEG per series."
            )
            failures.append(CaseFailure.of(f"{seg.kind.value} {seg.sop_instance_uid}", error, [str(seg.path)]))
            continue
        same_for = [
            uid
            for uid, recs in ct_series.items()
            if seg.frame_of_reference_uid
            and recs[0].frame_of_reference_uid == seg.frame_of_reference_uid
            and recs[0].study_instance_uid == seg.study_instance_uid
        ]
        if len(same_for) == 1:
            log.warning("%s: referenced series absent; matched CT %s by Frame of Reference", seg.path, same_for[0])
            out[same_for[0]].append(seg)
            by_for.add(seg.sop_instance_uid)
            continue
        named = ", ".join(seg.referenced_series_uids) or "none"
        if same_for:
            reason = (
                f"{seg.kind.value} {seg.path} references no CT series in the input (references: {named}) and "
                f"{len(same_for)} CT series share its Frame of Reference ({', '.join(same_for)}); "
                "add the referenced series or remove the others."
            )
        else:
            reason = (
                f"{seg.kind.value} {seg.path} references CT series {named}, which is not in the input; "
                "add that series to the input folder."
            )
        failures.append(
            CaseFailure.of(f"{seg.kind.value} {seg.sop_instance_uid}", SegmentationError(reason), [str(seg.path)])
        )
    return SegMatches(dict(out), failures, frozenset(by_for))


def plan_dicom_folder(
    root: Path, workers: int = 1, index_db: Path | None = None, sources: tuple[str, ...] = ("SEG",)
) -> Plan:
    """Index a DICOM folder (reusing ``index_db`` when given) and form one case per CT
    series that has a segmentation of the kinds in ``sources`` ("SEG", "RTSTRUCT")."""
    if index_db is not None:
        from .dicom.index_db import index_folder_cached

        index, _ = index_folder_cached(root, index_db, workers=workers)
    else:
        index = index_folder(root, workers=workers)
    kinds = tuple(InstanceKind(s) for s in sources)
    ct_series = index.by_series(InstanceKind.CT)
    segs_by_ct, failures, by_for = match_segs_to_ct(index, kinds)
    cases = [
        DicomSegCase(
            case_id=uid,
            ct=tuple(ct_series[uid]),
            segs=tuple(segs_by_ct[uid]),
            matched_by_frame_of_reference=frozenset(r.sop_instance_uid for r in segs_by_ct[uid]) & by_for,
        )
        for uid in sorted(segs_by_ct)
    ]
    warnings = [w for c in cases if (w := calibration_warning(c.ct[0].path, c.case_id)) is not None]
    warnings += [
        f"CT series {c.case_id} ({c.ct[0].path.parent}): its files have blank Study/Series/SOP Instance UIDs; "
        "the series was formed by folder and geometry and the blank UIDs were derived (stable for these files "
        "in this place) for the outputs"
        for c in cases
        if uids_were_derived(c.ct[0].path)
    ]
    warnings += [
        f"{r.kind.value} {r.path} was placed on CT series {c.case_id} by Frame of Reference: the series it "
        f"references ({', '.join(r.referenced_series_uids) or 'none'}) is not in the input"
        for c in cases
        for r in c.segs
        if r.sop_instance_uid in c.matched_by_frame_of_reference
    ]
    what = " or ".join(sources)
    notes = [f"CT series {uid} has no {what}: not processed" for uid in sorted(set(ct_series) - set(segs_by_ct))]
    for n in notes:
        log.info(n)
    for kind in (InstanceKind.SEG, InstanceKind.RTSTRUCT):
        if kind not in kinds and index.of_kind(kind):
            hint = "from_rtstruct" if kind is InstanceKind.RTSTRUCT else "default"
            notes.append(
                f"{len(index.of_kind(kind))} {kind.value} instance(s) not used; the {hint} workflow measures them"
            )
    return Plan(cases=tuple(cases), failures=tuple(failures), index=index, notes=tuple(notes), warnings=tuple(warnings))


def plan_seeds_csv(path: Path) -> Plan:
    """One case per distinct image of a seeds CSV."""
    rows, bad = read_seeds_csv(path)
    by_image: dict[Path, list[SeedRow]] = defaultdict(list)
    for r in rows:
        by_image[r.image].append(r)
    failures = [CaseFailure.of(f"{path.name} row {b.row_number}", SeedError(b.reason), [str(path)]) for b in bad]
    cases = [SeedsCase(case_id=str(img), image=img, rows=tuple(rs)) for img, rs in by_image.items()]
    return Plan(cases=tuple(cases), failures=tuple(failures))


def _skipped_summary(index: DicomIndex) -> str:
    """``"3 not a DICOM file, 1 CT localizer (scout) image"``: the index's skipped files by reason."""
    counts: dict[str, int] = defaultdict(int)
    for s in index.skipped:
        counts[s.reason.value] += 1
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def nothing_to_measure(config: RunConfig, the_plan: Plan) -> str | None:
    """The one line saying why a plan without cases or failures has nothing to measure, and
    what to pass instead; ``None`` when there is work (or a failure to report)."""
    if the_plan.cases or the_plan.failures:
        return None
    where = config.input
    if config.input_kind is InputKind.SEEDS_CSV:
        return f"nothing to measure: seeds CSV {where} has no rows; add rows image_path,coordX,coordY,coordZ (LPS mm)"
    seeds_hint = "or pass seed points with --seeds SEEDS.csv (columns image_path,coordX,coordY,coordZ in LPS mm)"
    index = the_plan.index
    n_ct = len(index.by_series(InstanceKind.CT)) if index is not None else 0
    if n_ct == 0:
        skipped = f" ({_skipped_summary(index)})" if index is not None and index.skipped else ""
        return (
            f"nothing to measure: {where} holds no CT series{skipped}; pass a folder with a DICOM CT series and "
            f"its SEG, an image file with --mask MASK, {seeds_hint}"
        )
    what = " or ".join(config.segmentation_sources)
    rt_hint = ""
    if index is not None and "RTSTRUCT" not in config.segmentation_sources and index.of_kind(InstanceKind.RTSTRUCT):
        rt_hint = " (its RTSTRUCT is measured with --workflow from_rtstruct)"
    return (
        f"nothing to measure: {where} holds {n_ct} CT series but no {what} that belongs to one{rt_hint}; add the "
        f"CT's segmentation, {seeds_hint}"
    )


def plan(config: RunConfig, workers: int = 1, index_db: Path | None = None) -> Plan:
    """The cases of a run, from its configuration."""
    if config.input_kind is InputKind.SEEDS_CSV:
        return plan_seeds_csv(config.input)
    if config.input_kind is InputKind.IMAGE_FILE:
        if config.mask is None:  # RunConfig refuses this; kept for type narrowing
            return Plan(cases=())
        return Plan(cases=(ImageMaskCase(case_id=str(config.input), image=config.input, mask=config.mask),))
    return plan_dicom_folder(config.input, workers=workers, index_db=index_db, sources=config.segmentation_sources)
