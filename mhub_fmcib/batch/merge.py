"""``mhub-fmcib merge``: join the output folders of shards into one.

The case records (``cases/``), DICOM outputs (``dicom/``) and QC pictures of every shard
are copied into the merged folder, and ``features.csv``, ``failures.csv`` and ``run.json``
are regenerated from the records, in case-id order: the merge of N shards equals a single
run over the same input. The merged ``run.json`` keeps the shards' whole configuration
(heads, workflow, ...), read back with :meth:`RunConfig.from_dict`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError
from ..export.atomic import ignore_temporaries, remove_temporaries
from ..export.tables import RunReport, write_run_outputs
from ..records import CaseFailure
from .store import CASES_DIR, CaseRecord, CaseStore


def merge_outputs(shards: Sequence[Path], output: Path) -> RunReport:
    """Merge shard output folders into ``output`` (see module docstring).

    Raises:
        ConfigError: a shard folder has no ``run.json``, or shards disagree on weights.
    """
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    docs = []
    for d in shards:
        try:
            docs.append(json.loads((Path(d) / "run.json").read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{d} is not a finished mhub-fmcib output folder (no readable run.json): {e}") from e
    shas = {doc["software"]["weights_sha256"] for doc in docs}
    if len(shas) != 1:
        raise ConfigError(f"shards were run with different weights ({', '.join(sorted(shas))}); cannot merge")
    first = docs[0]
    config = replace(RunConfig.from_dict({**first["inputs"], "output": str(output)}), shard=None)
    report = RunReport(config=config, weights_sha256=shas.pop(), weights_name=first["software"]["weights_path_name"])
    output.mkdir(parents=True, exist_ok=True)
    remove_temporaries(output)
    records = _copy_shards(shards, docs, output, report)
    known = {(f.case_id, f.reason) for rec in records.values() for f in rec.failures}
    report.failures = [f for f in report.failures if (f.case_id, f.reason) not in known]
    for case_id in sorted(records):
        rec = records[case_id]
        report.results.extend(rec.results)
        report.failures.extend(rec.failures)
        report.case_seconds[case_id] = rec.seconds
    report.notes.append(f"merged from {', '.join(str(s) for s in shards)}")
    write_run_outputs(report, started, t_start)
    return report


def _copy_shards(
    shards: Sequence[Path], docs: Sequence[dict[str, Any]], output: Path, report: RunReport
) -> dict[str, CaseRecord]:
    """Copy every shard's case records, DICOM outputs and QC pictures into ``output``; the
    planning-level errors, skipped files and notes of their ``run.json`` go into ``report``.
    Returns the records by case id (a complete record wins over a failed one)."""
    records: dict[str, CaseRecord] = {}
    for d, doc in zip(shards, docs, strict=True):
        for rec in CaseStore(Path(d)).all():
            if rec.case_id in records and records[rec.case_id].complete and not rec.complete:
                continue
            records[rec.case_id] = rec
            src = CaseStore(Path(d)).path(rec.case_id)
            shutil.copytree(src, output / CASES_DIR / src.name, dirs_exist_ok=True, ignore=ignore_temporaries)
        for sub in ("dicom", "qc"):
            if (Path(d) / sub).is_dir():
                shutil.copytree(Path(d) / sub, output / sub, dirs_exist_ok=True, ignore=ignore_temporaries)
        for err in doc["errors"]:
            if err["case_id"] not in records:  # planning-level problems
                report.failures.append(CaseFailure.from_dict(err))
        report.skipped_files += doc.get("skipped_files", [])
        report.notes += doc.get("notes", [])
    return records
