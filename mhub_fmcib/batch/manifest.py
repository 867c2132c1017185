"""What a run records about itself so that ``merge`` can check the shards it joins.

Every run writes this into ``run.json`` (``"batch"``):

- ``shard``: ``[i, N]`` for ``--shard i/N``, else ``null``;
- ``input_fingerprint``: sha256 over the whole plan (every case of the export, not only the
  shard's: its id and its input files' paths, sizes and mtimes) and the planning problems
  (failures, skipped files), so shards of one export agree and shards of different or
  changed exports do not;
- ``settings``: everything that changes results or outputs: every run setting but the
  per-shard ones (output folder, shard, resume, index workers), the weights' and heads'
  sha256 and the software version;
- ``cases``: the cases this run processed or reused, each with the fingerprint of its
  record in ``cases/``: the merge takes exactly these records, nothing else found there.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig
from ..model.weights_file import sha256_file
from ..records import CaseFailure

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class RunManifest:
    """The ``"batch"`` section of ``run.json``."""

    shard: tuple[int, int] | None
    input_fingerprint: str
    settings: tuple[tuple[str, str], ...]
    cases: tuple[tuple[str, str], ...]
    """(case id, record fingerprint), sorted by case id."""

    def to_json(self) -> dict[str, object]:
        return {
            "version": MANIFEST_VERSION,
            "shard": list(self.shard) if self.shard else None,
            "input_fingerprint": self.input_fingerprint,
            "settings": dict(self.settings),
            "cases": {case_id: fp for case_id, fp in self.cases},
        }

    @classmethod
    def from_json(cls, doc: object) -> RunManifest:
        """Raises ValueError (with what was wrong) on anything but a version-1 section."""
        if not isinstance(doc, Mapping) or doc.get("version") != MANIFEST_VERSION:
            raise ValueError(f"no batch section of version {MANIFEST_VERSION}")
        shard = doc["shard"]
        if shard is not None:
            if not (isinstance(shard, list) and len(shard) == 2 and all(isinstance(v, int) for v in shard)):
                raise ValueError(f"bad shard {shard!r}")
            shard = (shard[0], shard[1])
        settings, cases = doc["settings"], doc["cases"]
        if not isinstance(settings, Mapping) or not isinstance(cases, Mapping):
            raise ValueError("settings and cases must be objects")
        return cls(
            shard=shard,
            input_fingerprint=str(doc["input_fingerprint"]),
            settings=tuple(sorted((str(k), str(v)) for k, v in settings.items())),
            cases=tuple(sorted((str(k), str(v)) for k, v in cases.items())),
        )


def input_fingerprint(
    cases: Iterable[tuple[str, Sequence[Path], Sequence[str]]],
    failures: Iterable[CaseFailure] = (),
    skipped: Iterable[Mapping[str, str]] = (),
) -> str:
    """sha256 over every planned case (id, input files' path, size and mtime, case-specific
    settings such as seed rows) and the planning problems. One ``stat`` per input file."""
    h = hashlib.sha256()
    for case_id, paths, case_settings in sorted(cases, key=lambda c: c[0]):
        h.update(f"case\0{case_id}\0{'|'.join(case_settings)}\n".encode())
        for p in sorted(str(p) for p in paths):
            try:
                st = os.stat(p)
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{p}\0missing\n".encode())
    for f in sorted(failures, key=lambda f: (f.case_id, f.reason)):
        h.update(f"failure\0{f.case_id}\0{f.reason}\n".encode())
    for s in sorted(skipped, key=lambda s: s.get("path", "")):
        h.update(f"skipped\0{s.get('path', '')}\0{s.get('reason', '')}\n".encode())
    return h.hexdigest()


#: RunConfig fields that differ between the shards of one batch, or are covered elsewhere
#: (``input`` and the files by the input fingerprint, ``weights`` by its sha256), or do not
#: change results (``prefetch``)
PER_SHARD = frozenset({"input", "output", "shard", "resume", "index_workers", "weights", "prefetch"})


def run_settings(config: RunConfig, weights_sha256: str, version: str) -> dict[str, str]:
    """The settings shards must share to be merged: every :class:`RunConfig` field but
    those of :data:`PER_SHARD`, the weights' and heads' sha256 and the software version."""
    out = {k: json.dumps(v, sort_keys=True) for k, v in config.to_dict().items() if k not in PER_SHARD}
    out["heads_sha256"] = ",".join(sha256_file(h) if Path(h).is_file() else "missing" for h in config.heads)
    out["weights_sha256"] = weights_sha256
    out["software_version"] = version
    return out
