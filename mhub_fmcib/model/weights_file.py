"""The encoder weights file: where it is and what it is, without torch.

Resolution: ``--weights``, then ``FMCIB_WEIGHTS``, then the user cache; if none holds them,
the published file is downloaded into the cache. The environment is passed in explicitly
(the CLI hands over ``os.environ``). Identity: the file's sha256, remembered in the user
cache (:func:`cached_sha256`).

Nothing here imports torch: the commands and checks that only find or hash the file
(``version``, ``merge``, a run's manifest, a missing-weights error) start without it.
Reading and checking the tensors is :mod:`mhub_fmcib.model.weights`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from ..errors import WeightsError
from ..export.atomic import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

#: The published FMCIB encoder (Zenodo record 10528450, CC BY-NC 4.0).
ZENODO_RECORD = "10528450"
WEIGHTS_FILENAME = "model_weights.torch"
WEIGHTS_URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files/{WEIGHTS_FILENAME}"
ENV_WEIGHTS = "FMCIB_WEIGHTS"
ENV_CACHE = "FMCIB_CACHE_DIR"


@dataclass(frozen=True)
class WeightsLocation:
    """A resolved weights file and how it was found (``--weights``, ``FMCIB_WEIGHTS``,
    ``cache`` or ``download``)."""

    path: Path
    found_by: str


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """``$FMCIB_CACHE_DIR``, else ``$XDG_CACHE_HOME/mhub-fmcib``, else ``~/.cache/mhub-fmcib``."""
    if env.get(ENV_CACHE):
        return Path(env[ENV_CACHE])
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "mhub-fmcib"


def download(url: str, dest: Path, timeout_s: float = 60.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` with a progress bar (through the one atomic writer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None

            def copy(out: IO[bytes]) -> None:
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))

            atomic_write(dest, copy)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise WeightsError(
            f"could not download the FMCIB weights {WEIGHTS_FILENAME} from {url} ({e}). "
            f"Offline? Download it elsewhere and pass --weights FILE, set {ENV_WEIGHTS}=FILE, "
            f"or place it at {dest}."
        ) from e
    return dest


def resolve_weights(
    explicit: Path | None,
    env: Mapping[str, str],
    *,
    cache_dir: Path | None = None,
    url: str = WEIGHTS_URL,
    allow_download: bool = True,
    progress: bool = True,
) -> WeightsLocation:
    """Find the weights file (see module docstring).

    Raises:
        WeightsError: an explicitly named file is missing, or nothing is found and the
            download is disabled or fails; the message names the file, URL and variable.
    """
    if explicit is not None:
        if not Path(explicit).is_file():
            raise WeightsError(f"--weights {explicit}: no such file")
        return WeightsLocation(Path(explicit), "--weights")
    if env.get(ENV_WEIGHTS):
        p = Path(env[ENV_WEIGHTS])
        if not p.is_file():
            raise WeightsError(f"{ENV_WEIGHTS}={p}: no such file; fix the variable or unset it")
        return WeightsLocation(p, ENV_WEIGHTS)
    cache = (cache_dir or default_cache_dir(env)) / WEIGHTS_FILENAME
    if cache.is_file():
        return WeightsLocation(cache, "cache")
    if not allow_download:
        raise WeightsError(
            f"no FMCIB weights: pass --weights FILE, set {ENV_WEIGHTS}=FILE, or place "
            f"{WEIGHTS_FILENAME} (from {url}) at {cache}"
        )
    log.info("downloading %s into %s", url, cache)
    return WeightsLocation(download(url, cache, progress=progress), "download")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


#: File in the user cache that remembers the sha256 of weights files (see :func:`cached_sha256`).
HASH_CACHE_FILE = "sha256-cache.json"
_HASH_CACHE_ENTRIES = 32


def _file_key(st: os.stat_result) -> dict[str, int]:
    """What must be unchanged for a remembered hash to be trusted."""
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "device": st.st_dev,
    }


def _read_hash_cache(cache_file: Path) -> dict[str, dict[str, Any]]:
    try:
        obj = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = obj.get("entries") if isinstance(obj, dict) else None
    return {str(k): v for k, v in entries.items() if isinstance(v, dict)} if isinstance(entries, dict) else {}


def cached_sha256(path: Path, cache_dir: Path | None) -> str:
    """The file's sha256, remembered in ``cache_dir/sha256-cache.json`` under its resolved
    path with its size, mtime, ctime, inode and device: a remembered hash is used only when
    all five are unchanged, else the file is hashed again (~0.5 s for the 738 MB encoder).
    A hash is remembered only if the file did not change while it was read and its mtime lies
    before the read began (a file still being written is never remembered). ``cache_dir``
    ``None``, or a cache that cannot be read or written, just means hashing every time."""
    path = Path(path)
    if cache_dir is None:
        return sha256_file(path)
    cache_file = Path(cache_dir) / HASH_CACHE_FILE
    key = str(path.resolve())
    before = _file_key(path.stat())
    entries = _read_hash_cache(cache_file)
    hit = entries.get(key)
    if hit is not None and {k: hit.get(k) for k in before} == before and isinstance(hit.get("sha256"), str):
        return str(hit["sha256"])
    started_ns = time.time_ns()
    digest = sha256_file(path)
    if _file_key(path.stat()) != before or before["mtime_ns"] >= started_ns - 1_000_000_000:
        return digest
    entries.pop(key, None)
    entries[key] = {**before, "sha256": digest}
    keep = dict(list(entries.items())[-_HASH_CACHE_ENTRIES:])
    try:
        atomic_write_json(cache_file, {"version": 1, "entries": keep})
    except OSError as e:
        log.debug("sha256 cache %s not written (%s); the hash is computed again next time", cache_file, e)
    return digest
