"""``mhub-fmcib merge``: join the output folders of shards into one.

Every shard's ``run.json`` says which shard it is (``i/N``), what input it saw (the
fingerprint of the whole plan) and with which settings, and which case records it wrote or
reused (:mod:`mhub_fmcib.batch.manifest`). The merge first checks the set (nothing is
written when a check fails, exit status 2):

- each folder holds a finished shard run (a ``run.json`` with its batch section, not
  interrupted);
- all have the same ``N``, and ``0 … N-1`` each appear exactly once;
- all saw the same input and ran with the same settings.

Then it copies exactly the listed case records, and the DICOM and QC files those records
wrote, into the merged folder, and regenerates ``features.csv``, ``failures.csv``,
``run.json`` and the QC index from the records in case-id order: the merge of N shards
equals a single run over the same input. Records an earlier run left in a shard folder are
not taken, nor anything in its ``stale/`` folder (outputs of cases that left the input).
Records name their files relative to their folder, so a shard folder may be moved or
copied before the merge. The merged ``run.json`` keeps the shards' whole configuration (heads, workflow,
...), read back with :meth:`RunConfig.from_dict`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError
from ..export.atomic import ignore_temporaries, is_temporary, remove_temporaries
from ..export.qc import write_qc_index
from ..export.tables import RunReport, write_run_outputs
from ..records import CaseFailure
from .lock import LOCK_NAME
from .manifest import RunManifest
from .store import CASES_DIR, CaseRecord, CaseStore


@dataclass(frozen=True)
class ShardRun:
    """A shard output folder with its ``run.json`` and batch section."""

    folder: Path
    doc: dict[str, Any]
    manifest: RunManifest
    index: int
    count: int

    @property
    def name(self) -> str:
        return f"shard {self.index}/{self.count} ({self.folder})"


def read_shard(folder: Path) -> ShardRun:
    """One shard folder, checked on its own.

    Raises:
        ConfigError: no readable ``run.json``, no batch section (an older version or not a
            run), not a shard, or interrupted.
    """
    try:
        doc = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{folder} is not a finished mhub-fmcib output folder (no readable run.json: {e})") from e
    try:
        manifest = RunManifest.from_json(doc.get("batch") if isinstance(doc, dict) else None)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(
            f"{folder}/run.json has no usable shard records ({e}): it was written by an older mhub-fmcib or is "
            "not a run's. Re-run that shard with this version (finished cases are reused)."
        ) from e
    if manifest.shard is None:
        raise ConfigError(f"{folder} holds a run without --shard: merge joins the folders of --shard i/N runs")
    i, n = manifest.shard
    interrupted = doc.get("summary", {}).get("interrupted")
    if interrupted:
        raise ConfigError(
            f"shard {i}/{n} ({folder}) did not finish (interrupted by {interrupted}): resubmit that shard "
            "(it resumes, skipping its finished cases), then merge again"
        )
    return ShardRun(folder=folder, doc=doc, manifest=manifest, index=i, count=n)


def check_shards(shards: Sequence[ShardRun]) -> None:
    """The set of shards is complete and consistent.

    Raises:
        ConfigError: a folder given twice, different ``N``, a repeated or missing index,
            different inputs or settings; the message names the shards concerned.
    """
    seen: dict[Path, ShardRun] = {}
    for s in shards:
        key = s.folder.resolve()
        if key in seen:
            raise ConfigError(f"{s.folder} is given twice")
        seen[key] = s
    first = shards[0]
    counts = sorted({s.count for s in shards})
    if len(counts) > 1:
        listing = ", ".join(s.name for s in shards)
        raise ConfigError(f"the shards were split in different numbers of shards ({counts}): {listing}")
    by_index: dict[int, ShardRun] = {}
    for s in shards:
        if s.index in by_index:
            raise ConfigError(
                f"shard {s.index}/{s.count} is given twice: {by_index[s.index].folder} and {s.folder}; "
                "pass each shard's folder once"
            )
        by_index[s.index] = s
    missing = [i for i in range(first.count) if i not in by_index]
    if missing:
        names = ", ".join(f"{i}/{first.count}" for i in missing)
        raise ConfigError(
            f"shard {names} is missing (got {len(shards)} of {first.count} shards): run it "
            f"(--shard {missing[0]}/{first.count}) and pass its folder too"
        )
    for s in shards[1:]:
        if s.manifest.input_fingerprint != first.manifest.input_fingerprint:
            raise ConfigError(
                f"{s.name} and {first.name} saw different inputs (another export, or files changed between "
                "the runs): re-run the shards on the same input (finished, unchanged cases are reused)"
            )
        ours, theirs = dict(s.manifest.settings), dict(first.manifest.settings)
        differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        if differ:
            detail = "; ".join(f"{k}: {theirs.get(k)!r} vs {ours.get(k)!r}" for k in differ)
            raise ConfigError(f"{first.name} and {s.name} ran with different settings ({detail})")


def shard_records(shard: ShardRun) -> list[CaseRecord]:
    """Exactly the case records the shard's run wrote or reused.

    Raises:
        ConfigError: a listed record is missing, unreadable or was replaced after the run.
    """
    store = CaseStore(shard.folder)
    out = []
    for case_id, fp in shard.manifest.cases:
        rec = store.load(case_id)
        if rec is None or rec.fingerprint != fp:
            what = "missing or unreadable" if rec is None else "was replaced after that run"
            raise ConfigError(
                f"{shard.name}: the record of case {case_id} listed in its run.json is {what}: "
                "re-run that shard, then merge again"
            )
        out.append(rec)
    return out


def _config(first: ShardRun, output: Path) -> RunConfig:
    """The shards' whole configuration (heads, workflow, ...), unsharded, into ``output``."""
    try:
        return replace(RunConfig.from_dict({**first.doc["inputs"], "output": str(output)}), shard=None)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{first.name}: run.json's inputs cannot be read back ({e})") from e


