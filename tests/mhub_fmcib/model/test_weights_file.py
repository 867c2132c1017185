"""The weights file without torch (:mod:`mhub_fmcib.model.weights_file`): resolution order,
a real (loopback) download with resume-safe writes, the offline message, and the sha256
cache, used only while path, size, mtime, ctime, inode and device are unchanged."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mhub_fmcib.errors import WeightsError
from mhub_fmcib.model.weights_file import (
    ENV_WEIGHTS,
    HASH_CACHE_FILE,
    WEIGHTS_FILENAME,
    WEIGHTS_URL,
    cached_sha256,
    default_cache_dir,
    resolve_weights,
    sha256_file,
)


def test_order_explicit_env_cache(tmp_path: Path) -> None:
    a, b = tmp_path / "a.torch", tmp_path / "b.torch"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    cache = tmp_path / "cache"
    (cache).mkdir()
    (cache / WEIGHTS_FILENAME).write_bytes(b"c")
    env = {ENV_WEIGHTS: str(b)}
    assert resolve_weights(a, env, cache_dir=cache).found_by == "--weights"
    assert resolve_weights(None, env, cache_dir=cache).path == b
    got = resolve_weights(None, {}, cache_dir=cache)
    assert (got.path, got.found_by) == (cache / WEIGHTS_FILENAME, "cache")


def test_bad_explicit_and_env(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such file"):
        resolve_weights(tmp_path / "x", {})
    with pytest.raises(WeightsError, match=ENV_WEIGHTS):
        resolve_weights(None, {ENV_WEIGHTS: str(tmp_path / "y")})


def test_cache_dir_from_env(tmp_path: Path) -> None:
    assert default_cache_dir({"FMCIB_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "mhub-fmcib"


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    (served / WEIGHTS_FILENAME).write_bytes(b"x" * 3_000_000)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, directory=str(served), **k)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_download_into_cache(tmp_path: Path, file_server: str) -> None:
    cache = tmp_path / "cache"
    got = resolve_weights(None, {}, cache_dir=cache, url=f"{file_server}/{WEIGHTS_FILENAME}", progress=False)
    assert got.found_by == "download"
    assert got.path.read_bytes() == b"x" * 3_000_000
    assert not list(cache.glob("*.part"))
    # second time: from the cache
    assert resolve_weights(None, {}, cache_dir=cache, url="http://127.0.0.1:9/none").found_by == "cache"


def test_offline_message_names_file_url_and_variable(tmp_path: Path, file_server: str) -> None:
    url = f"{file_server}/missing/{WEIGHTS_FILENAME}"  # 404 from a real server
    with pytest.raises(WeightsError) as e:
        resolve_weights(None, {}, cache_dir=tmp_path / "cache", url=url, progress=False)
    msg = str(e.value)
    assert WEIGHTS_FILENAME in msg and url in msg and ENV_WEIGHTS in msg
    assert not list((tmp_path / "cache").glob("*"))  # nothing half-written
    with pytest.raises(WeightsError, match=WEIGHTS_URL.replace(".", r"\.")):
        resolve_weights(None, {}, cache_dir=tmp_path, allow_download=False)


def _old_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    os.utime(path, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    return path


def _poison_cache(cache: Path, path: Path) -> None:
    """Replace the remembered hash by a marker, to see whether it is trusted."""
    doc = json.loads((cache / HASH_CACHE_FILE).read_text())
    doc["entries"][str(path.resolve())]["sha256"] = "remembered"
    (cache / HASH_CACHE_FILE).write_text(json.dumps(doc))


def test_cached_hash_is_used_while_the_file_is_unchanged(tmp_path: Path) -> None:
    f = _old_file(tmp_path / "w.torch", b"weights")
    cache = tmp_path / "cache"
    assert cached_sha256(f, cache) == sha256_file(f)
    _poison_cache(cache, f)
    assert cached_sha256(f, cache) == "remembered"
    assert cached_sha256(f, None) == sha256_file(f)  # no cache: always hashed


@pytest.mark.parametrize("change", ["size", "mtime", "inode"])
def test_cached_hash_is_invalidated(tmp_path: Path, change: str) -> None:
    f = _old_file(tmp_path / "w.torch", b"weights-1")
    cache = tmp_path / "cache"
    cached_sha256(f, cache)
    _poison_cache(cache, f)
    if change == "size":
        _old_file(f, b"weights-22")
    elif change == "mtime":  # same size and inode, content changed in place
        with open(f, "r+b") as fh:
            fh.write(b"W")
        os.utime(f, ns=(1_600_000_001 * 10**9, 1_600_000_001 * 10**9))
    else:  # same bytes and mtime, another file (copied over, then renamed into place)
        copy = tmp_path / "copy"
        shutil.copy2(f, copy)
        old_inode = f.stat().st_ino
        copy.replace(f)
        assert f.stat().st_ino != old_inode and f.stat().st_mtime_ns == 1_600_000_000 * 10**9
    assert cached_sha256(f, cache) == sha256_file(f) != "remembered"


def test_a_file_just_written_is_not_remembered(tmp_path: Path) -> None:
    f = tmp_path / "w.torch"
    f.write_bytes(b"fresh")  # mtime now: it may still be being written
    cache = tmp_path / "cache"
    assert cached_sha256(f, cache) == sha256_file(f)
    assert not (cache / HASH_CACHE_FILE).exists()


def test_unwritable_or_corrupt_cache_only_means_hashing(tmp_path: Path) -> None:
    f = _old_file(tmp_path / "w.torch", b"weights")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    assert cached_sha256(f, blocker) == sha256_file(f)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / HASH_CACHE_FILE).write_text("{not json")
    assert cached_sha256(f, cache) == sha256_file(f)
