"""One typed config file per run: TOML → frozen dataclasses.

Each command has a top-level dataclass (:class:`PretrainConfig`, :class:`FinetuneConfig`,
:class:`ProbeConfig`, :class:`SyntheticConfig`) whose nested sections are TOML tables.
Unknown keys and wrong types raise :class:`ConfigError` naming the key; relative paths are
resolved against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from mhub_fmcib.errors import ConfigError

from .models.encoder import EncoderConfig

T = TypeVar("T")

FRACTIONS = (1.0, 0.5, 0.2, 0.1)


@dataclass(frozen=True)
class DataConfig:
    """Lesion table and patch cache.

    Attributes:
        seeds_csv: reference seeds CSV (``image_path, coordX, coordY, coordZ`` in LPS mm, plus
            label, ``split`` and ``time``/``event`` columns as needed).
        cache_dir: folder of the patch cache (built once, reused while its key matches).
        region_size: edge of the cached 1 mm cube per seed, in voxels (≥ 50; 64 leaves room
            for the random resized crop and translations).
        background_per_scan: K background cubes per scan that overlap no lesion cube.
        background_max_air: reject a background cube whose fraction of voxels below −900 HU
            exceeds this (falls back to the best candidate after 200 tries).
        split_column: column holding ``train``/``tune``/``test``; if absent from the CSV,
            scans are split at random (``split_ratios``, seeded by ``split_seed``).
        fraction: keep this seeded random fraction of train and tune (1, 0.5, 0.2, 0.1);
            the test set is always complete.
        fraction_seed: seed of that subset.
        label_column: label used by finetune/probe (ignored by pretrain).
        workers: DataLoader worker processes (0: load in the training process).
    """

    seeds_csv: Path
    cache_dir: Path
    region_size: int = 64
    background_per_scan: int = 4
    background_max_air: float = 0.5
    split_column: str = "split"
    split_ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    fraction: float = 1.0
    fraction_seed: int = 0
    label_column: str = "label"
    workers: int = 0

    def __post_init__(self) -> None:
        if self.region_size < 50 or self.region_size % 2:
            raise ConfigError(f"data.region_size must be even and >= 50, got {self.region_size}")
        if self.fraction not in FRACTIONS:
            raise ConfigError(f"fraction must be one of {FRACTIONS}, got {self.fraction}")
        if self.background_per_scan < 0:
            raise ConfigError("data.background_per_scan must be >= 0")
        if len(self.split_ratios) != 3 or abs(sum(self.split_ratios) - 1) > 1e-6:
            raise ConfigError(f"data.split_ratios must be 3 numbers summing to 1, got {self.split_ratios}")


@dataclass(frozen=True)
class AugmentConfig:
    """SimCLR view augmentations (pre-training); values in normalised units.

    Attributes:
        crop_scale: range of the crop's volume relative to the 50³ output (0.5–1).
        crop_ratio: range of each axis's aspect factor (log-uniform).
        flip_p: probability of flipping each axis.
        histogram_shift_p / histogram_points: MONAI-style random histogram shift.
        smooth_p / smooth_sigma: Gaussian smoothing, sigma (voxels) drawn per axis.
    """

    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333)
    flip_p: float = 0.5
    histogram_shift_p: float = 0.5
    histogram_points: int = 10
    smooth_p: float = 0.5
    smooth_sigma: tuple[float, float] = (0.25, 1.5)


@dataclass(frozen=True)
class PretrainConfig:
    """``mhub-fmcib-train pretrain``.

    Attributes:
        output_dir: checkpoints/, log.csv, encoder.pt, config.toml go here.
        batch_size: lesions per process per step (two views each).
        background_per_lesion: background views per lesion added to the denominators.
        epochs / max_steps: stop after ``epochs`` passes or ``max_steps`` steps (if > 0).
        lr: base learning rate; 0 means ``0.3 * global_batch / 256``.
        warmup_steps: linear warm-up steps; cosine decay to ``final_lr_ratio`` after.
        checkpoint_every: steps between checkpoints (and one at the end).
        stop_after: stop (as if killed) after this many steps of this launch (tests); 0: never.
        sync_batchnorm: convert BatchNorm to SyncBatchNorm under DDP.
        bf16: bf16 autocast when running on CUDA.
        device: ``auto``, ``cpu`` or ``cuda``.
        tensorboard: also write TensorBoard events (needs the tensorboard package).
    """

    data: DataConfig
    output_dir: Path
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    projection_hidden: int = 2048
    projection_dim: int = 128
    temperature: float = 0.1
    batch_size: int = 32
    background_per_lesion: int = 1
    epochs: int = 100
    max_steps: int = 0
    lr: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 1e-6
    trust_coefficient: float = 1e-3
    lars_clip: bool = True
    warmup_steps: int = 10
    final_lr_ratio: float = 0.0
    checkpoint_every: int = 100
    log_every: int = 1
    stop_after: int = 0
    sync_batchnorm: bool = False
    bf16: bool = True
    device: str = "auto"
    seed: int = 0
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 (contrastive loss), got {self.batch_size}")
        if self.epochs < 1 and self.max_steps < 1:
            raise ConfigError("set epochs or max_steps to at least 1")


@dataclass(frozen=True)
class FinetuneConfig:
    """``mhub-fmcib-train finetune``.

    Attributes:
        init: ``foundation`` (``weights``: an exported/published trunk), ``random``
            (supervised baseline) or ``checkpoint`` (``weights``: another task's best.pt).
        task: ``binary`` (one logit, label values 0/1 or two classes) or ``classification``.
        head_hidden: hidden sizes of the MLP head.
        translate: maximum random translation per axis in voxels (±).
        step_size / gamma: multiply the learning rate by ``gamma`` every ``step_size`` epochs.
    """

    data: DataConfig
    output_dir: Path
    init: Literal["foundation", "random", "checkpoint"] = "foundation"
    weights: Path | None = None
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    task: Literal["binary", "classification"] = "binary"
    head_hidden: tuple[int, ...] = (256,)
    dropout: float = 0.0
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    step_size: int = 30
    gamma: float = 0.1
    translate: int = 10
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init in ("foundation", "checkpoint") and self.weights is None:
            raise ConfigError(f"init = {self.init!r} needs weights = PATH in the config")


@dataclass(frozen=True)
class ProbeConfig:
    """``mhub-fmcib-train probe``: logistic regression on the encoder's features.

    Attributes:
        weights: trunk file; ``None`` with ``random_init`` uses a random encoder (baseline).
        n_trials: optuna trials over C (log-uniform ``c_range``).
        head_name: name of the prediction the head adds to ``features.csv``.
    """

    data: DataConfig
    output_dir: Path
    weights: Path | None = None
    random_init: bool = False
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    task: Literal["binary", "classification"] = "binary"
    n_trials: int = 20
    c_range: tuple[float, float] = (1e-6, 1e3)
    max_iter: int = 1000
    head_name: str = ""
    batch_size: int = 8
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.weights is None and not self.random_init:
            raise ConfigError("probe needs weights = PATH (or random_init = true for a baseline)")
        if self.n_trials < 1:
            raise ConfigError("n_trials must be >= 1")


@dataclass(frozen=True)
class SyntheticConfig:
    """``mhub-fmcib-train synthetic``: see :mod:`mhub_fmcib_train.synthetic`."""

    output_dir: Path
    n_scans: int = 24
    lesions_per_scan: tuple[int, int] = (1, 3)
    shape: tuple[int, int, int] = (128, 128, 48)
    spacing: tuple[float, float, float] = (1.0, 1.0, 2.5)
    noise_hu: float = 25.0
    split_ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0


def _convert(tp: Any, value: Any, key: str, base: Path) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key, base)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {args}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, key, base) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} entries, got {value!r}")
        return tuple(_convert(a, v, key, base) for a, v in zip(args, value, strict=True))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}] must be a table, got {value!r}")
        return _build(tp, value, base, key)  # type: ignore[arg-type]
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a path string, got {value!r}")
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base / p).resolve()
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is int or tp is bool or tp is str:
        if type(value) is not tp:
            raise ConfigError(f"{key} must be {tp.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type[T], table: dict[str, Any], base: Path, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - names)
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{prefix}.{k}" if prefix else k, base) for k, v in table.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{cls.__name__}: {e} (add the missing key to the config file)") from e


def load_config(path: Path, cls: type[T]) -> T:
    """Read a TOML file into ``cls``; relative paths are taken from the file's folder."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} does not exist") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from e
    return _build(cls, table, path.resolve().parent)


def to_toml(obj: Any) -> str:
    """Serialise a config dataclass back to TOML (for the copy kept with the outputs)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def emit(o: Any, prefix: str) -> list[str]:
        scalars, tables = [], []
        for f in dataclasses.fields(o):
            v = getattr(o, f.name)
            if dataclasses.is_dataclass(v):
                tables += ["", f"[{prefix}{f.name}]", *emit(v, f"{prefix}{f.name}.")]
            elif v is not None:
                scalars.append(f"{f.name} = {fmt(v)}")
        return scalars + tables

    return "\n".join(emit(obj, "")) + "\n"
