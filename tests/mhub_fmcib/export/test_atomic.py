"""The one atomic writer: whole files or none, and modes as the umask allows (never 0600)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from mhub_fmcib.export.atomic import (
    atomic_directory,
    atomic_write,
    atomic_write_json,
    is_temporary,
    write_each,
    write_file,
)


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_files_and_folders_get_the_umask_modes(tmp_path: Path, umask: int) -> None:
    f = atomic_write_json(tmp_path / "a" / "run.json", {"x": 1})
    assert f.read_text() == '{\n  "x": 1\n}\n'
    assert _mode(f) == 0o666 & ~umask
    with atomic_directory(tmp_path / "rec") as tmp:
        write_file(tmp / "case.json", lambda fh: fh.write(b"{}"))
    assert _mode(tmp_path / "rec") == 0o777 & ~umask
    assert _mode(tmp_path / "rec" / "case.json") == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "rec"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = atomic_write(tmp_path / "f.csv", lambda fh: fh.write(b"old"))

    def broken(fh: IO[bytes]) -> None:
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.csv"]


def test_a_failed_directory_keeps_the_old_one(tmp_path: Path) -> None:
    dest = tmp_path / "rec"
    with atomic_directory(dest) as tmp:
        write_file(tmp / "a", lambda fh: fh.write(b"1"))

    def killed_half_way() -> None:
        with atomic_directory(dest) as tmp:
            write_file(tmp / "a", lambda fh: fh.write(b"2"))
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        killed_half_way()
    assert (dest / "a").read_bytes() == b"1"
    assert [p.name for p in tmp_path.iterdir()] == ["rec"]
    with atomic_directory(dest) as tmp:  # replacing swaps the whole folder
        write_file(tmp / "b", lambda fh: fh.write(b"3"))
    assert sorted(p.name for p in dest.iterdir()) == ["b"]


def test_temporary_names_are_recognised() -> None:
    assert is_temporary(".fmcib-tmp-features.csv.0a1b2c3d4e5f") and is_temporary(".fmcib-tmp-rec.old.0a1b2c")
    # leftovers of earlier versions' names
    assert is_temporary(".features.csv.0a1b2c3d4e5f.part")
    assert is_temporary(".tmp-abc-0a1b2c") and is_temporary("0123456789abcdef0123456789abcdef.old")
    assert not is_temporary("abc.old") and not is_temporary(".part")
    assert not is_temporary("features.csv") and not is_temporary(".hidden")


def test_write_each_writes_as_items_come_and_is_all_or_none(tmp_path: Path) -> None:
    """Items are written in order as the iterator yields them (``None``: nothing written);
    when the iterator or a write fails, the files already written are removed and the
    error is raised; files written before the call are left alone."""
    (tmp_path / "older.txt").write_text("kept")
    seen: list[str] = []

    def write(name: str) -> Path | None:
        seen.append(name)
        return None if name == "skip" else atomic_write_json(tmp_path / f"{name}.json", {"n": name})

    def items(fail_after: int | None) -> Iterator[str]:
        for k, name in enumerate(("a", "skip", "b")):
            if k == fail_after:
                raise ValueError(f"item {k} could not be built")
            assert seen == ["a", "skip", "b"][:k]  # the earlier items are written before the next is built
            yield name

    assert write_each(items(None), write) == [tmp_path / "a.json", tmp_path / "b.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "older.txt"]
    for p in (tmp_path / "a.json", tmp_path / "b.json"):
        p.unlink()
    seen.clear()
    with pytest.raises(ValueError, match="item 2"):
        write_each(items(2), write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["older.txt"]

    def failing(name: str) -> Path | None:
        if name == "b":
            raise OSError("disk full")
        return write(name)

    seen.clear()
    with pytest.raises(OSError, match="disk full"):
        write_each(items(None), failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["older.txt"]
