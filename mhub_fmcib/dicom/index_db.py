"""A persistent header index (SQLite in the output folder) so that re-running on a large
export does not re-read unchanged files (same path, size and mtime), and a parallel scan
of the files that did change."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .index import (
    DicomIndex,
    FileStat,
    InstanceKind,
    InstanceRecord,
    SkippedFile,
    SkipReason,
    iter_file_stats,
    read_record,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    what TEXT NOT NULL, data TEXT NOT NULL
)
"""
SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class IndexStats:
    """How many files were read from disk and how many were taken from the stored index."""

    read: int
    reused: int


def _encode(item: InstanceRecord | SkippedFile) -> tuple[str, str]:
    if isinstance(item, InstanceRecord):
        d = {
            "path": str(item.path),
            "kind": item.kind.value,
            "sop_class_uid": item.sop_class_uid,
            "sop_instance_uid": item.sop_instance_uid,
            "study_instance_uid": item.study_instance_uid,
            "series_instance_uid": item.series_instance_uid,
            "frame_of_reference_uid": item.frame_of_reference_uid,
            "modality": item.modality,
            "referenced_series_uids": list(item.referenced_series_uids),
            "number_of_frames": item.number_of_frames,
            "size": item.size,
            "mtime_ns": item.mtime_ns,
        }
        return "record", json.dumps(d)
    return "skip", json.dumps({"path": str(item.path), "reason": item.reason.name, "detail": item.detail})


def _decode(what: str, data: str) -> InstanceRecord | SkippedFile:
    d = json.loads(data)
    if what == "record":
        d["path"] = Path(d["path"])
        d["kind"] = InstanceKind(d["kind"])
        d["referenced_series_uids"] = tuple(d["referenced_series_uids"])
        return InstanceRecord(**d)
    return SkippedFile(Path(d["path"]), SkipReason[d["reason"]], d["detail"])


def _read_many(files: Sequence[FileStat]) -> list[InstanceRecord | SkippedFile]:
    return [read_record(f.path, f) for f in files]


def index_folder_cached(root: Path, db_path: Path, workers: int = 1) -> tuple[DicomIndex, IndexStats]:
    """Index ``root`` like :func:`~mhub_fmcib.dicom.index.index_folder`, reusing rows of
    ``db_path`` for files whose (path, size, mtime) are unchanged."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"input {root} does not exist")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db_path)
    try:
        con.execute(SCHEMA)
        con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None or row[0] != SCHEMA_VERSION:
            con.execute("DELETE FROM files")
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        stored = {
            p: (s, m, w, d) for p, s, m, w, d in con.execute("SELECT path, size, mtime_ns, what, data FROM files")
        }
        items: list[InstanceRecord | SkippedFile] = []
        todo: list[FileStat] = []
        seen: set[str] = set()
        for f in iter_file_stats(root):
            key = str(f.path)
            seen.add(key)
            old = stored.get(key)
            if old is not None and old[0] == f.size and old[1] == f.mtime_ns:
                items.append(_decode(old[2], old[3]))
            else:
                todo.append(f)
        if workers > 1 and len(todo) > 256:
            chunks = [todo[i : i + 256] for i in range(0, len(todo), 256)]
            with ProcessPoolExecutor(max_workers=workers) as pool:
                fresh = [r for chunk in pool.map(_read_many, chunks) for r in chunk]
        else:
            fresh = _read_many(todo)
        # (size, mtime) as scanned before reading: a file changed while it was read is
        # read again next time.
        rows = [(str(f.path), f.size, f.mtime_ns, *_encode(item)) for f, item in zip(todo, fresh, strict=True)]
        con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", rows)
        gone = [(p,) for p in stored if p not in seen]
        con.executemany("DELETE FROM files WHERE path = ?", gone)
        con.commit()
    finally:
        con.close()
    items += fresh
    index = DicomIndex(
        root=root,
        instances=tuple(i for i in items if isinstance(i, InstanceRecord)),
        skipped=tuple(i for i in items if isinstance(i, SkippedFile)),
    )
    return index, IndexStats(read=len(todo), reused=len(items) - len(fresh))
