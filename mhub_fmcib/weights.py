"""Where the encoder weights come from: ``--weights``, then ``FMCIB_WEIGHTS``, then the user
cache; if none holds them, the published file is downloaded into the cache.

The environment is passed in explicitly (the CLI hands over ``os.environ``).
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .errors import WeightsError

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
    """Download ``url`` to ``dest`` with a progress bar (write to ``.part``, then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        part.replace(dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
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
