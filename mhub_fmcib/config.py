"""The one typed object through which every setting of a run enters.

The CLI (:meth:`RunConfig.from_args`), workflow files and tests build a :class:`RunConfig`;
the container and DICOMweb paths derive theirs with :func:`dataclasses.replace`. ``run.json``
stores it (:meth:`RunConfig.to_dict`) and ``merge`` reads it back (:meth:`RunConfig.from_dict`).
Nothing below reads environment variables except
:func:`mhub_fmcib.model.weights_file.resolve_weights`, which is given the environment explicitly.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError
from .image_io import is_image_file


class InputKind(str, Enum):
    """What the INPUT argument is."""

    DICOM_FOLDER = "dicom_folder"
    """A folder tree of DICOM files: CT series with SEG/RTSTRUCT objects that reference them."""
    IMAGE_FILE = "image_file"
    """A NIfTI, NRRD or MHA image with ``--mask``."""
    SEEDS_CSV = "seeds_csv"
    """A reference-format seeds CSV (``image_path, coordX, coordY, coordZ`` in LPS mm)."""


class Precision(str, Enum):
    """Arithmetic of the encoder's forward pass (``--precision``). Features are float32 on
    output in every case; only ``fp32`` gives the reference's numbers (see
    ``benchmarks/README.md`` for the measured deviation of the others)."""

    FP32 = "fp32"
    """float32 throughout (default)."""
    BF16 = "bf16"
    """torch autocast to bfloat16 (CUDA; CPUs with AVX-512 BF16 or AMX)."""
    FP16 = "fp16"
    """torch autocast to float16 (CUDA only)."""


class CpuEncoder(str, Enum):
    """How the encoder runs on a CPU in float32 (``--cpu-encoder``). Both give the
    reference's numbers up to float32 rounding (at most ~1.6e-6 of the feature scale apart,
    measured); see :mod:`mhub_fmcib.model.extractor`."""

    FUSED = "fused"
    """Folded, pre-packed oneDNN convolutions (default): 1.4-1.5x eager, ~0.5 s set-up."""
    EAGER = "eager"
    """The PyTorch network as written (the bit-exact MONAI-layout network)."""


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
        batch_size: patches per forward pass; ``None`` (``--batch-size auto``): chosen by
            free memory (:func:`mhub_fmcib.model.extractor.choose_batch_size`; at most 16 on
            a CPU).
        cpu_encoder: on a CPU in float32, :class:`CpuEncoder` (fused by default).
        precision: encoder arithmetic, :class:`Precision` (recorded in ``run.json``,
            ``features.csv`` and the SR).
        channels_last: run the encoder in the channels-last-3d memory format.
        prefetch: prepare the next case (decoding, patches) in a thread while the encoder
            runs the current one; ``None`` (``--prefetch auto``): on a CUDA device only.
            Results and their order do not depend on it.
        export_sr: write a TID 1500 SR per CT series (DICOM workflows).
        export_seg: write the "patch region" SEG per CT series (DICOM workflows).
        export_qc: write QC pictures and ``qc/index.html``.
        heads: linear head files (``mhub-fmcib-train probe`` output) to apply.
        segmentation_sources: DICOM objects lesions come from, ``"SEG"`` and/or ``"RTSTRUCT"``.
        workflow: name of the workflow file the settings came from, if any.
        sr_max_lesions: largest number of lesions written into one SR (4096 measurements each);
            a series with more lesions gets several SRs, each with at most this many.
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
    batch_size: int | None = None
    cpu_encoder: CpuEncoder = CpuEncoder.FUSED
    precision: Precision = Precision.FP32
    channels_last: bool = False
    prefetch: bool | None = None
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
        if self.batch_size is not None and self.batch_size < 1:
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
        if self.sr_max_lesions < 1:
            raise ConfigError(f"--sr-max-lesions must be at least 1, got {self.sr_max_lesions}")
        bad = sorted(set(self.segmentation_sources) - {"SEG", "RTSTRUCT"})
        if bad:
            raise ConfigError(f"unknown segmentation source(s) {bad}; use SEG and/or RTSTRUCT")
        if self.input_kind is not InputKind.IMAGE_FILE and self.mask is not None:
            raise ConfigError("--mask only applies when INPUT is an image file (NIfTI, NRRD, MHA)")

    def to_dict(self) -> dict[str, object]:
        """Every setting, JSON-ready (paths as strings, tuples as lists): ``run.json``'s ``inputs``."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Enum):
                v = v.value
            elif isinstance(v, Path):
                v = str(v)
            elif isinstance(v, tuple):
                v = [str(x) if isinstance(x, Path) else x for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_dict`; settings absent from ``d`` take their defaults.

        Raises:
            ConfigError: a setting is unknown or invalid.
        """
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)} - {"optimize_cpu"})
        if unknown:
            raise ConfigError(f"unknown run setting(s) {unknown}")
        missing = [k for k in ("input", "output") if d.get(k) is None]
        if missing:
            raise ConfigError(f"run settings lack {missing}")
        kw: dict[str, Any] = dict(d)
        for key in ("input", "output"):
            kw[key] = Path(kw[key])
        for key in ("mask", "weights"):
            if kw.get(key) is not None:
                kw[key] = Path(kw[key])
        kw.pop("optimize_cpu", None)  # older run.json: the traced encoder, replaced by the fused one
        enums: dict[str, Callable[[Any], Enum]] = {
            "input_kind": InputKind, "precision": parse_precision, "cpu_encoder": parse_cpu_encoder,
        }  # fmt: skip
        for key, parse in enums.items():
            if key in kw:
                kw[key] = parse(kw[key])
        if "heads" in kw:
            kw["heads"] = tuple(Path(h) for h in kw["heads"])
        for key in ("segments", "segmentation_sources"):
            if key in kw:
                kw[key] = tuple(str(x) for x in kw[key])
        if kw.get("shard") is not None:
            kw["shard"] = (int(kw["shard"][0]), int(kw["shard"][1]))
        return cls(**kw)

    @classmethod
    def from_args(
        cls,
        args: argparse.Namespace,
        *,
        input: Path | None = None,
        output: Path | None = None,
        seeds: bool | None = None,
    ) -> RunConfig:
        """The run's configuration from parsed command-line arguments (and ``--workflow``).

        ``input``/``output``/``seeds`` replace ``args.input``/``args.output``/``args.seeds``
        (the container's mounts and workflow).

        Raises:
            ConfigError: a setting is missing, invalid, or contradicts the workflow.
        """
        input = input if input is not None else args.input
        output = output if output is not None else args.output
        if output is None:
            raise ConfigError("missing OUTPUT folder: mhub-fmcib run INPUT OUTPUT")
        kind = infer_input_kind(input, args.seeds if seeds is None else seeds)
        common: dict[str, Any] = dict(
            mask=args.mask,
            segments=tuple(s.strip() for item in args.segments for s in item.split(",") if s.strip()),
            weights=args.weights,
            device=args.device,
            batch_size=parse_batch_size(str(args.batch_size)),
            heads=tuple(args.head),
            shard=parse_shard(args.shard),
            resume=not args.no_resume,
            index_workers=args.workers,
            sr_max_lesions=args.sr_max_lesions,
            cpu_encoder=parse_cpu_encoder(args.cpu_encoder),
            precision=parse_precision(args.precision),
            channels_last=args.channels_last,
            prefetch=parse_switch(args.prefetch, "--prefetch"),
        )
        off = {key: False for flag, key in _EXPORT_FLAGS if getattr(args, flag)}
        if not args.workflow:
            return cls(input=input, output=output, input_kind=kind, **{**common, **off})
        from .workflows import load_workflow, make_run_config  # workflows/ builds on this module

        wf = load_workflow(args.workflow)
        if wf.input_kind is not kind:
            raise ConfigError(
                f"workflow {wf.name} reads {wf.input_kind.value} input, but {input} is "
                f"{kind.value}; pick the matching workflow (`mhub-fmcib workflows`)"
            )
        return make_run_config(wf, input, output, **common, **off)


#: ``--no-*`` flags and the export settings they turn off.
_EXPORT_FLAGS = (("no_sr", "export_sr"), ("no_seg", "export_seg"), ("no_qc", "export_qc"))


_Choice = TypeVar("_Choice", bound=Enum)


def _parse_choice(kind: type[_Choice], text: object, flag: str) -> _Choice:
    """``text`` (any case) as a member of the string enum ``kind``.

    Raises:
        ConfigError: not one of its values; the message names ``flag`` and the values.
    """
    try:
        return kind(str(text).lower())
    except ValueError:
        values = [str(m.value) for m in kind]
        allowed = f"{', '.join(values[:-1])} or {values[-1]}"
        raise ConfigError(f"{flag} must be {allowed}, got {text!r}") from None


def parse_precision(text: object) -> Precision:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` -> :class:`Precision`.

    Raises:
        ConfigError: any other value.
    """
    return _parse_choice(Precision, text, "--precision")


def parse_cpu_encoder(text: object) -> CpuEncoder:
    """``"fused"`` or ``"eager"`` -> :class:`CpuEncoder`.

    Raises:
        ConfigError: any other value.
    """
    return _parse_choice(CpuEncoder, text, "--cpu-encoder")


def parse_batch_size(text: str) -> int | None:
    """``--batch-size``: ``"auto"`` -> ``None``, else a whole number (checked by RunConfig).

    Raises:
        ConfigError: neither.
    """
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--batch-size must be a whole number or auto, got {text!r}") from None


def parse_switch(text: str, flag: str) -> bool | None:
    """``"auto"`` -> ``None``, ``"on"`` -> ``True``, ``"off"`` -> ``False``.

    Raises:
        ConfigError: any other value.
    """
    values = {"auto": None, "on": True, "off": False}
    key = text.strip().lower()
    if key not in values:
        raise ConfigError(f"{flag} must be auto, on or off, got {text!r}")
    return values[key]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/N"`` -> (i, N)."""
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as e:
        raise ConfigError(f"--shard must look like 0/4 (shard index / number of shards), got {text!r}") from e
    return i, n


def infer_input_kind(path: Path, seeds: bool) -> InputKind:
    """INPUT's kind from the command line: ``--seeds`` or a ``.csv`` file → seeds CSV; an
    image file; else DICOM."""
    if seeds or (path.suffix.lower() == ".csv" and not path.is_dir()):
        return InputKind.SEEDS_CSV
    if path.is_file() and is_image_file(path):
        return InputKind.IMAGE_FILE
    return InputKind.DICOM_FOLDER
