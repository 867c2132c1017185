"""The whole chain in one readable place:

    import (plan cases) → seeds → 50 mm patches → encoder → export

Each case (a CT and its lesions) is processed on its own: one broken case, file or lesion is
recorded with a reason and never stops the others. The encoder is loaded once per run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from . import __version__
from .batch.progress import NoProgress, Progress
from .batch.store import CaseRecord, CaseStore, failure_to_json, fingerprint, shard_of
from .config import RunConfig
from .dicom.ct import CtSeries, assemble_ct, decode_slices
from .dicom.index import InstanceKind, InstanceRecord, index_folder
from .dicom.rtstruct import list_rois, read_rtstruct, roi_mask_on_ct, roi_point, select_rois
from .dicom.seg import read_seg, segment_mask_on_ct, select_segments
from .errors import CaseError, DicomImportError, FmcibError, SeedError, SegmentationError
from .export.qc import write_qc_index
from .export.tables import write_failures_csv, write_features_csv, write_json
from .image_io import read_image, read_mask
from .model.extractor import FeatureExtractor
from .model.heads import LinearHead
from .model.weights import LoadedWeights, read_weights, resolve_weights, sha256_file
from .patch import extract_patch, read_window
from .plan import Case, DicomSegCase, ImageMaskCase, Plan, SeedsCase, plan
from .records import CaseFailure, Lesion, LesionResult, LesionStatus, Patch, SeedPoint, SeedSource, Volume
from .seeds.geometry import centre_of_mass_lps, check_seed_in_volume, seed_inside_mask

log = logging.getLogger(__name__)

#: Called after each case with its outcome; returns the files it wrote (exporters hook in
#: here). A raised FmcibError is recorded as a failure of that case.
CaseHook = Callable[[Case, "CaseOutcome"], Sequence[Path]]


@dataclass(frozen=True, eq=False)
class CaseOutcome:
    """What one case produced."""

    case: Case
    results: tuple[LesionResult, ...]
    failures: tuple[CaseFailure, ...]
    ct: CtSeries | None = None
    volume: Volume | None = None
    seconds: float = 0.0


@dataclass(eq=False)
class RunReport:
    """Everything a run produced (the content of ``run.json``)."""

    config: RunConfig
    weights_sha256: str = ""
    weights_name: str = ""
    results: list[LesionResult] = field(default_factory=list)
    failures: list[CaseFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    case_seconds: dict[str, float] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    cases_skipped: int = 0
    interrupted: str = ""

    @property
    def n_ok(self) -> int:
        return sum(r.status is LesionStatus.OK for r in self.results)

    @property
    def n_failed(self) -> int:
        return sum(r.status is LesionStatus.FAILED for r in self.results) + sum(f.kind == "case" for f in self.failures)

    @property
    def exit_code(self) -> int:
        """0 when every lesion and case succeeded, 1 when any failed, 130 when interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.n_failed else 0


def _failure(case_id: str, e: Exception, paths: Sequence[str] = ()) -> CaseFailure:
    log.error("%s: %s", case_id, e)
    return CaseFailure(case_id=case_id, reason=str(e), paths=tuple(paths), error_type=type(e).__name__)


def load_image(path: Path, seeds: Sequence[SeedPoint] = ()) -> tuple[Volume, CtSeries | None]:
    """An image file, or a folder holding a DICOM CT series, as a Volume in HU.

    A folder with several CT series (a study) is resolved by geometry: the one series whose
    extent holds every seed is used; none or several is an error listing the candidates.
    """
    if path.is_file():
        try:
            return read_image(path), None
        except (ValueError, FileNotFoundError) as e:
            raise DicomImportError(str(e)) from e
    if not path.is_dir():
        raise DicomImportError(f"image {path} does not exist")
    index = index_folder(path)
    series = index.by_series(InstanceKind.CT)
    if not series:
        raise DicomImportError(
            f"{path} holds no CT series; a seeds CSV image_path must name an image file or a "
            "folder with a DICOM CT series"
        )
    if len(series) == 1:
        ct = assemble_ct(next(iter(series.values())))
        return ct.volume, ct
    extents = {uid: series_extent_lps(recs) for uid, recs in series.items()}
    holding = [
        uid
        for uid, (lo, hi) in extents.items()
        if seeds and all(np.all(s.as_array() >= lo - 1e-3) and np.all(s.as_array() <= hi + 1e-3) for s in seeds)
    ]
    if len(holding) != 1:
        listing = "; ".join(
            f"{uid} (LPS {np.round(lo, 1).tolist()}..{np.round(hi, 1).tolist()} mm)"
            for uid, (lo, hi) in extents.items()
        )
        raise DicomImportError(
            f"{path} holds {len(series)} CT series and {len(holding) or 'none'} of them contain(s) every seed of "
            f"this image: {listing}. Point image_path at the folder of one series."
        )
    log.info("%s: CT series %s chosen: the only one whose extent holds the seeds", path, holding[0])
    ct = assemble_ct(series[holding[0]])
    return ct.volume, ct


