"""The one typed object through which every setting of a run enters.

The CLI, workflow files and tests build a :class:`RunConfig`; nothing below reads
environment variables except :func:`mhub_fmcib.model.weights.resolve_weights`, which is given
the environment explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .errors import ConfigError


class InputKind(str, Enum):
    """What the INPUT argument is."""

    DICOM_FOLDER = "dicom_folder"
    """A folder tree of DICOM files: CT series with SEG/RTSTRUCT objects that reference them."""
    IMAGE_FILE = "image_file"
    """A NIfTI, NRRD or MHA image with ``--mask``."""
    SEEDS_CSV = "seeds_csv"
    """A reference-format seeds CSV (``image_path, coordX, coordY, coordZ`` in LPS mm)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs.

    Attributes:
        input: folder or file to read (see ``input_kind``).
        output: folder to write ``features.csv``, ``run.json`` and DICOM outputs into.
        input_kind: how to interpret ``input``.
        mask: mask file for ``IMAGE_FILE`` inputs (each non-zero label is a lesion).
        segments: keep only these segments (numbers as ``"1"`` or labels); empty keeps all.
        weights: explicit weights file (``--weights``); else resolved from env/cache.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: patches per forward pass.
        optimize_cpu: on CPU, trace and freeze the encoder for oneDNN (~10-15 % faster at
            batch 8, ~1.6 GB more memory, batches padded to ``batch_size``; features differ
            from eager mode by float32 rounding only).
        export_sr: write a TID 1500 SR per CT series (DICOM workflows).
        export_seg: write the "patch region" SEG per CT series (DICOM workflows).
        export_qc: write QC pictures and ``qc/index.html``.
        heads: linear head files (``mhub-fmcib-train probe`` output) to apply.
        segmentation_sources: DICOM objects lesions come from, ``"SEG"`` and/or ``"RTSTRUCT"``.
        workflow: name of the workflow file the settings came from, if any.
        sr_max_lesions: largest number of lesions written into one SR (4096 measurements each).
        shard: ``(i, n)``: process only the cases whose series-UID hash falls in shard i of n.
        resume: skip cases already finished with the same inputs, weights and version.
        index_workers: processes used to read DICOM headers while indexing.
    """

    input: Path
    output: Path
    input_kind: InputKind = InputKind.DICOM_FOLDER
    mask: Path | None = None
    segments: tuple[str, ...] = ()
    weights: Path | None = None
    device: str = "auto"
    batch_size: int = 4
    optimize_cpu: bool = False
    export_sr: bool = True
    export_seg: bool = True
    export_qc: bool = True
    heads: tuple[Path, ...] = ()
    segmentation_sources: tuple[str, ...] = ("SEG",)
    workflow: str | None = None
    sr_max_lesions: int = 50
    shard: tuple[int, int] | None = None
    resume: bool = True
    index_workers: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.input_kind is InputKind.IMAGE_FILE and self.mask is None:
            raise ConfigError(
                f"{self.input} is an image file: pass its segmentation with --mask MASKFILE "
                "(or give seed points with --seeds)"
            )
        if self.shard is not None and not (self.shard[1] >= 1 and 0 <= self.shard[0] < self.shard[1]):
            raise ConfigError(f"--shard must be i/N with 0 <= i < N, got {self.shard[0]}/{self.shard[1]}")
        if self.index_workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.index_workers}")
        bad = sorted(set(self.segmentation_sources) - {"SEG", "RTSTRUCT"})
        if bad:
            raise ConfigError(f"unknown segmentation source(s) {bad}; use SEG and/or RTSTRUCT")
        if self.input_kind is not InputKind.IMAGE_FILE and self.mask is not None:
            raise ConfigError("--mask only applies when INPUT is an image file (NIfTI, NRRD, MHA)")
