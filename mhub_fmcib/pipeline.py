"""The whole chain in one readable place (composition only; each stage lives in its package):

    plan (cases) → import (dicom/) → seeds (seeds/) → 50 mm patches (patch) → model (model/) → export (export/)

Each case (a CT and its lesions) is processed on its own: one broken case, file or lesion is
recorded with a reason and never stops the others. The encoder is loaded once per run.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .batch.diskfull import OutputFullError, disk_full_message, is_disk_full, tree_bytes
from .batch.manifest import RunManifest, input_fingerprint, run_settings
from .batch.progress import NoProgress, Progress
from .batch.stale import StaleKind, StaleMover, kept_outputs, previous_outputs
from .batch.store import CaseRecord, CaseStore, fingerprint, relative_output, shard_of
from .config import RunConfig
from .dicom.calibration import check_rescale
from .dicom.ct import CtSeries, assemble_ct, decode_slices
from .dicom.hu_range import hu_range_of, hu_range_warning
from .dicom.series import load_image
from .errors import CaseError, DicomImportError, FmcibError, NothingSelectedError, NothingToMeasureError, SeedError
from .export.hooks import CaseHook, CaseOutcome, make_hooks
from .export.qc import write_qc_index
from .export.tables import RunReport, write_run_outputs
from .model.device import check_precision, resolve_device
from .model.extractor import FeatureExtractor, extractor_for, nonfinite_reason
from .model.heads import LinearHead, predictions
from .model.weights import read_weights
from .model.weights_file import default_cache_dir, resolve_weights, sha256_file
from .patch import extract_patch, slices_read
from .plan import Case, DicomSegCase, ImageMaskCase, SeedsCase, nothing_to_measure, plan
from .provenance import collect_provenance
from .records import CaseFailure, DicomOrigin, Lesion, LesionMask, LesionResult, LesionStatus, Patch, SeedPoint, Volume
from .seeds.from_dicom import lesions_from_segments
from .seeds.from_files import lesions_from_mask, lesions_from_rows
from .seeds.geometry import check_seed_in_volume

__all__ = ["CaseHook", "CaseOutcome", "RunReport", "StopFlag", "load_extractor", "measure", "process_case", "run"]

log = logging.getLogger(__name__)


# ---- stages 1 + 2: import a case's image and form its lesions (one function per case type)


@dataclass(frozen=True, eq=False)
class Imported:
    """A case's image and lesions, before measuring (``masks``: the lesions' segmentations,
    cropped, for the QC outlines; dropped with the case; ``warnings``: for ``run.json``,
    such as an implausible HU range)."""

    volume: Volume
    ct: CtSeries | None
    lesions: list[Lesion]
    failures: list[CaseFailure]
    masks: tuple[LesionMask, ...] = ()
    warnings: tuple[str, ...] = ()


def import_dicom_seg_case(case: DicomSegCase, config: RunConfig) -> Imported:
    """CT geometry and rescale (a RescaleSlope 0 is refused) first, the lesions of its
    SEG/RTSTRUCT instances, then only the CT slices the lesions' patches read are decoded."""
    ct = assemble_ct(case.ct, decode=False)
    check_rescale(ct)
    lesions, masks, failures = lesions_from_segments(case.segs, ct, config.segments)
    lesions = [with_seg_match(les, case) for les in lesions]
    ct = decode_slices(ct, slices_needed(ct.volume, [les.seed for les in lesions]))
    failures += [
        CaseFailure.of(case.case_id, DicomImportError(f"{path}: {why}"), [path], kind="file")
        for path, why in ct.dropped
    ]
    return Imported(ct.volume, ct, lesions, failures, tuple(masks), hu_warnings(ct.volume, ct, case.case_id))


def hu_warnings(volume: Volume, ct: CtSeries | None, what: str) -> tuple[str, ...]:
    """The warning for an implausible HU range (:mod:`mhub_fmcib.dicom.hu_range`): of the
    decoded slices of a DICOM CT (streamed while decoding), else of the whole image."""
    if ct is not None:
        warning = hu_range_warning(f"CT series {ct.series_instance_uid}", ct.hu_range)
    else:
        warning = hu_range_warning(f"image {what}", hu_range_of(volume.array))
    if warning is not None:
        log.warning("%s", warning)
    return () if warning is None else (warning,)


