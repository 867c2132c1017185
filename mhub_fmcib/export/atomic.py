"""The one atomic writer: every output file and case record is written through here.

A file is written to a temporary name in its destination folder, flushed and fsync'ed, then
renamed over the destination (and the folder fsync'ed): a reader sees the old file or the
whole new one, never a part, and a crash leaves either the old file or none. Temporary
files are created with mode 0666 and folders with 0777, less the process umask, exactly like
``open()`` and ``mkdir`` (so 0644 / 0755 under the usual umask 022) — never the owner-only
0600 of :func:`tempfile.mkstemp`.

Every temporary name starts with :data:`TMP_PREFIX` (``.fmcib-tmp-``): files
``.fmcib-tmp-<name>.<random>``, folders ``.fmcib-tmp-<name>.<random>`` and a replaced folder
``.fmcib-tmp-<name>.old.<random>``. A run removes every such leftover under OUTPUT before it
starts (:func:`remove_temporaries`), and ``merge`` never copies one (:func:`ignore_temporaries`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

FILE_MODE = 0o666
DIR_MODE = 0o777
#: The one prefix of temporary names (files and folders); a run removes leftovers.
TMP_PREFIX = ".fmcib-tmp-"
#: Temporary names of earlier versions (``.<name>.<12 hex>.part``, ``.tmp-<name>-<hex>``, a
#: case record's ``<32 hex>.old``): still recognised, so their leftovers are removed too.
_LEGACY_TMP = re.compile(r"^\..+\.[0-9a-f]{12}\.part$|^\.tmp-.+-[0-9a-f]+$|^[0-9a-f]{32}\.old$")


def _temp_sibling(path: Path, tag: str = "") -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}{tag}.{secrets.token_hex(6)}")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(binary_file)`` on a temporary file, then rename it to ``path``.

    Parent folders are created. Returns ``path``. On any error the temporary file is removed
    and the old ``path`` (if any) is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, keys in insertion order, newline at the end) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


@contextmanager
def atomic_directory(dest: Path) -> Iterator[Path]:
    """Fill a temporary folder next to ``dest``, then swap it in place of ``dest``.

    Yields the temporary folder; when the block ends without error it replaces ``dest``
    (an old ``dest`` is renamed to a temporary ``.old`` name first and removed after), so ``dest`` is
    always either the whole old folder or the whole new one. On error the temporary folder
    is removed. Files inside are written with :func:`write_file`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(dest)
    os.mkdir(tmp, DIR_MODE)
    try:
        yield tmp
        if dest.exists():
            old = _temp_sibling(dest, ".old")
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(dest.parent)


def write_file(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write a file inside an :func:`atomic_directory` (created with the same mode rules,
    fsync'ed; not renamed: the folder's swap makes it visible)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path


_Item = TypeVar("_Item")


def write_each(items: Iterable[_Item], write: Callable[[_Item], Path | None]) -> list[Path]:
    """``write(item)`` for each of ``items`` as it comes (an iterator that builds the parts of
    one output, e.g. the SRs of a series), dropping each before the next is built, so one
    item at a time is in memory; returns the paths written (``None``: nothing to write). All
    or none: if building or writing an item fails, the files already written for the
    earlier items are removed and the error is raised."""
    written: list[Path] = []
    complete = False
    try:
        for item in items:
            path = write(item)
            del item  # not held while the next item is built
            if path is not None:
                written.append(path)
        complete = True
    finally:
        if not complete:
            for path in written:
                path.unlink(missing_ok=True)
    return written


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is a leftover of an interrupted atomic write."""
    return name.startswith(TMP_PREFIX) or bool(_LEGACY_TMP.match(name))


def remove_temporaries(root: Path) -> list[Path]:
    """Remove every temporary file or folder anywhere below ``root`` (what a killed run
    left); symlinks are not followed. Returns what was removed."""
    removed: list[Path] = []
    if not Path(root).is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        for name in [n for n in dirnames if is_temporary(n)]:
            dirnames.remove(name)
            p = d / name
            if p.is_symlink():
                p.unlink()
            else:
                shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        for name in filenames:
            if is_temporary(name):
                (d / name).unlink(missing_ok=True)
                removed.append(d / name)
    return removed


def ignore_temporaries(folder: str, names: list[str]) -> set[str]:
    """``ignore=`` of :func:`shutil.copytree`: never copy a temporary."""
    return {n for n in names if is_temporary(n)}