def _copy_outputs(shard: ShardRun, rec: CaseRecord, output: Path) -> None:
    """The record folder and the files its case wrote (DICOM, QC) into ``output``."""
    src = CaseStore(shard.folder).path(rec.case_id)
    shutil.copytree(src, output / CASES_DIR / src.name, dirs_exist_ok=True, ignore=ignore_temporaries)
    root = shard.folder.resolve()
    for written in rec.output_paths(shard.folder):  # relative to the shard folder (moved or not)
        p = written.resolve()
        if p.is_relative_to(root) and p.is_file() and not is_temporary(p.name):
            dest = output / p.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)


def _check_output(output: Path, shards: Sequence[ShardRun]) -> None:
    if any(output.resolve() == s.folder.resolve() for s in shards):
        raise ConfigError(f"--output {output} is one of the shard folders: merge into a new folder")
    # the lock file of this merge (cli) and temporaries do not make it non-empty
    if output.is_dir() and any(p.name != LOCK_NAME and not is_temporary(p.name) for p in output.iterdir()):
        previous = output / "run.json"
        try:
            is_merge = "merged_from" in json.loads(previous.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            is_merge = False
        if not is_merge:
            raise ConfigError(f"--output {output} is not empty and holds no earlier merge: merge into a new folder")
        for sub in (CASES_DIR, "dicom", "qc"):  # an earlier merge's results are replaced, not mixed in
            shutil.rmtree(output / sub, ignore_errors=True)


def merge_outputs(shards: Sequence[Path], output: Path) -> RunReport:
    """Merge shard output folders into ``output`` (see module docstring).

    Raises:
        ConfigError: a check of the module docstring failed; nothing was written.
    """
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if not shards:
        raise ConfigError("merge needs the output folders of the shards")
    runs = [read_shard(Path(d)) for d in shards]
    check_shards(runs)
    runs.sort(key=lambda s: s.index)
    records = {rec.case_id: (s, rec) for s in runs for rec in shard_records(s)}
    _check_output(output, runs)
    first = runs[0]
    config = _config(first, output)
    software = first.doc["software"]
    report = RunReport(
        config=config,
        weights_sha256=software["weights_sha256"],
        weights_name=software["weights_path_name"],
        demonstration=bool(first.doc.get("demonstration", False)),  # same weights: same mark
    )
    output.mkdir(parents=True, exist_ok=True)
    remove_temporaries(output)
    for s, rec in records.values():
        _copy_outputs(s, rec, output)
    in_records = {(f.case_id, f.reason) for _, rec in records.values() for f in rec.failures}
    for s in runs:  # planning-level problems and skipped files (reported by shard 0 only)
        report.failures += [
            f
            for f in map(CaseFailure.from_dict, s.doc["errors"])
            if f.case_id not in records and (f.case_id, f.reason) not in in_records
        ]
        report.skipped_files += s.doc.get("skipped_files", [])
        report.notes += [n for n in s.doc.get("notes", []) if not n.startswith("shard ") and n not in report.notes]
        report.warnings += [w for w in s.doc.get("warnings", []) if w not in report.warnings]
    for case_id in sorted(records):
        rec = records[case_id][1]
        report.results.extend(rec.results)
        report.failures.extend(rec.failures)
        report.case_seconds[case_id] = rec.seconds
    report.notes.append(f"merged from {', '.join(str(s.folder) for s in runs)}")
    report.manifest = RunManifest(
        shard=None,
        input_fingerprint=first.manifest.input_fingerprint,
        settings=first.manifest.settings,
        cases=tuple(sorted(c for s in runs for c in s.manifest.cases)),
    )
    report.merged_from = [str(s.folder) for s in runs]
    if config.export_qc:  # from the shards' per-lesion QC rows
        report.outputs.append(str(write_qc_index(output, report.results, report.failures, report.demonstration)))
    write_run_outputs(report, started, t_start)
    return report