def with_seg_match(lesion: Lesion, case: DicomSegCase) -> Lesion:
    """``lesion`` with its origin saying how its SEG/RTSTRUCT was matched to the case's CT."""
    o = lesion.origin
    if not isinstance(o, DicomOrigin):
        return lesion
    return replace(lesion, origin=replace(o, seg_match=case.seg_match(o.source_sop_instance_uid)))


def import_image_mask_case(case: ImageMaskCase, config: RunConfig) -> Imported:
    """An image file and one lesion per label of its mask file."""
    volume, _ = load_image(case.image)
    lesions, masks, failures = lesions_from_mask(case.case_id, case.image, case.mask, volume)
    return Imported(volume, None, lesions, failures, tuple(masks), hu_warnings(volume, None, str(case.image)))


def import_seeds_case(case: SeedsCase, config: RunConfig) -> Imported:
    """An image (file or DICOM series folder) and one lesion per seed row."""
    seeds = [r.seed for r in case.rows]
    volume, ct = load_image(case.image, seeds, decode=False)
    if ct is not None:  # a DICOM series: only the slices the patches read
        ct = decode_slices(ct, slices_needed(ct.volume, seeds))
        volume = ct.volume
    lesions = lesions_from_rows(case.image, case.rows, ct)
    return Imported(volume, ct, lesions, [], warnings=hu_warnings(volume, ct, str(case.image)))


#: How each kind of case is imported (stage 1) and seeded (stage 2).
IMPORTERS: Mapping[type, Callable[[Any, RunConfig], Imported]] = {
    DicomSegCase: import_dicom_seg_case,
    ImageMaskCase: import_image_mask_case,
    SeedsCase: import_seeds_case,
}


# ---- stages 3 + 4: patches, then features and head predictions


def slices_needed(volume: Volume, seeds: Sequence[SeedPoint]) -> set[int]:
    """The k indices (slices) of ``volume`` that the patches of ``seeds`` read, from geometry
    alone (:func:`mhub_fmcib.patch.slices_read`); seeds outside the volume need none (they
    fail in :func:`measure`)."""
    return slices_read(volume, seeds)


def patch_of(lesion: Lesion, volume: Volume, slabs: Sequence[Volume] = ()) -> Patch:
    """The 50 mm patch of one lesion (stage 3), read from ``slabs`` when given (a CT decoded
    only where the patches read: :attr:`CtSeries.slabs`).

    Raises:
        SeedError: the seed is outside the image, or the patch holds NaN voxels.
    """
    check_seed_in_volume(lesion.seed, volume)
    patch = extract_patch(volume, lesion.seed, slabs=slabs)
    if np.isnan(patch.array).any():
        raise SeedError(
            f"the 50 mm patch around {lesion.seed} holds NaN values: the image has NaN voxels there "
            "(or, for a DICOM CT, the patch read slices that were not decoded, which is a bug: "
            "please report it). Replace NaN voxels in the image."
        )
    return patch


def patches_of(
    lesions: Sequence[Lesion], volume: Volume, slabs: Sequence[Volume] = ()
) -> tuple[list[tuple[int, Patch]], dict[int, LesionResult]]:
    """Stage 3 for a case: ``(index, patch)`` of every lesion whose patch could be cut (from
    ``slabs`` when given), and the failed result of each lesion whose seed is bad (by index)."""
    failed: dict[int, LesionResult] = {}
    todo: list[tuple[int, Patch]] = []
    for i, les in enumerate(lesions):
        try:
            todo.append((i, patch_of(les, volume, slabs)))
        except CaseError as e:
            log.error("%s: %s", les.lesion_id, e)
            failed[i] = LesionResult(lesion=les, status=LesionStatus.FAILED, error=str(e))
    return todo, failed


