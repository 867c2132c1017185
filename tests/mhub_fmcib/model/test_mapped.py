"""Giving back the resident pages of a memory-mapped weights file (``mhub_fmcib.model.mapped``):
measured in this process's ``/proc/self/smaps``, values checked against copies."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch

from mhub_fmcib.config import CpuEncoder
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.model.mapped import MappedFile
from mhub_fmcib.model.weights import read_weights

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps is Linux's")


def resident_kib(mapped: MappedFile) -> int:
    """Resident KiB of this process's mappings at ``mapped``'s ranges (``/proc/self/smaps``)."""
    starts = {lo for lo, _ in mapped.ranges}
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="utf-8") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                inside = int(head.split("-")[0], 16) in starts
            elif inside and head == "Rss:":
                total += int(line.split()[1])
    return total


def holding(mapped: MappedFile, tensors: Iterable[torch.Tensor]) -> MappedFile:
    """The ranges of ``mapped`` that hold one of ``tensors`` (the same file may also be
    mapped by an earlier load in this process, with pages of its own)."""
    ptrs = [t.data_ptr() for t in tensors]
    return MappedFile(tuple(r for r in mapped.ranges if any(r[0] <= p < r[1] for p in ptrs)))


def _mapped_file(tmp_path: Path, mib: int = 64) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Path]:
    """A file of two tensors (``mib`` MiB and a small one), loaded memory-mapped, and copies."""
    path = tmp_path / "w.torch"
    torch.manual_seed(0)
    torch.save({"big": torch.randn(mib * 2**18), "small": torch.randn(10)}, path)
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return sd, {k: v.clone() for k, v in sd.items()}, path


def test_release_gives_back_the_pages_and_keeps_the_values(tmp_path: Path) -> None:
    sd, copies, path = _mapped_file(tmp_path)
    mapped = MappedFile.of(path)
    assert mapped.ranges
    float(sd["big"].sum())  # read: every page resident
    before = resident_kib(mapped)
    assert before >= 60 * 1024
    advised = mapped.release(sd.values())
    assert advised >= 63 * 2**20  # the whole pages inside the big tensor
    assert resident_kib(mapped) <= before - 60 * 1024
    for k, v in sd.items():  # read again from the page cache: the file's values
        assert torch.equal(v, copies[k])


def test_the_mapping_is_found_by_device_and_inode(tmp_path: Path) -> None:
    """A hard link names the same file (same device and inode in ``/proc/self/maps``)
    under a path the maps never show."""
    sd, _, path = _mapped_file(tmp_path, mib=4)
    link = tmp_path / "other_name.torch"
    os.link(path, link)
    assert MappedFile.of(link).ranges == MappedFile.of(path).ranges != ()
    assert sd["big"].numel() == 4 * 2**18


def test_tensors_outside_the_mapping_are_never_touched(tmp_path: Path) -> None:
    """A tensor in the process's own memory is left alone (``MADV_DONTNEED`` would zero
    it), and a file that is not mapped has no ranges."""
    _, _, path = _mapped_file(tmp_path, mib=4)
    own = torch.randn(2**20)
    copy = own.clone()
    assert MappedFile.of(path).release([own]) == 0
    assert torch.equal(own, copy)
    unmapped = tmp_path / "other.bin"
    unmapped.write_bytes(b"\0" * 8192)
    assert MappedFile.of(unmapped).ranges == ()
    assert MappedFile.of(tmp_path / "absent").ranges == ()


def test_read_weights_leaves_no_page_of_the_file_resident(weights_file: Path) -> None:
    """The finiteness check reads all 738 MB of the mapped file; once read, its pages are
    given back (at most a few MiB stay resident: the tensors' partial edge pages)."""
    weights = read_weights(weights_file)
    if not weights.mapped.ranges:
        pytest.skip("the weights file is not mapped here")
    assert resident_kib(holding(weights.mapped, weights.state_dict.values())) < 8 * 1024
    assert bool(torch.isfinite(weights.state_dict["conv1.weight"]).all())  # still readable


def test_the_fused_extractor_gives_back_what_it_folds(weights_file: Path) -> None:
    """Packing the fused encoder reads the mapped tensors again, block by block, and gives
    their pages back as it goes: afterwards nothing of the file stays resident, and the
    features are those of the eager network on the same (re-read) tensors."""
    weights = read_weights(weights_file)
    if not weights.mapped.ranges:
        pytest.skip("the weights file is not mapped here")
    fused = FeatureExtractor(weights, device="cpu", batch_size=2)
    assert fused.encoder == "fused"
    assert resident_kib(holding(weights.mapped, weights.state_dict.values())) < 8 * 1024
    eager = FeatureExtractor(weights, device="cpu", batch_size=2, cpu_encoder=CpuEncoder.EAGER)
    x = np.random.default_rng(1).normal(0.2, 0.3, size=(2, 50, 50, 50)).astype(np.float32)
    assert float(np.abs(fused.extract(x) - eager.extract(x)).max()) < 2e-4
