"""Provenance: which software and which weights produced a set of features.

The same block is printed by ``mhub-fmcib version``, stored in ``run.json`` and carried
in every DICOM SR (as algorithm parameters and Contributing Equipment software versions).
"""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata

from .errors import FmcibError

_SHA256_HEX = frozenset("0123456789abcdef")


def _dist_version(name: str) -> str | None:
    """Installed version of distribution ``name``, or ``None`` when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Provenance:
    """Versions of everything that determines the features, plus the weights' identity.

    Attributes:
        package_version: version of mhub-fmcib.
        weights_sha256: sha256 of the weights file, 64 lower-case hex digits.
        weights_path_name: file name (no folders) of the weights file.
        torch_version, monai_version, highdicom_version, pydicom_version: installed versions
            (``monai_version`` is ``None`` when MONAI is not installed; inference does not need it).
        python_version: e.g. ``"3.11.9"``.
        platform: :func:`platform.platform` string of the machine.
    """

    package_version: str
    weights_sha256: str
    weights_path_name: str
    torch_version: str
    monai_version: str | None
    highdicom_version: str
    pydicom_version: str
    python_version: str
    platform: str

    def __post_init__(self) -> None:
        sha = self.weights_sha256
        if len(sha) != 64 or not set(sha) <= _SHA256_HEX:
            raise ValueError(
                f"weights_sha256 must be 64 lower-case hex digits, got {sha!r}; pass "
                "LoadedWeights.sha256 from mhub_fmcib.model.weights.read_weights"
            )
        if not self.weights_path_name or "/" in self.weights_path_name:
            raise ValueError(f"weights_path_name must be a bare file name, got {self.weights_path_name!r}")

    def as_dict(self) -> dict[str, str | None]:
        """Field name -> value, JSON-serialisable (the ``provenance`` block of ``run.json``)."""
        return dict(asdict(self))

    def as_text(self) -> str:
        """The multi-line block printed by ``mhub-fmcib version`` (no trailing newline)."""
        lines = [
            f"mhub-fmcib {self.package_version}",
            f"weights    {self.weights_path_name} sha256 {self.weights_sha256}",
            f"torch      {self.torch_version}",
            f"monai      {self.monai_version or 'not installed'}",
            f"highdicom  {self.highdicom_version}",
            f"pydicom    {self.pydicom_version}",
            f"python     {self.python_version}",
            f"platform   {self.platform}",
        ]
        return "\n".join(lines)

    def as_parameters(self) -> list[str]:
        """``key=value`` strings, one per field (TID 4019 Algorithm Parameters in the SR)."""
        return [f"{k}={'' if v is None else v}" for k, v in self.as_dict().items()]


def collect_provenance(weights_sha256: str, weights_name: str) -> Provenance:
    """Provenance of this process for a weights file with sha256 ``weights_sha256``.

    Versions are read from the installed distributions' metadata, so nothing heavy is
    imported. ``weights_name`` may be a path; only its file name is kept.
    """
    torch_version = _dist_version("torch")
    highdicom_version = _dist_version("highdicom")
    pydicom_version = _dist_version("pydicom")
    missing = [
        n
        for n, v in (
            ("torch", torch_version),
            ("highdicom", highdicom_version),
            ("pydicom", pydicom_version),
        )
        if v is None
    ]
    if missing or torch_version is None or highdicom_version is None or pydicom_version is None:
        raise FmcibError(
            f"required packages are not installed: {', '.join(missing)}; "
            "reinstall mhub-fmcib with its dependencies (pip install mhub-fmcib)"
        )
    package_version = _dist_version("mhub-fmcib")
    if package_version is None:  # running from a source tree that is not installed
        from . import __version__

        package_version = __version__
    return Provenance(
        package_version=package_version,
        weights_sha256=weights_sha256.lower(),
        weights_path_name=weights_name.replace("\\", "/").rsplit("/", 1)[-1],
        torch_version=torch_version,
        monai_version=_dist_version("monai"),
        highdicom_version=highdicom_version,
        pydicom_version=pydicom_version,
        python_version=platform.python_version(),
        platform=platform.platform() or sys.platform,
    )