def encode(
    lesions: Sequence[Lesion],
    todo: Sequence[tuple[int, Patch]],
    failed: Mapping[int, LesionResult],
    extractor: FeatureExtractor,
    heads: Sequence[LinearHead] = (),
) -> list[LesionResult]:
    """Stage 4: features of the patches ``todo`` in batches, then heads; the results of all
    ``lesions`` in order (``failed``: those that had no patch)."""
    results = dict(failed)
    if todo:
        feats = extractor.extract([p.array for _, p in todo])
        preds = predictions(heads, feats)
        for (i, patch), f, pr in zip(todo, feats, preds, strict=True):
            reason = nonfinite_reason(f)
            if reason is not None:
                log.error("%s: %s", lesions[i].lesion_id, reason)
                results[i] = LesionResult(lesion=lesions[i], status=LesionStatus.FAILED, error=reason)
                continue
            results[i] = LesionResult(
                lesion=lesions[i], status=LesionStatus.OK, features=f, patch=patch, predictions=pr
            )
    return [results[i] for i in range(len(lesions))]


def measure(
    lesions: Sequence[Lesion],
    volume: Volume,
    extractor: FeatureExtractor,
    heads: Sequence[LinearHead] = (),
    slabs: Sequence[Volume] = (),
) -> list[LesionResult]:
    """Patches for every lesion (from ``slabs`` when given), then features in batches, then
    heads. A bad seed fails only its lesion."""
    todo, failed = patches_of(lesions, volume, slabs)
    return encode(lesions, todo, failed, extractor, heads)


@dataclass(frozen=True, eq=False)
class Prepared:
    """A case after stages 1-3 (import, lesions, patches), ready for the encoder; or the
    reason the whole case failed (``failure``). ``seconds``: time spent preparing."""

    case: Case
    imported: Imported | None
    todo: tuple[tuple[int, Patch], ...] = ()
    failed: Mapping[int, LesionResult] = field(default_factory=dict)
    failure: CaseFailure | None = None
    seconds: float = 0.0


def prepare_case(case: Case, config: RunConfig) -> Prepared:
    """Stages 1-3 of one case (no torch: this is what the prefetch thread runs). Never
    raises a CaseError: it becomes the case's ``failure``."""
    t0 = time.perf_counter()
    try:
        imported = IMPORTERS[type(case)](case, config)
        slabs = imported.ct.slabs if imported.ct is not None else ()
        todo, failed = patches_of(imported.lesions, imported.volume, slabs)
    except CaseError as e:
        failure = CaseFailure.of(case.case_id, e, case.failure_paths())
        log.error("%s: %s", case.case_id, e)
        return Prepared(case, None, failure=failure, seconds=time.perf_counter() - t0)
    return Prepared(case, imported, tuple(todo), failed, seconds=time.perf_counter() - t0)


def finish_case(prepared: Prepared, extractor: FeatureExtractor, heads: Sequence[LinearHead] = ()) -> CaseOutcome:
    """Stage 4 of a prepared case: its outcome. Never raises a CaseError."""
    t0 = time.perf_counter()
    case, imported = prepared.case, prepared.imported
    failure = prepared.failure
    results: list[LesionResult] = []
    if imported is not None:
        try:
            results = encode(imported.lesions, prepared.todo, prepared.failed, extractor, heads)
        except CaseError as e:
            failure = CaseFailure.of(case.case_id, e, case.failure_paths())
            log.error("%s: %s", case.case_id, e)
    seconds = prepared.seconds + time.perf_counter() - t0
    if imported is None or failure is not None:
        return CaseOutcome(case=case, results=(), failures=(failure,) if failure else (), seconds=seconds)
    for f in imported.failures:
        log.error("%s: %s", f.case_id, f.reason)
    return CaseOutcome(
        case=case,
        results=tuple(results),
        failures=tuple(imported.failures),
        ct=imported.ct,
        volume=imported.volume,
        masks=imported.masks,
        seconds=seconds,
        warnings=imported.warnings,
    )


