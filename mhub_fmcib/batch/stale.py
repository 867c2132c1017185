"""Stale outputs: what earlier runs wrote into OUTPUT that the current run no longer produces.

After a run, OUTPUT holds exactly the current run's cases. Two kinds of leftovers are moved
(never deleted: they may be someone's results) to ``OUTPUT/stale/<run start, UTC>/``, each
file to the same relative path it had below OUTPUT, and listed in ``run.json`` ``stale``:

- **stale cases**: a record in ``OUTPUT/cases/`` of a case this run did not plan (its CT,
  SEG, mask or seed rows left the input, or the input is another one): its record folder and
  the DICOM and QC files it names. A ``--shard i/N`` run moves only records of its own
  partition (``shard_of(case id, N) == i``, read from the record folder's name): the other
  shards' cases are theirs. Records of planned cases are never stale, whether this run
  measured them, reused them (``--resume``) or did not get to them (interrupted, disk full).
- **replaced outputs**: a case measured again whose earlier record named files the new one
  does not write (a lesion that left its SEG, an SR no longer written because every lesion
  now fails): moved right after the new record is saved.

Only regular files below OUTPUT are moved (a record naming a path elsewhere, as records of
earlier versions copied from another folder do, never moves anything outside OUTPUT), never
a file that a record of this run names, never a temporary. Folders left empty are removed.
A move that fails (a read-only file system, the disk full) leaves the file in place and is
listed with its error: tidying never stops a run. ``merge`` takes only the records its
shards list, so it never sees ``stale/``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ..export.atomic import is_temporary
from .store import CASES_DIR, CaseRecord, CaseStore, case_key, output_path, shard_of_key

log = logging.getLogger(__name__)

STALE_DIR = "stale"


class StaleKind(StrEnum):
    """What a ``run.json`` ``stale`` entry is about."""

    CASE = "case"
    """a case this run did not plan: its record and the files it names"""
    REPLACED_OUTPUTS = "replaced_outputs"
    """files a case measured again no longer writes"""


@dataclass(frozen=True)
class Moved:
    """One file or record folder moved: paths relative to OUTPUT (``error``: it stayed)."""

    source: str
    destination: str
    error: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"from": self.source, "to": self.destination}
        return {**out, "error": self.error} if self.error else out


@dataclass(frozen=True)
class StaleEntry:
    """A stale case or a case's replaced outputs (:class:`StaleKind`)."""

    case_id: str
    kind: StaleKind
    reason: str
    moved: tuple[Moved, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "case_id": self.case_id,
            "kind": self.kind.value,
            "reason": self.reason,
            "moved": [m.to_json() for m in self.moved],
        }


@dataclass
class StaleMover:
    """Moves leftovers of one run into ``OUTPUT/stale/<stamp>/`` (created on the first move).

    Attributes:
        output: the run's OUTPUT.
        started: the run's start (``time.time()``), naming its stale folder.
        entries: what was moved so far, in order.
    """

    output: Path
    started: float = field(default_factory=time.time)
    entries: list[StaleEntry] = field(default_factory=list)
    _folder: Path | None = None

    @property
    def folder(self) -> Path:
        """``OUTPUT/stale/<YYYYmmddTHHMMSSZ>`` of this run (``-2``, ``-3``… when taken)."""
        if self._folder is None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.started))
            base = self.output / STALE_DIR
            folder, n = base / stamp, 1
            while folder.exists():
                n += 1
                folder = base / f"{stamp}-{n}"
            self._folder = folder
        return self._folder

    def _move(self, rel: Path) -> Moved:
        """Move ``OUTPUT/rel`` to the same place below this run's stale folder."""
        src, dest = self.output / rel, self.folder / rel
        moved = Moved(str(rel), str(dest.relative_to(self.output)))
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
        except OSError as e:
            log.warning("stale %s could not be moved to %s (%s); it stays in place", src, dest, e)
            return Moved(moved.source, moved.destination, f"{type(e).__name__}: {e}")
        _prune_empty(src.parent, self.output)
        return moved

    def _files(self, stored: Iterable[str], keep: Collection[Path]) -> list[Path]:
        """The files among ``stored`` (record entries) that may be moved (module docstring),
        relative to OUTPUT."""
        root = self.output.resolve()
        out: dict[Path, None] = {}
        for s in stored:
            p = output_path(s, self.output)
            if p.is_symlink() or not p.is_file() or is_temporary(p.name):
                continue
            real = p.resolve()
            if real.is_relative_to(root) and real not in keep and not real.is_relative_to(root / STALE_DIR):
                out[real.relative_to(root)] = None
        return list(out)

    def move_replaced(self, case_id: str, previous: Sequence[str], rec: CaseRecord, keep: Collection[Path]) -> None:
        """Move the files the case's earlier record named (``previous``) that ``rec``, its
        new record, does not name."""
        now = {p.resolve() for p in rec.output_paths(self.output)}
        files = self._files(previous, {*keep, *now})
        if files:
            moved = tuple(self._move(f) for f in files)
            reason = "written by an earlier run; this run did not write it"
            self.entries.append(StaleEntry(case_id, StaleKind.REPLACED_OUTPUTS, reason, moved))

    def move_stale_cases(self, planned: Iterable[str], shard: tuple[int, int] | None, keep: Collection[Path]) -> None:
        """Move every record of ``OUTPUT/cases/`` of a case not in ``planned`` (of this
        shard's partition, for ``shard``), with the files it names: the files first, the
        record last (a run killed in between finds the record again), and the record only
        when all its files could be moved."""
        root = self.output / CASES_DIR
        if not root.is_dir():
            return
        planned_keys = {case_key(c) for c in planned}
        for d in sorted(root.iterdir()):
            if not d.is_dir() or d.is_symlink() or d.name.startswith(".") or d.name in planned_keys:
                continue
            if shard is not None and (not _is_key(d.name) or shard_of_key(d.name, shard[1]) != shard[0]):
                continue
            header = CaseStore.read_header(d)
            case_id, stored = header if header is not None else ("", ())
            moved = [self._move(f) for f in self._files(stored, keep)]
            if not any(m.error for m in moved):
                moved.append(self._move(d.relative_to(self.output)))
            reason = "its case is not in this run's input" if header else "unreadable record of no planned case"
            self.entries.append(StaleEntry(case_id, StaleKind.CASE, reason, tuple(moved)))
            log.info("stale case %s: %d item(s) moved to %s", case_id or d.name, len(moved), self.folder)

    def to_json(self) -> list[dict[str, object]]:
        """``run.json`` ``stale``: every entry, paths relative to OUTPUT."""
        return [e.to_json() for e in self.entries]


def kept_outputs(output: Path, records: Iterable[CaseRecord]) -> set[Path]:
    """The files ``records`` (this run's) name, resolved: never moved."""
    return {p.resolve() for r in records for p in r.output_paths(output)}


def previous_outputs(output: Path, case_id: str) -> tuple[str, ...]:
    """The ``outputs`` of the case's record in ``output`` before it is measured again (none
    when it has no readable record)."""
    header = CaseStore.read_header(CaseStore(output).path(case_id))
    return header[1] if header is not None else ()


def _is_key(name: str) -> bool:
    return len(name) == 32 and all(c in "0123456789abcdef" for c in name)


def _prune_empty(folder: Path, output: Path) -> None:
    """Remove ``folder`` and its parents while empty, up to (not including) OUTPUT and its
    direct subfolders (``dicom/``, ``cases/`` stay)."""
    root = output.resolve()
    d = folder.resolve()
    while d.is_relative_to(root) and len(d.relative_to(root).parts) > 1:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent
