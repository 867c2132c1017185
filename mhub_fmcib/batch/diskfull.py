"""A full disk (or quota) under OUTPUT stops the run cleanly: exit 4, a message naming the
folder, the free bytes and an estimate of the bytes still needed; the records of finished
cases are kept (each was written whole by the one atomic writer), so a re-run with space
resumes after them."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..errors import FmcibError

#: Estimate of one case's outputs when no case has finished yet (bytes).
DEFAULT_CASE_BYTES = 8 << 20


class OutputFullError(FmcibError):
    """OUTPUT's file system is full (ENOSPC) or the user's quota is reached (EDQUOT)."""


def is_disk_full(e: BaseException | None) -> bool:
    """An ``OSError`` of a full disk or quota, or SQLite's "database or disk is full", also
    when wrapped by a library (pydicom re-raises ``OSError("With tag ...")`` from it)."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if type(e).__name__ == "OperationalError" and "disk is full" in str(e):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def _errno_in_chain(e: BaseException | None) -> int | None:
    for _ in range(8):  # bounded: exception chains may loop
        if e is None:
            break
        if isinstance(e, OSError) and e.errno:
            return e.errno
        e = e.__cause__ or e.__context__
    return None


def tree_bytes(paths: Sequence[Path]) -> int:
    """Total size (bytes) of files and folders (recursively); missing ones count 0."""
    total = 0
    for p in paths:
        p = Path(p)
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def disk_full_message(output: Path, e: BaseException, finished_bytes: int, n_finished: int, n_left: int) -> str:
    """What the operator reads: which folder, what is free, about how much more is needed."""
    try:
        free = shutil.disk_usage(output).free
    except OSError:
        free = 0
    per_case = finished_bytes // n_finished if n_finished else DEFAULT_CASE_BYTES
    needed = per_case * max(n_left, 1) + (1 << 20)  # + the tables
    where = f" writing {e.filename}" if isinstance(e, OSError) and e.filename else ""
    # the message of the OS error itself (a library's wrapper may carry another text)
    why = os.strerror(errno.EDQUOT if _errno_in_chain(e) == errno.EDQUOT else errno.ENOSPC)
    return (
        f"output folder {output} is full ({why}{where}): {free} bytes free, about {needed} bytes needed for "
        f"the {n_left} case(s) not finished (estimated from {n_finished} finished case(s)); "
        f"{n_finished} finished case(s) are kept: free space (or choose another OUTPUT) and run again to resume"
    )