def process_case(
    case: Case, config: RunConfig, extractor: FeatureExtractor, heads: Sequence[LinearHead] = ()
) -> CaseOutcome:
    """Import one case, form its lesions, measure them. Never raises a CaseError."""
    return finish_case(prepare_case(case, config), extractor, heads)


def load_extractor(config: RunConfig, env: Mapping[str, str]) -> FeatureExtractor:
    """Check the device, then resolve, check and load the weights once for the run.

    Raises:
        ConfigError: the device is unknown or absent, or cannot run the precision (before
            any weights are read).
        WeightsError: the weights are missing or invalid.
    """
    check_precision(config.precision, resolve_device(config.device))
    loc = resolve_weights(config.weights, env)
    weights = read_weights(loc.path, hash_cache_dir=default_cache_dir(env))
    log.info("weights %s (%s), sha256 %s", loc.path, loc.found_by, weights.sha256)
    return extractor_for(config, weights)


# ---- the run: plan → per case (import → seeds → patch → model → export) → tables


class StopFlag:
    """Set by a signal handler (SIGINT/SIGTERM) to stop after the case in flight."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def request(self, name: str) -> None:
        self.requested = True
        self.signal_name = name


def case_settings(case: Case, config: RunConfig) -> list[str]:
    """Settings that change a case's results (part of its fingerprint)."""
    out = [
        f"segments={','.join(config.segments)}",
        f"sources={','.join(config.segmentation_sources)}",
        f"exports={config.export_sr},{config.export_seg},{config.export_qc}",
        f"precision={config.precision.value}",
    ]
    out += [f"head={h}:{sha256_file(h) if Path(h).is_file() else 'missing'}" for h in config.heads]
    return out + case.settings()


@dataclass(frozen=True, eq=False)
class Stages:
    """What every case of a run is processed with."""

    extractor: FeatureExtractor
    heads: tuple[LinearHead, ...]
    hooks: tuple[CaseHook, ...]


def load_model(report: RunReport, env: Mapping[str, str], extractor: FeatureExtractor | None) -> FeatureExtractor:
    """Stage 4's set-up, once per run: the extractor (unless given), timed in the report."""
    t0 = time.perf_counter()
    extractor = extractor or load_extractor(report.config, env)
    report.weights_sha256 = extractor.weights.sha256
    report.weights_name = extractor.weights.path.name
    report.demonstration = extractor.weights.demonstration
    if report.demonstration:
        report.notes.append("DEMONSTRATION: the weights are random-initialised; the features are meaningless")
        log.warning(report.notes[-1])
    report.timings["load_model_s"] = time.perf_counter() - t0
    return extractor


def load_heads(report: RunReport) -> tuple[LinearHead, ...]:
    """The configured linear heads; a head fitted on other weights is noted (not refused)."""
    heads = tuple(LinearHead.load(h) for h in report.config.heads)
    for h in heads:
        if h.weights_sha256 and h.weights_sha256 != report.weights_sha256:
            report.notes.append(
                f"head {h.name} was fitted on features of weights {h.weights_sha256[:12]}…, "
                f"not the weights of this run ({report.weights_sha256[:12]}…)"
            )
            log.warning(report.notes[-1])
    return heads


def plan_cases(report: RunReport) -> tuple[list[Case], tuple[str, ...]]:
    """The cases of this run (this shard's, if sharded) and the ids of every planned case
    (all shards'); planning problems go into the report."""
    config = report.config
    config.output.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    the_plan = plan(config, workers=config.index_workers, index_db=config.output / "index.sqlite")
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
    skipped = (
        [{"path": str(s.path), "reason": s.reason.value} for s in the_plan.index.skipped]
        if the_plan.index is not None
        else []
    )
    report.manifest = RunManifest(  # the records of this run are added when it ends
        shard=config.shard,
        input_fingerprint=input_fingerprint(
            ((c.case_id, c.input_files(), c.settings()) for c in the_plan.cases), the_plan.failures, skipped
        ),
        settings=(),  # set once the weights are read (run), after planning
        cases=(),
    )
    report.warnings.extend(the_plan.warnings)
    why = nothing_to_measure(config, the_plan)
    if why is not None:
        raise NothingToMeasureError(why)
    if not cases:
        report.notes.append(f"no case of {config.input} in this shard")
    return cases, tuple(c.case_id for c in the_plan.cases)


