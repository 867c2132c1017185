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
        crop: ``"rand_scale"`` (the authors' ``RandomResizedCrop3D``: MONAI
            ``RandScaleCrop`` on the 50³ patch with one scale ``s ~ U(crop_scale)`` for
            every axis, edge ``ceil(50 s)`` = 25–50 voxels, random position inside the 50³,
            then trilinear resize to 50³) or ``"volume_fraction"`` (ours before: the box's
            *volume* is ``U(crop_scale) · 50³``, edges ~40–50 voxels with aspect factors
            ``crop_ratio``, anywhere inside the cached cube).
        crop_scale: range of the scale (0.5–1).
        crop_ratio: range of each axis's aspect factor (``volume_fraction`` only).
        flip: ``"one_axis"`` (MONAI ``RandAxisFlip``: with probability ``flip_p`` flip one
            axis chosen at random, as the authors) or ``"each_axis"`` (each axis
            independently with probability ``flip_p``).
        flip_p: flip probability.
        histogram_shift_p / histogram_points: MONAI-style random histogram shift.
        smooth_p / smooth_sigma: Gaussian smoothing, sigma (voxels) drawn per axis.
        clamp_air: set values below −1024 HU (normalised 0) to −1024 HU after the other
            augmentations (the authors' ``ThresholdIntensity(threshold=-1024, cval=-1024)``).
    """

    crop: Literal["rand_scale", "volume_fraction"] = "rand_scale"
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333)
    flip: Literal["one_axis", "each_axis"] = "one_axis"
    flip_p: float = 0.5
    histogram_shift_p: float = 0.5
    histogram_points: int = 10
    smooth_p: float = 0.5
    smooth_sigma: tuple[float, float] = (0.25, 1.5)
    clamp_air: bool = True

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"augment.crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")


@dataclass(frozen=True)
class PretrainConfig:
    """``mhub-fmcib-train pretrain``. Defaults are the authors' recipe (training/README.md
    has the paper / authors' code / ours table).

    Attributes:
        output_dir: checkpoints/, log.csv, encoder.pt, config.toml go here.
        loss: ``"background_infonce"`` (the authors' ``NegativeMiningInfoNCECriterion``:
            per lesion a fresh random 50³ patch of its own scan, two views; denominators
            hold only the other lesions' background views, 2(N−1) per anchor) or
            ``"ntxent+background"`` (ours: NT-Xent with the 2N−2 other lesion views plus
            ``background_per_lesion`` views of cached background cubes per lesion).
        batch_size: lesions per process per step (two views each).
        background_per_lesion: background views per lesion (``ntxent+background`` only;
            the authors' loss always uses two views of one patch).
        epochs / max_steps: stop after ``epochs`` passes or ``max_steps`` steps (if > 0).
        optimizer: ``"lars"`` (the authors': scale mode, lr · trust · ‖p‖/‖g‖, every
            tensor adapted) or ``"larc"`` (ours: clip mode min(lr, trust · ‖p‖/‖g‖),
            1-D tensors excluded).
        lr: base learning rate; 0 means ``0.3 * global_batch / 256``.
        schedule: ``"warmup_cosine"`` (the paper: linear warm-up for ``warmup_steps`` then
            cosine to ``final_lr_ratio``, per step) or ``"authors_code_cosine"`` (the
            released config: cosine without warm-up, T_max in steps, stepped per epoch).
        projection_batch_norm: BatchNorm in the projection head (ours; the authors' has none).
        forward: ``"per_view"`` (the authors': each group of views — lesion view 1, lesion
            view 2, background view(s) — goes through the network on its own, so batch norm
            normalises each group with its own statistics) or ``"joint"`` (ours: one pass).
        checkpoint_every: steps between checkpoints (and one at the end).
        stop_after: stop (as if killed) after this many steps of this launch (tests); 0: never.
        sync_batchnorm: convert BatchNorm to SyncBatchNorm under DDP (CUDA only).
        bn_mode: ``"train"`` (batch statistics, the authors'), ``"eval"`` (frozen running
            statistics) or ``"groupnorm"`` (BatchNorm replaced by GroupNorm): the last two
            make a step independent of how the global batch is split over processes, so
            1 and 2 CPU processes give the same step (smoke comparison).
        bf16: bf16 autocast on CUDA (off by default: the authors train in fp32).
        device: ``auto``, ``cpu`` or ``cuda``.
        tensorboard: also write TensorBoard events (needs the tensorboard package).
    """

    data: DataConfig
    output_dir: Path
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: Literal["background_infonce", "ntxent+background"] = "background_infonce"
    projection_hidden: int = 2048
    projection_dim: int = 128
    projection_batch_norm: bool = False
    forward: Literal["per_view", "joint"] = "per_view"
    temperature: float = 0.1
    batch_size: int = 32
    background_per_lesion: int = 1
    epochs: int = 100
    max_steps: int = 0
    optimizer: Literal["lars", "larc"] = "lars"
    lr: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 1e-6
    trust_coefficient: float = 1e-3
    schedule: Literal["warmup_cosine", "authors_code_cosine"] = "warmup_cosine"
    warmup_steps: int = 10
    final_lr_ratio: float = 0.0
    checkpoint_every: int = 100
    log_every: int = 1
    stop_after: int = 0
    sync_batchnorm: bool = False
    bn_mode: Literal["train", "eval", "groupnorm"] = "train"
    bf16: bool = False
    device: str = "auto"
    seed: int = 0
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 (contrastive loss), got {self.batch_size}")
        if self.epochs < 1 and self.max_steps < 1:
            raise ConfigError("set epochs or max_steps to at least 1")
        if self.loss == "ntxent+background" and self.background_per_lesion < 0:
            raise ConfigError("background_per_lesion must be >= 0")


@dataclass(frozen=True)
class FinetuneConfig:
    """``mhub-fmcib-train finetune``. Defaults: the authors' recipe (training/README.md).

    Attributes:
        init: ``foundation`` (``weights``: an exported/published trunk), ``random``
            (supervised baseline) or ``checkpoint`` (``weights``: another task's best.pt).
        task: ``binary`` (one logit, label values 0/1 or two classes) or ``classification``.
        head_hidden: hidden sizes of the MLP head; unset: one hidden layer of half the
            feature count (the authors' 4096 → 2048 → classes).
        lr / momentum / weight_decay / batch_size: SGD; 0.003125 = 0.1 × 8 / 256, wd 0, batch 8.
        translate / translate_p, flip / flip_p, rotate_p, smooth_p: augmentations, each
            with its own probability (see :class:`~mhub_fmcib_train.transforms.FinetuneAugment`).
        step_size / gamma: multiply the learning rate by ``gamma`` every ``step_size`` epochs.
        bf16: bf16 autocast on CUDA (off: fp32 as the authors).
    """

    data: DataConfig
    output_dir: Path
    init: Literal["foundation", "random", "checkpoint"] = "foundation"
    weights: Path | None = None
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    task: Literal["binary", "classification"] = "binary"
    head_hidden: tuple[int, ...] | None = None
    dropout: float = 0.0
    epochs: int = 100
    batch_size: int = 8
    lr: float = 0.003125
    momentum: float = 0.9
    weight_decay: float = 0.0
    step_size: int = 30
    gamma: float = 0.1
    translate: int = 10
    translate_p: float = 0.5
    flip: Literal["one_axis", "each_axis"] = "one_axis"
    flip_p: float = 0.5
    rotate_p: float = 0.5
    smooth_p: float = 0.5
    bf16: bool = False
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
    n_trials: int = 100
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
    """``mhub-fmcib-train synthetic``: see :mod:`mhub_fmcib_train.synthetic`.

    Attributes:
        classes: ``"mixed"`` (solid / lobulated / ground-glass, differing in shape, density
            and texture) or ``"shape"`` (round / lobulated with the same volume, density and
            texture distributions: only the shape carries the ``malignant`` label) or
            ``"texture"`` (fine / coarse grain with the same shape, volume, mean density and
            voxel SD: only the texture's correlation length carries the label).
        lesion_radius_mm: range of the equivalent-sphere radius (mm) of ``shape`` and
            ``texture`` lesions (``mixed``: always 4–10 mm).
        texture_sigma_voxels: ``texture`` only: the Gaussian filter σ (voxels) of the
            ``fine`` and of the ``coarse`` grain.
        texture_sd_hu: ``texture`` only: the texture's SD (HU) in both classes.
        distractors: ``texture`` only: unlabelled nodules of random grain per scan.
    """

    output_dir: Path
    classes: Literal["mixed", "shape", "texture"] = "mixed"
    lesion_radius_mm: tuple[float, float] = (5.0, 9.0)
    texture_sigma_voxels: tuple[float, float] = (0.5, 1.5)
    texture_sd_hu: float = 60.0
    distractors: int = 2
    n_scans: int = 24
    lesions_per_scan: tuple[int, int] = (1, 3)
    shape: tuple[int, int, int] = (128, 128, 48)
    spacing: tuple[float, float, float] = (1.0, 1.0, 2.5)
    noise_hu: float = 25.0
    split_ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 0


def _convert_tuple(args: tuple[Any, ...], value: Any, key: str, base: Path) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key} must be a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(args[0], v, key, base) for v in value)
    if len(value) != len(args):
        raise ConfigError(f"{key} must have {len(args)} entries, got {value!r}")
    return tuple(_convert(a, v, key, base) for a, v in zip(args, value, strict=True))


def _convert_scalar(tp: Any, value: Any, key: str, base: Path) -> Any:
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
        return _convert_tuple(args, value, key, base)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}] must be a table, got {value!r}")
        return _build(tp, value, base, key)  # type: ignore[arg-type]
    return _convert_scalar(tp, value, key, base)


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