def series_extent_lps(records: Sequence[InstanceRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (min, max) in LPS mm of a single-frame series' voxel centres, from
    headers only (ImagePositionPatient, ImageOrientationPatient, PixelSpacing, Rows, Columns)."""
    pts = []
    for rec in records:
        ds = pydicom.dcmread(rec.path, stop_before_pixels=True)
        try:
            ipp = np.array([float(v) for v in ds.ImagePositionPatient])
            iop = np.array([float(v) for v in ds.ImageOrientationPatient])
            dr, dc = (float(v) for v in ds.PixelSpacing)
            rows, cols = int(ds.Rows), int(ds.Columns)
        except (AttributeError, TypeError, ValueError) as e:
            raise DicomImportError(f"{rec.path}: geometry tags missing or malformed ({e})") from e
        for i in (0, cols - 1):
            for j in (0, rows - 1):
                pts.append(ipp + iop[:3] * dc * i + iop[3:] * dr * j)
    arr = np.asarray(pts)
    return arr.min(axis=0), arr.max(axis=0)


def lesions_from_segs(
    case: DicomSegCase, ct: CtSeries, wanted: Sequence[str]
) -> tuple[list[Lesion], list[CaseFailure]]:
    """One lesion per selected segment of every SEG (and ROI of every RTSTRUCT) of the case,
    seeded at its centre of mass on the CT grid."""
    lesions: list[Lesion] = []
    failures: list[CaseFailure] = []
    for rec in case.segs:
        if rec.kind is InstanceKind.RTSTRUCT:
            found, failed = lesions_from_rtstruct(rec, ct, wanted)
            lesions += found
            failures += failed
            continue
        try:
            seg = read_seg(rec.path)
        except SegmentationError as e:
            failures.append(_failure(f"SEG {rec.sop_instance_uid}", e, [str(rec.path)]))
            continue
        chosen = select_segments(seg, wanted)
        if not chosen:
            failures.append(_nothing_selected(rec, [f"{s.number}:{s.label}" for s in seg.segments], wanted))
            continue
        for info in chosen:
            lid = f"{ct.series_instance_uid}/{seg.sop_instance_uid}/{info.number}"
            try:
                mask = segment_mask_on_ct(seg, info.number, ct)
                seed = centre_of_mass_lps(mask, ct.volume, f"SEG {rec.path} segment {info.number} ({info.label})")
            except CaseError as e:
                failures.append(_failure(lid, e, [str(rec.path)]))
                continue
            lesions.append(
                _dicom_lesion(
                    ct,
                    lid,
                    seed,
                    SeedSource.SEGMENT_CENTROID,
                    seed_inside_mask(seed, mask, ct.volume),
                    info.number,
                    info.label,
                    seg_sop_instance_uid=seg.sop_instance_uid,
                    finding_type=info.property_type,
                    finding_site=info.anatomic_region,
                )
            )
    return lesions, failures


def _dicom_lesion(
    ct: CtSeries,
    lesion_id: str,
    seed: SeedPoint,
    source: SeedSource,
    inside: bool | None,
    number: int,
    label: str,
    **codes_and_refs: Any,
) -> Lesion:
    """A lesion of a DICOM CT series (its study, series and frame of reference filled in)."""
    return Lesion(
        lesion_id=lesion_id,
        seed=seed,
        seed_source=source,
        seed_inside_mask=inside,
        study_instance_uid=ct.study_instance_uid,
        series_instance_uid=ct.series_instance_uid,
        frame_of_reference_uid=ct.frame_of_reference_uid,
        segment_number=number,
        segment_label=label,
        **codes_and_refs,
    )


def _nothing_selected(rec: InstanceRecord, available: Sequence[str], wanted: Sequence[str]) -> CaseFailure:
    return CaseFailure(
        case_id=f"{rec.kind.value} {rec.sop_instance_uid}",
        kind="file",
        error_type="SegmentationError",
        reason=f"{rec.kind.value} {rec.path}: none of its segments/ROIs ({', '.join(available)}) matches "
        f"--segments {', '.join(wanted)}",
        paths=(str(rec.path),),
    )


def lesions_from_rtstruct(
    rec: InstanceRecord, ct: CtSeries, wanted: Sequence[str]
) -> tuple[list[Lesion], list[CaseFailure]]:
    """One lesion per selected ROI: the centre of mass of its contours rasterised on the CT
    grid, or its single POINT contour."""
    try:
        rt = read_rtstruct(rec.path)
    except SegmentationError as e:
        return [], [_failure(f"RTSTRUCT {rec.sop_instance_uid}", e, [str(rec.path)])]
    chosen = select_rois(rt, wanted)
    if not chosen:
        return [], [_nothing_selected(rec, [f"{r.number}:{r.name}" for r in list_rois(rt)], wanted)]
    lesions: list[Lesion] = []
    failures: list[CaseFailure] = []
    for info in chosen:
        lid = f"{ct.series_instance_uid}/{rt.sop_instance_uid}/{info.number}"
        try:
            point = roi_point(rt, info.number)
            inside: bool | None = None
            if point is None:
                mask = roi_mask_on_ct(rt, info.number, ct)
                seed = centre_of_mass_lps(mask, ct.volume, f"RTSTRUCT {rec.path} ROI {info.number} ({info.name})")
                inside = seed_inside_mask(seed, mask, ct.volume)
                source = SeedSource.ROI_CENTROID
            else:
                seed, source = point, SeedSource.ROI_POINT
        except CaseError as e:
            failures.append(_failure(lid, e, [str(rec.path)]))
            continue
        lesions.append(_dicom_lesion(ct, lid, seed, source, inside, info.number, info.name))
    return lesions, failures


def lesions_from_mask(case: ImageMaskCase, volume: Volume) -> tuple[list[Lesion], list[CaseFailure]]:
    """One lesion per non-zero label of a mask file."""
    try:
        labels = read_mask(case.mask, like=volume)
    except (CaseError, ValueError, FileNotFoundError) as e:
        return [], [_failure(case.case_id, e, [str(case.mask)])]
    lesions = []
    for value in (int(v) for v in np.unique(labels) if v != 0):
        mask = labels == value
        seed = centre_of_mass_lps(mask, volume, f"{case.mask} label {value}")
        lesions.append(
            Lesion(
                lesion_id=f"{case.image.name}#label{value}",
                seed=seed,
                seed_source=SeedSource.MASK_CENTROID,
                seed_inside_mask=seed_inside_mask(seed, mask, volume),
                segment_number=value,
                segment_label=f"label {value}",
                image_path=str(case.image),
                mask_path=str(case.mask),
            )
        )
    if not lesions:
        return [], [
            CaseFailure(
                case_id=case.case_id,
                error_type="SegmentationError",
                paths=(str(case.mask),),
                reason=f"mask {case.mask} has no non-zero label: nothing to measure",
            )
        ]
    return lesions, []


def lesions_from_rows(case: SeedsCase, ct: CtSeries | None) -> list[Lesion]:
    """One lesion per seed row of the case."""
    return [
        Lesion(
            lesion_id=f"{case.image.name}:row{row.row_number}",
            seed=row.seed,
            seed_source=SeedSource.USER,
            image_path=str(case.image),
            passthrough=row.passthrough,
            study_instance_uid=ct.study_instance_uid if ct else None,
            series_instance_uid=ct.series_instance_uid if ct else None,
            frame_of_reference_uid=ct.frame_of_reference_uid if ct else None,
        )
        for row in case.rows
    ]


def predictions(heads: Sequence[LinearHead], features: np.ndarray) -> list[tuple[tuple[str, float], ...]]:
    """Each head's output per row of ``features`` (N, 4096): binary heads give one value
    named after the head, multi-class heads one value per class (``<head>__<class>``)."""
    per_row: list[list[tuple[str, float]]] = [[] for _ in range(len(features))]
    for head in heads:
        p = head.predict(features)
        for i in range(len(features)):
            if p.ndim == 1:
                per_row[i].append((head.name, float(p[i])))
            else:
                per_row[i] += [(f"{head.name}__{c}", float(v)) for c, v in zip(head.class_names, p[i], strict=True)]
    return [tuple(r) for r in per_row]


def slices_needed(volume: Volume, seeds: Sequence[SeedPoint]) -> set[int]:
    """The k indices (slices) of ``volume`` that the patches of ``seeds`` read, from geometry
    alone (:func:`mhub_fmcib.patch.read_window`); seeds outside the volume need none (they
    fail in :func:`measure`)."""
    out: set[int] = set()
    for seed in seeds:
        try:
            check_seed_in_volume(seed, volume)
            window = read_window(volume, seed)
        except CaseError:
            continue
        out.update(range(window[2].start, window[2].stop))
    return out


def measure(
    lesions: Sequence[Lesion], volume: Volume, extractor: FeatureExtractor, heads: Sequence[LinearHead] = ()
) -> list[LesionResult]:
    """Patches for every lesion, then features in batches, then heads. A bad seed fails only
    its lesion."""
    results: dict[int, LesionResult] = {}
    todo: list[tuple[int, Patch]] = []
    for i, les in enumerate(lesions):
        try:
            check_seed_in_volume(les.seed, volume)
            patch = extract_patch(volume, les.seed)
            if np.isnan(patch.array).any():
                raise SeedError(
                    f"the 50 mm patch around {les.seed} holds NaN values: the image has NaN voxels there "
                    "(or, for a DICOM CT, the patch read slices that were not decoded, which is a bug: "
                    "please report it). Replace NaN voxels in the image."
                )
            todo.append((i, patch))
        except CaseError as e:
            log.error("%s: %s", les.lesion_id, e)
            results[i] = LesionResult(lesion=les, status=LesionStatus.FAILED, error=str(e))
    if todo:
        feats = extractor.extract(np.stack([p.array for _, p in todo]))
        preds = predictions(heads, feats)
        for (i, patch), f, pr in zip(todo, feats, preds, strict=True):
            results[i] = LesionResult(
                lesion=lesions[i], status=LesionStatus.OK, features=f, patch=patch, predictions=pr
            )
    return [results[i] for i in range(len(lesions))]


def process_case(
    case: Case, config: RunConfig, extractor: FeatureExtractor, heads: Sequence[LinearHead] = ()
) -> CaseOutcome:
    """Load one case's image, form its lesions, measure them. Never raises a CaseError."""
    t0 = time.perf_counter()
    ct: CtSeries | None = None
    volume: Volume | None = None
    try:
        if isinstance(case, DicomSegCase):
            # Geometry first; then only the CT slices the lesions' patches read are decoded.
            ct = assemble_ct(case.ct, decode=False)
            lesions, failures = lesions_from_segs(case, ct, config.segments)
            ct = decode_slices(ct, slices_needed(ct.volume, [les.seed for les in lesions]))
            volume = ct.volume
            failures += [
                CaseFailure(
                    case_id=case.case_id,
                    reason=f"{path}: {why}",
                    paths=(path,),
                    kind="file",
                    error_type="DicomImportError",
                )
                for path, why in ct.dropped
            ]
        elif isinstance(case, ImageMaskCase):
            volume, _ = load_image(case.image)
            lesions, failures = lesions_from_mask(case, volume)
        else:
            volume, ct = load_image(case.image, [r.seed for r in case.rows])
            lesions, failures = lesions_from_rows(case, ct), []
        results = measure(lesions, volume, extractor, heads)
    except CaseError as e:
        paths = [str(r.path) for r in case.ct[:3]] if isinstance(case, DicomSegCase) else [str(case.image)]
        return CaseOutcome(
            case=case, results=(), failures=(_failure(case.case_id, e, paths),), seconds=time.perf_counter() - t0
        )
    return CaseOutcome(
        case=case,
        results=tuple(results),
        failures=tuple(failures),
        ct=ct,
        volume=volume,
        seconds=time.perf_counter() - t0,
    )


def load_extractor(config: RunConfig, env: Mapping[str, str]) -> FeatureExtractor:
    """Resolve, check and load the weights once for the run."""
    loc = resolve_weights(config.weights, env)
    weights: LoadedWeights = read_weights(loc.path)
    log.info("weights %s (%s), sha256 %s", loc.path, loc.found_by, weights.sha256)
    return FeatureExtractor(weights, device=config.device, batch_size=config.batch_size, optimize=config.optimize_cpu)


class StopFlag:
    """Set by a signal handler (SIGINT/SIGTERM) to stop after the case in flight."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def request(self, name: str) -> None:
        self.requested = True
        self.signal_name = name


def case_paths(case: Case) -> list[Path]:
    """The input files a case reads (for its fingerprint)."""
    if isinstance(case, DicomSegCase):
        return [r.path for r in (*case.ct, *case.segs)]
    if isinstance(case, ImageMaskCase):
        return [case.image, case.mask]
    if case.image.is_dir():
        return sorted(p for p in case.image.rglob("*") if p.is_file())
    return [case.image]


def case_settings(case: Case, config: RunConfig) -> list[str]:
    """Settings that change a case's results (part of its fingerprint)."""
    out = [
        f"segments={','.join(config.segments)}",
        f"sources={','.join(config.segmentation_sources)}",
        f"exports={config.export_sr},{config.export_seg},{config.export_qc}",
    ]
    out += [f"head={h}:{sha256_file(h) if Path(h).is_file() else 'missing'}" for h in config.heads]
    if isinstance(case, SeedsCase):
        out += [f"row{r.row_number}={r.seed.x},{r.seed.y},{r.seed.z},{r.passthrough}" for r in case.rows]
    return out


def run(
    config: RunConfig,
    env: Mapping[str, str],
    *,
    extractor: FeatureExtractor | None = None,
    hooks: Sequence[CaseHook] | None = None,
    progress: Progress | None = None,
    stop: StopFlag | None = None,
) -> RunReport:
    """Run the whole chain and write ``features.csv``, ``failures.csv`` and ``run.json``
    (from the per-case records in ``OUTPUT/cases/``) into ``config.output``.

    Raises:
        WeightsError, ConfigError: before any case is processed (nothing is written).
    """
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    progress = progress or NoProgress()
    report = RunReport(config=config)
    t0 = time.perf_counter()
    extractor = extractor or load_extractor(config, env)
    report.weights_sha256 = extractor.weights.sha256
    report.weights_name = extractor.weights.path.name
    report.timings["load_model_s"] = time.perf_counter() - t0

    if hooks is None:
        from .export.hooks import make_hooks
        from .provenance import collect_provenance

        hooks = make_hooks(config, collect_provenance(report.weights_sha256, report.weights_name))
    heads = [LinearHead.load(h) for h in config.heads]
    for h in heads:
        if h.weights_sha256 and h.weights_sha256 != report.weights_sha256:
            report.notes.append(
                f"head {h.name} was fitted on features of weights {h.weights_sha256[:12]}…, "
                f"not the weights of this run ({report.weights_sha256[:12]}…)"
            )
            log.warning(report.notes[-1])
    config.output.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    the_plan: Plan = plan(config, workers=config.index_workers, index_db=config.output / "index.sqlite")
    report.timings["plan_s"] = time.perf_counter() - t0
    cases = list(the_plan.cases)
    if config.shard is not None:
        i, n = config.shard
        cases = [c for c in cases if shard_of(c.case_id, n) == i]
        report.notes.append(f"shard {i}/{n}: {len(cases)} of {len(the_plan.cases)} cases")
    if config.shard is None or config.shard[0] == 0:  # planning problems are reported once
        report.failures.extend(the_plan.failures)
        if the_plan.index is not None:
            report.skipped_files = [
                {"path": str(s.path), "reason": s.reason.value, "detail": s.detail} for s in the_plan.index.skipped
            ]
    report.notes.extend(the_plan.notes)
    if not cases and not the_plan.failures:
        report.notes.append(f"no case to process in {config.input}")
        log.warning("no case to process in %s (no CT series with a SEG, no seeds)", config.input)

    store = CaseStore(config.output)
    store.clean_temporaries()
    records: list[CaseRecord] = []
    progress.start(len(cases))
    t0 = time.perf_counter()
    for case in cases:
        if stop is not None and stop.requested:
            report.interrupted = stop.signal_name or "stop requested"
            report.notes.append(f"interrupted by {report.interrupted}: {len(cases) - len(records)} case(s) not run")
            break
        fp = fingerprint(case_paths(case), report.weights_sha256, __version__, case_settings(case, config))
        old = store.load(case.case_id) if config.resume else None
        if old is not None and old.complete and old.fingerprint == fp:
            records.append(old)
            report.cases_skipped += 1
            progress.case_done(case.case_id, len(old.results), failed=False, skipped=True)
            continue
        outcome = process_case(case, config, extractor, heads)
        failures = list(outcome.failures)
        outputs: list[str] = []
        for hook in hooks:
            try:
                written = hook(case, outcome)
                outputs += [str(p) for p in written]
            except FmcibError as e:
                failures.append(_failure(case.case_id, e))
        # patches are not kept past their case: memory stays bounded by one series
        kept = tuple(replace(r, patch=None) for r in outcome.results)
        rec = CaseRecord(
            case_id=case.case_id,
            fingerprint=fp,
            results=kept,
            failures=tuple(failures),
            seconds=outcome.seconds,
            outputs=tuple(outputs),
        )
        store.save(rec)
        records.append(rec)
        progress.case_done(case.case_id, len(outcome.results), failed=not rec.complete, skipped=False)
    progress.close()
    report.timings["cases_s"] = time.perf_counter() - t0
    for rec in records:
        report.results.extend(rec.results)
        report.failures.extend(rec.failures)
        report.case_seconds[rec.case_id] = rec.seconds
        report.outputs.extend(rec.outputs)
    if config.export_qc:
        report.outputs.append(str(write_qc_index(config.output, report.results)))
    write_run_outputs(report, started, t_start)
    return report


def write_run_outputs(report: RunReport, started: str, t_start: float) -> None:
    """``features.csv``, ``failures.csv`` and ``run.json`` of a report (each atomic)."""
    out = report.config.output
    n = write_features_csv(out / "features.csv", report.results, report.weights_sha256, __version__)
    write_failures_csv(out / "failures.csv", report.results, report.failures)
    report.outputs = [str(out / "features.csv"), str(out / "failures.csv"), *report.outputs]
    report.timings["total_s"] = time.perf_counter() - t_start
    write_json(out / "run.json", run_json(report, started, n))


def run_json(report: RunReport, started: str, n_rows: int) -> dict[str, object]:
    """The ``run.json`` document."""
    from .provenance import collect_provenance

    cfg = report.config
    return {
        "software": collect_provenance(report.weights_sha256, report.weights_name).as_dict(),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": {
            "input": str(cfg.input),
            "input_kind": cfg.input_kind.value,
            "mask": str(cfg.mask) if cfg.mask else None,
            "segments": list(cfg.segments),
            "workflow": cfg.workflow,
            "device": cfg.device,
            "batch_size": cfg.batch_size,
            "heads": [str(h) for h in cfg.heads],
            "shard": list(cfg.shard) if cfg.shard else None,
        },
        "summary": {
            "lesions_ok": report.n_ok,
            "lesions_failed": sum(r.status is LesionStatus.FAILED for r in report.results),
            "case_or_file_failures": len(report.failures),
            "features_rows": n_rows,
            "skipped_files": len(report.skipped_files),
            "cases_reused_from_earlier_run": report.cases_skipped,
            "interrupted": report.interrupted,
            "exit_code": report.exit_code,
        },
        "lesions": [
            {
                "lesion_id": r.lesion.lesion_id,
                "status": r.status.value,
                "error": r.error,
                "seed_lps_mm": [r.lesion.seed.x, r.lesion.seed.y, r.lesion.seed.z],
                "seed_source": r.lesion.seed_source.value,
                "seed_inside_mask": r.lesion.seed_inside_mask,
                "study_instance_uid": r.lesion.study_instance_uid,
                "series_instance_uid": r.lesion.series_instance_uid,
                "seg_sop_instance_uid": r.lesion.seg_sop_instance_uid,
                "segment_number": r.lesion.segment_number,
                "segment_label": r.lesion.segment_label,
                "image_path": r.lesion.image_path,
                "mask_path": r.lesion.mask_path,
                "predictions": dict(r.predictions),
            }
            for r in report.results
        ],
        "errors": [failure_to_json(f) for f in report.failures],
        "notes": report.notes,
        "skipped_files": report.skipped_files,
        "timings_s": report.timings,
        "case_seconds": report.case_seconds,
        "outputs": report.outputs,
    }