def export_case(case: Case, outcome: CaseOutcome, hooks: Sequence[CaseHook]) -> tuple[list[str], list[CaseFailure]]:
    """Stage 5 for one case: every hook; a hook's FmcibError is a failure of the case."""
    outputs: list[str] = []
    failures: list[CaseFailure] = []
    for hook in hooks:
        try:
            outputs += [str(p) for p in hook(case, outcome)]
        except FmcibError as e:
            log.error("%s: %s", case.case_id, e)
            failures.append(CaseFailure.of(case.case_id, e))
    return outputs, failures


def run_case(case: Case, fp: str, stages: Stages, config: RunConfig, prepared: Prepared | None = None) -> CaseRecord:
    """One case through stages 1-5 (1-3 already done if ``prepared`` is given), as the
    record the case store keeps (its outputs named relative to OUTPUT)."""
    prepared = prepared if prepared is not None else prepare_case(case, config)
    outcome = finish_case(prepared, stages.extractor, stages.heads)
    outputs, export_failures = export_case(case, outcome, stages.hooks)
    return CaseRecord(
        case_id=case.case_id,
        fingerprint=fp,
        # patches are not kept past their case: memory stays bounded by one series
        results=tuple(replace(r, patch=None) for r in outcome.results),
        failures=(*outcome.failures, *export_failures),
        seconds=outcome.seconds,
        outputs=tuple(relative_output(Path(o), config.output) for o in outputs),
        warnings=outcome.warnings,
    )


@dataclass(frozen=True, eq=False)
class Planned:
    """One case as the run loop takes it: its fingerprint, and either the finished record
    to reuse (``--resume``) or, when prefetched, its stages 1-3 (``prepared``)."""

    case: Case
    fingerprint: str
    reuse: CaseRecord | None = None
    prepared: Prepared | None = None


def plan_case(case: Case, config: RunConfig, store: CaseStore, weights_sha256: str, prepare: bool) -> Planned:
    """The fingerprint of ``case``, its finished record if it can be reused, else (when
    ``prepare``) its stages 1-3."""
    fp = fingerprint(case.input_files(), weights_sha256, __version__, case_settings(case, config))
    old = store.load(case.case_id) if config.resume else None
    if old is not None and old.complete and old.fingerprint == fp:
        return Planned(case, fp, reuse=old)
    return Planned(case, fp, prepared=prepare_case(case, config) if prepare else None)


class Prefetcher:
    """Stages 1-3 of the next case (decoding, patches: numpy/pydicom work) in a background
    thread while the caller encodes and exports the current one: exactly one case ahead
    (a case is started only once the caller has taken the one before it), in input order.

    A case that fails in the thread fails as it would without prefetching (its failure is
    part of its :class:`Prepared`); any other exception is raised by :meth:`next` for the
    case it happened in. The thread is a daemon: a second SIGINT (``KeyboardInterrupt``)
    in the caller does not wait for it.
    """

    def __init__(self, cases: Sequence[Case], make: Callable[[Case], Planned]) -> None:
        self._cases = cases
        self._make = make
        self._items: queue.Queue[Planned | BaseException] = queue.Queue()
        self._slot = threading.Semaphore(1)  # one case prepared or ready, beside the caller's
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._work, name="fmcib-prefetch", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        for case in self._cases:
            while not self._slot.acquire(timeout=0.1):
                if self._closed.is_set():
                    return
            if self._closed.is_set():
                return
            try:
                self._items.put(self._make(case))
            except BaseException as e:  # noqa: BLE001 -- handed to the caller, raised there
                self._items.put(e)
                return

    def next(self, stop: StopFlag | None) -> Planned | None:
        """The next case, or ``None`` if ``stop`` is requested while waiting for it.

        Raises:
            BaseException: whatever preparing that case raised, other than a CaseError.
        """
        while True:
            try:
                item = self._items.get(timeout=0.1)
            except queue.Empty:
                if stop is not None and stop.requested:
                    return None
                continue
            self._slot.release()
            if isinstance(item, BaseException):
                raise item
            return item

    def close(self, wait: bool = True) -> None:
        """Stop preparing; with ``wait``, until the thread has ended (a case it is
        preparing is finished first and dropped)."""
        self._closed.set()
        if wait:
            self._thread.join()


