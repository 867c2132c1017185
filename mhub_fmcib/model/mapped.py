"""The pages of a memory-mapped weights file: given back once they have been read.

``torch.load(mmap=True)`` maps the 738 MB weights file; every page read (the finiteness
check, the folding of the fused encoder) stays resident and counts in the process's RSS
until the mapping goes. While the fused encoder is packed, the mapped file and the folded
copy would both be resident (1.71 GiB peak for the encoder alone, measured; 1.16 GiB with
the pages given back).
:meth:`MappedFile.release` drops this process's resident pages of tensors that lie in the
file's mapping (``madvise(MADV_DONTNEED)``): the page cache keeps them, and a later read
maps them again with the file's bytes, so the tensors' values never change. The
weights are read, never written, so no page of the mapping holds anything but the file's
bytes. Tensors outside the mapping (read into memory, or built in the process) are never
touched. Off Linux, or where ``/proc/self/maps`` cannot be read, releasing does nothing.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

#: ``madvise`` advice (Linux): drop the calling process's mapping of the pages.
_MADV_DONTNEED = 4


def _maps_lines() -> list[str]:
    """The lines of ``/proc/self/maps`` (none where it cannot be read)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


@dataclass(frozen=True)
class MappedFile:
    """The address ranges ``[start, end)`` (bytes) at which this process maps one file."""

    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, path: Path) -> MappedFile:
        """Where ``path`` is mapped now: the ``/proc/self/maps`` entries of the same file
        (its resolved path, or its device and inode)."""
        if not sys.platform.startswith("linux"):
            return cls()
        try:
            st = os.stat(path)
        except OSError:
            return cls()
        real = os.path.realpath(path)
        device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"  # as the kernel prints it
        ranges = []
        for line in _maps_lines():
            fields = line.split(maxsplit=5)
            if len(fields) < 6:
                continue
            span, _, _, dev, inode, name = fields
            if name.strip() == real or (inode == str(st.st_ino) and dev == device):
                lo, _, hi = span.partition("-")
                ranges.append((int(lo, 16), int(hi, 16)))
        return cls(tuple(ranges))

    def release(self, tensors: Iterable[torch.Tensor]) -> int:
        """Drop this process's resident pages of each tensor that lies in the mapping
        (whole pages inside the tensor only); returns the bytes advised.

        Only for tensors this process has never written: the mapping is copy-on-write, and
        a written page would be dropped with what was written (the weights are only read:
        checked, folded, or used as the eager network's parameters in eval mode)."""
        if not self.ranges:
            return 0
        libc = ctypes.CDLL(None)
        page = mmap.PAGESIZE
        advised = 0
        for t in tensors:
            lo = t.data_ptr()
            hi = lo + t.numel() * t.element_size()
            if not any(a <= lo and hi <= b for a, b in self.ranges):
                continue
            start, stop = -(-lo // page) * page, hi // page * page
            if stop <= start:
                continue
            if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start), _MADV_DONTNEED) == 0:
                advised += stop - start
        return advised
