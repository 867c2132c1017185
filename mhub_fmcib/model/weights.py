"""The encoder weights: where they come from, how they are read and checked, their hash.

Resolution: ``--weights``, then ``FMCIB_WEIGHTS``, then the user cache; if none holds them,
the published file is downloaded into the cache. The environment is passed in explicitly
(the CLI hands over ``os.environ``). Reading: ``torch.load(weights_only=True)``, the trunk
found in the published or a Lightning layout, checked strictly against :class:`FmcibResNet`.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch
from torch import nn
from tqdm import tqdm

from ..errors import WeightsError
from ..export.atomic import atomic_write
from .network import FmcibResNet

log = logging.getLogger(__name__)

#: The published FMCIB encoder (Zenodo record 10528450, CC BY-NC 4.0).
ZENODO_RECORD = "10528450"
WEIGHTS_FILENAME = "model_weights.torch"
WEIGHTS_URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files/{WEIGHTS_FILENAME}"
ENV_WEIGHTS = "FMCIB_WEIGHTS"
ENV_CACHE = "FMCIB_CACHE_DIR"
#: Prefixes under which Lightning checkpoints store the trunk.
TRUNK_PREFIXES = ("model.trunk.", "trunk.", "model.backbone.", "backbone.", "model.", "module.")


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


def _extract_trunk(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise WeightsError(
            f"{path}: expected a dict saved with torch.save, got {type(obj).__name__}. "
            "Pass the published model_weights.torch or a checkpoint with 'trunk_state_dict'."
        )
    if "trunk_state_dict" in obj:
        sd = obj["trunk_state_dict"]
    elif "state_dict" in obj:
        full = obj["state_dict"]
        if not isinstance(full, Mapping):
            raise WeightsError(f"{path}: 'state_dict' is not a mapping of tensors")
        sd = {}
        for prefix in TRUNK_PREFIXES:
            sd = {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}
            if "conv1.weight" in sd:
                break
        else:
            if "conv1.weight" in full:
                sd = dict(full)
        if not sd:
            raise WeightsError(
                f"{path}: 'state_dict' holds no encoder tensors under any of the prefixes "
                f"{', '.join(TRUNK_PREFIXES)} (first keys: {list(full)[:5]})"
            )
    elif "conv1.weight" in obj:
        sd = obj
    else:
        raise WeightsError(
            f"{path}: no 'trunk_state_dict' or 'state_dict' entry (keys: {list(obj)[:10]}). "
            "This does not look like FMCIB weights."
        )
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: the encoder state dict must map names to tensors")
    return {str(k): v for k, v in sd.items()}


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise :class:`WeightsError` naming every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    misshaped = sorted(
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(sd) & set(expected)
        if tuple(sd[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or misshaped:
        parts = []
        for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = ", ".join(items[:8]) + (f" … (+{len(items) - 8} more)" if len(items) > 8 else "")
                parts.append(f"{len(items)} {name}: {shown}")
        raise WeightsError(
            f"{path} does not match the FMCIB encoder ({'; '.join(parts)}). "
            "Pass the published model_weights.torch (Zenodo record 10528450) or a trunk "
            "exported by mhub-fmcib-train."
        )


def is_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like a file ``torch.save`` writes: a zip archive (the format
    since torch 1.6) or a pickle (the legacy format: protocol byte 0x80, protocol 2-5)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head[:4] == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read the encoder tensors from a weights file with ``torch.load(weights_only=True)``."""
    try:
        torch_file = is_torch_file(path)
        obj = torch.load(path, map_location="cpu", weights_only=True) if torch_file else None
    except FileNotFoundError as e:
        raise WeightsError(f"weights file {path} does not exist") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise WeightsError(
            f"{path} cannot be read as a torch weights file ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Is it truncated or a different format?"
        ) from e
    except Exception as e:
        raise WeightsError(
            f"{path} holds objects that cannot be loaded safely with weights_only=True "
            f"({type(e).__name__}). Only plain tensor dicts are accepted."
        ) from e
    if not torch_file:
        raise WeightsError(
            f"{path} is not a PyTorch weights file (it is neither the zip archive nor the pickle that "
            "torch.save writes). Check the path, or download the FMCIB weights again."
        )
    return _extract_trunk(obj, path)


@dataclass(frozen=True)
class LoadedWeights:
    """Encoder weights read from a file, with the file's sha256."""

    path: Path
    sha256: str
    state_dict: Mapping[str, torch.Tensor]


def read_weights(path: Path) -> LoadedWeights:
    """Read and check a weights file against the FMCIB encoder (strictly)."""
    path = Path(path)
    sd = load_state_dict_file(path)
    check_state_dict(FmcibResNet(), sd, path)
    return LoadedWeights(path=path, sha256=sha256_file(path), state_dict=sd)


def write_random_weights(path: Path, seed: int = 0, layout: str = "trunk") -> Path:
    """Write a random-initialised encoder in the published file format (for tests and demos).

    ``layout``: ``"trunk"`` writes ``{"trunk_state_dict": ...}`` like ``model_weights.torch``;
    ``"lightning"`` writes ``{"state_dict": {"model.trunk.<name>": ...}}``.
    BatchNorm running statistics are randomised too so that they matter.
    """
    torch.manual_seed(seed)
    model = FmcibResNet()
    sd = model.state_dict()
    g = torch.Generator().manual_seed(seed + 1)
    for k, v in sd.items():
        if k.endswith("running_mean"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        elif k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
        elif k.endswith(".bias") and "bn" in k:
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
    if layout == "trunk":
        obj: dict[str, object] = {"trunk_state_dict": sd}
    elif layout == "lightning":
        obj = {"state_dict": {f"model.trunk.{k}": t for k, t in sd.items()}}
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return atomic_write(path, lambda fh: torch.save(obj, fh))