def use_prefetch(config: RunConfig, extractor: FeatureExtractor) -> bool:
    """``--prefetch``: on, off, or (auto) on a CUDA device only: on a 2-core CPU the
    encoder already uses every core (``benchmarks/README.md``)."""
    if config.prefetch is not None:
        return config.prefetch
    return extractor.device.type == "cuda"


def next_case(
    case: Case,
    fetcher: Prefetcher | None,
    stop: StopFlag | None,
    config: RunConfig,
    store: CaseStore,
    report: RunReport,
    n_left: int,
) -> Planned | None:
    """``case`` as planned (from ``fetcher`` when prefetching), or ``None`` when the run is to
    stop (noted in ``report``: the ``n_left`` cases from this one on are not run)."""
    item = None
    if not (stop is not None and stop.requested):
        item = (
            fetcher.next(stop)
            if fetcher is not None
            else plan_case(case, config, store, report.weights_sha256, prepare=False)
        )
    if item is None:
        report.interrupted = (stop.signal_name if stop else "") or "stop requested"
        report.notes.append(f"interrupted by {report.interrupted}: {n_left} case(s) not run")
    return item


def run_cases(
    cases: Sequence[Case],
    stages: Stages,
    report: RunReport,
    progress: Progress,
    stop: StopFlag | None,
    stale: StaleMover | None = None,
) -> list[CaseRecord]:
    """Every case in turn, reusing finished records (``--resume``); stops after the case in
    flight when ``stop`` is requested. A case measured again has the files its earlier
    record named, and its new one does not, moved by ``stale``. With prefetching
    (:func:`use_prefetch`) the next case's stages 1-3 run in a thread meanwhile; outputs
    and their order are the same."""
    config = report.config
    store = CaseStore(config.output)
    store.clean_temporaries()
    stale = stale or StaleMover(config.output)
    records: list[CaseRecord] = []
    kept: set[Path] = set()
    progress.start(len(cases))
    t0 = time.perf_counter()
    prefetch = use_prefetch(config, stages.extractor)
    log.debug("prefetch of the next case: %s", "on" if prefetch else "off")
    fetcher = (
        Prefetcher(cases, lambda c: plan_case(c, config, store, report.weights_sha256, prepare=True))
        if prefetch and cases
        else None
    )
    try:
        for case in cases:
            item = next_case(case, fetcher, stop, config, store, report, len(cases) - len(records))
            if item is None:
                break
            if item.reuse is not None:
                records.append(item.reuse)
                kept |= kept_outputs(config.output, [item.reuse])
                report.cases_skipped += 1
                progress.case_done(case.case_id, len(item.reuse.results), failed=False, skipped=True)
                continue
            previous = previous_outputs(config.output, case.case_id)
            try:
                rec = run_case(case, item.fingerprint, stages, config, item.prepared)
                store.save(rec)
            except OSError as e:
                if not is_disk_full(e):
                    raise
                report.output_full = output_full(report, records, len(cases) - len(records), e)
                break
            records.append(rec)
            kept |= kept_outputs(config.output, [rec])
            stale.move_replaced(case.case_id, previous, rec, kept)
            progress.case_done(case.case_id, len(rec.results), failed=not rec.complete, skipped=False)
    except BaseException:
        if fetcher is not None:
            fetcher.close(wait=False)
        raise
    if fetcher is not None:
        fetcher.close()
    progress.close()
    report.timings["cases_s"] = time.perf_counter() - t0
    return records


def output_full(report: RunReport, records: Sequence[CaseRecord], n_left: int, e: BaseException) -> str:
    """The disk-full message of a run (logged); the run then stops after the finished cases."""
    done = [CaseStore(report.config.output).path(r.case_id) for r in records]
    finished = tree_bytes([*done, *(p for r in records for p in r.output_paths(report.config.output))])
    msg = disk_full_message(report.config.output, e, finished, len(records), n_left)
    log.error("%s", msg)
    return msg


def collect(report: RunReport, records: Sequence[CaseRecord]) -> None:
    """Add the case records' results, failures, timings and outputs to the report (and the
    records' ids and fingerprints to its manifest: ``merge`` takes exactly these)."""
    if report.manifest is not None:
        report.manifest = replace(report.manifest, cases=tuple(sorted((r.case_id, r.fingerprint) for r in records)))
    for rec in records:
        report.results.extend(rec.results)
        report.failures.extend(rec.failures)
        report.case_seconds[rec.case_id] = rec.seconds
        report.outputs.extend(str(p) for p in rec.output_paths(report.config.output))
        report.warnings.extend(w for w in rec.warnings if w not in report.warnings)


def move_stale(report: RunReport, stale: StaleMover, planned: Sequence[str], records: Sequence[CaseRecord]) -> None:
    """Move the records (and files) of cases this run did not plan out of OUTPUT
    (:mod:`mhub_fmcib.batch.stale`); what was moved goes into the report."""
    config = report.config
    stale.move_stale_cases(planned, config.shard, kept_outputs(config.output, records))
    report.stale = stale.to_json()
    cases = [e for e in stale.entries if e.kind is StaleKind.CASE]
    if stale.entries:
        where = stale.folder.relative_to(config.output)
        report.notes.append(
            f"outputs of {len(cases)} case(s) no longer in the input and {len(stale.entries) - len(cases)} replaced "
            f"output set(s) moved to OUTPUT/{where} (run.json lists them under stale)"
        )
        log.warning("%s", report.notes[-1])


def nothing_selected(report: RunReport) -> str:
    """The line for a run whose only outcome is ``--segments`` selecting nothing, else ``""``."""
    if report.results or not report.failures:
        return ""
    if any(f.error_type != NothingSelectedError.__name__ for f in report.failures):
        return ""
    segments = ",".join(report.config.segments)
    return (
        f"nothing to measure: --segments {segments} matches no segment of the {len(report.failures)} "
        "segmentation(s) (failures.csv lists each one's segments); pass numbers or labels from those lists, "
        "or drop --segments"
    )


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

    Planning comes first: the weights are hashed and loaded only when there is a case to
    process (a run with nothing to measure never reads them).

    Raises:
        ConfigError: before planning (an absent device).
        NothingToMeasureError: the plan has no case (nothing is written but the index).
        WeightsError: after planning, before any case is processed.
    """
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report = RunReport(config=config)
    resolve_device(config.device)
    stale = StaleMover(config.output)
    cases, planned = plan_cases(report)
    model = load_model(report, env, extractor)
    if report.manifest is not None:
        settings = tuple(sorted(run_settings(config, report.weights_sha256, __version__).items()))
        report.manifest = replace(report.manifest, settings=settings)
    if hooks is None:
        hooks = make_hooks(config, collect_provenance(report.weights_sha256, report.weights_name, report.demonstration))
    stages = Stages(model, load_heads(report), tuple(hooks))
    records = run_cases(cases, stages, report, progress or NoProgress(), stop, stale)
    collect(report, records)
    move_stale(report, stale, planned, records)
    report.nothing_to_measure = nothing_selected(report)
    if report.nothing_to_measure:
        report.notes.append(report.nothing_to_measure)
    try:
        if config.export_qc:  # from the per-lesion rows every case wrote (also the resumed ones)
            index = write_qc_index(config.output, report.results, report.failures, report.demonstration)
            report.outputs.append(str(index))
        write_run_outputs(report, started, t_start)
    except OSError as e:
        if not is_disk_full(e):
            raise
        msg = report.output_full or disk_full_message(config.output, e, 0, 0, 0)
        raise OutputFullError(
            f"{msg}. features.csv, failures.csv and run.json could not be written either "
            "(each is written whole or not at all: nothing half-written is left)"
        ) from e
    return report
