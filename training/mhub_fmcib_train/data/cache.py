"""The patch cache: each seed's 1 mm cube and K background cubes per scan, extracted once.

Every cube comes from :func:`mhub_fmcib.patch.extract_patch` (the inference preprocessing)
with ``size = region_size``: float32, (z, y, x), normalised ``(HU + 1024) / 3072``. Its
central 50³ equals the inference patch of the same seed (away from the image border,
where the reference's symmetric padding shifts things). Training augments these
normalised values; see ``training/README.md`` ("one preprocessing").

Layout of ``cache_dir/<key>/``: ``lesions.npy`` (N, R, R, R) in seeds-CSV row order,
``background.npy`` (M, R, R, R), ``background.csv`` (image_path, coordX, coordY, coordZ,
split), ``scans/NNNNN.npy`` (each scan's HU voxels as read, (I, J, K), its own dtype) with
``scans.json`` (image path, LPS affine, split per scan), ``meta.json``. The scans let the
authors' criterion draw a fresh random 50³ background patch from a lesion's own scan at
every step (:func:`random_scan_patch`, through the same ``extract_patch``). ``<key>``
hashes the CSV bytes and the cache settings, so a changed table or setting builds a new
cache instead of silently reusing an old one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mhub_fmcib.image_io import read_image
from mhub_fmcib.patch import extract_patch, reference_grid
from mhub_fmcib.records import PATCH_SIZE, SeedPoint, Volume

from ..config import DataConfig
from ..utils import dist as udist
from .table import LesionTable

log = logging.getLogger(__name__)

CACHE_VERSION = 2
#: HU below which a voxel counts as air for the background check.
AIR_HU = -900.0
#: Background cubes' centres are at least this far (Chebyshev, mm) from every seed of the
#: scan, so the 50³ patches the encoder sees never overlap a lesion's patch.
BACKGROUND_MIN_DISTANCE_MM = float(PATCH_SIZE)


@dataclass(frozen=True, eq=False)
class CachedScan:
    """One scan of the cache: its HU voxels (memory-mapped) and geometry.

    Attributes:
        image_path: the image file the scan was read from.
        split: split of the scan's lesions.
        volume: HU voxels (I, J, K) with the LPS affine, as ``read_image`` returned them.
    """

    image_path: str
    split: str
    volume: Volume


def random_scan_patch(scan: CachedScan, rng: np.random.Generator, size: int = PATCH_SIZE) -> npt.NDArray[np.float32]:
    """A ``size``³ patch at a uniformly random position of the scan's 1 mm grid, as the
    authors' ``SSLRadiomicsDataset.get_negative_sample`` draws it (``get_random_patch``:
    start index uniform in ``[0, dim − size]`` per axis of the resampled grid, no overlap
    check with the lesion). Extracted with :func:`extract_patch` (one preprocessing):
    float32 (z, y, x), normalised units."""
    grid = reference_grid(scan.volume)
    start = [int(rng.integers(0, max(d - size, 0) + 1)) for d in grid.shape]
    # centre index c = start + size/2 (crop [c - size/2, c + size/2)); +0.25 voxel so that
    # the reference's truncation toward zero lands on c exactly
    centre = np.array([s + size // 2 + 0.25 for s in start] + [1.0])
    x, y, z = (grid.affine_lps @ centre)[:3]
    return extract_patch(scan.volume, SeedPoint(float(x), float(y), float(z)), size=size).array


@dataclass(frozen=True, eq=False)
class PatchCache:
    """Memory-mapped cubes of one cache build.

    Attributes:
        lesions: float32 (N, R, R, R), row ``i`` is seeds-CSV row ``i``.
        background: float32 (M, R, R, R).
        background_splits: (M,) split of the scan each background cube comes from.
        table: the lesion table the cache was built from.
        folder: where the files are.
        scans: one entry per scan (sorted by image path), its HU voxels memory-mapped.
        lesion_scan: (N,) index into ``scans`` of each lesion's scan.
    """

    lesions: npt.NDArray[np.float32]
    background: npt.NDArray[np.float32]
    background_splits: tuple[str, ...]
    table: LesionTable
    folder: Path
    scans: tuple[CachedScan, ...] = ()
    lesion_scan: tuple[int, ...] = ()

    @property
    def region_size(self) -> int:
        return int(self.lesions.shape[1])

    def centre_patch(self, cube: npt.NDArray[np.float32], size: int = PATCH_SIZE) -> npt.NDArray[np.float32]:
        """The central ``size``³ of a cached cube (the inference patch), (size, size, size)."""
        o = (cube.shape[0] - size) // 2
        return np.ascontiguousarray(cube[o : o + size, o : o + size, o : o + size])


def cache_key(cfg: DataConfig) -> str:
    """Hash of the seeds CSV bytes and everything that changes the cubes."""
    h = hashlib.sha256(Path(cfg.seeds_csv).read_bytes())
    h.update(
        json.dumps(
            [CACHE_VERSION, cfg.region_size, cfg.background_per_scan, cfg.background_max_air,
             cfg.split_column, list(cfg.split_ratios), cfg.split_seed, BACKGROUND_MIN_DISTANCE_MM]
        ).encode()
    )  # fmt: skip
    return h.hexdigest()[:16]


def _air_fraction(volume: Volume, centre_lps: npt.NDArray[np.float64], half_mm: float) -> float:
    """Fraction of voxels below −900 HU in the axis-aligned box of half-width ``half_mm``
    around ``centre_lps`` (on the volume's own grid; outside the volume counts as air)."""
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half_mm
    ijk = volume.lps_to_index(centre_lps + corners)
    lo = np.floor(ijk.min(axis=0)).astype(int)
    hi = np.ceil(ijk.max(axis=0)).astype(int) + 1
    total = int(np.prod(hi - lo))
    clo, chi = np.clip(lo, 0, volume.shape), np.clip(hi, 0, volume.shape)
    box = volume.array[clo[0] : chi[0], clo[1] : chi[1], clo[2] : chi[2]]
    inside_air = int(np.count_nonzero(np.asarray(box, dtype=np.float64) < AIR_HU))
    return (inside_air + total - box.size) / max(total, 1)


def sample_background(
    volume: Volume,
    seeds: list[SeedPoint],
    k: int,
    rng: np.random.Generator,
    region_size: int,
    max_air: float,
    tries: int = 200,
) -> list[SeedPoint]:
    """``k`` centres (LPS mm) inside the volume whose 50³ patch overlaps no seed's patch
    (Chebyshev distance ≥ 50 mm to every seed) and whose cube holds at most ``max_air`` air;
    when no candidate passes the air test, the least airy non-overlapping ones are used."""
    corners = volume.index_to_lps(
        np.array(
            [
                [a, b, c]
                for a in (0, volume.shape[0] - 1)
                for b in (0, volume.shape[1] - 1)
                for c in (0, volume.shape[2] - 1)
            ]
        )
    )
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    seed_arr = np.array([s.as_array() for s in seeds]) if seeds else np.zeros((0, 3))
    chosen: list[SeedPoint] = []
    fallback: list[tuple[float, SeedPoint]] = []
    for _ in range(tries):
        if len(chosen) == k:
            break
        c = rng.uniform(lo, hi)
        if len(seed_arr) and np.min(np.max(np.abs(seed_arr - c), axis=1)) < BACKGROUND_MIN_DISTANCE_MM:
            continue
        air = _air_fraction(volume, c, region_size / 2)
        sp = SeedPoint(float(c[0]), float(c[1]), float(c[2]))
        if air <= max_air:
            chosen.append(sp)
        else:
            fallback.append((air, sp))
    fallback.sort(key=lambda t: t[0])
    chosen += [sp for _, sp in fallback[: k - len(chosen)]]
    if len(chosen) < k:
        log.warning("only %d of %d background cubes fit beside the lesions of this scan", len(chosen), k)
    return chosen


def _build(cfg: DataConfig, table: LesionTable, folder: Path) -> None:
    r = cfg.region_size
    folder.mkdir(parents=True, exist_ok=True)
    by_image: dict[Path, list[int]] = {}
    for rec in table.records:
        by_image.setdefault(rec.image_path, []).append(rec.index)
    tmp_les = folder / "lesions.npy.part"
    shape = (len(table.records), r, r, r)
    les = np.lib.format.open_memmap(tmp_les, mode="w+", dtype=np.float32, shape=shape)
    bg_cubes: list[npt.NDArray[np.float32]] = []
    bg_rows: list[tuple[str, float, float, float, str]] = []
    t0 = time.perf_counter()
    (folder / "scans").mkdir(exist_ok=True)
    scans_meta: list[dict[str, object]] = []
    for scan_idx, (image, idxs) in enumerate(sorted(by_image.items())):
        volume = read_image(image)
        np.save(folder / "scans" / f"{scan_idx:05d}.npy", np.ascontiguousarray(volume.array))
        scans_meta.append({"image_path": str(image), "split": table.records[idxs[0]].split,
                           "affine": np.asarray(volume.affine).tolist()})  # fmt: skip
        seeds = [table.records[i].seed for i in idxs]
        for i, s in zip(idxs, seeds, strict=True):
            les[i] = extract_patch(volume, s, size=r).array
        rng = np.random.default_rng([cfg.split_seed, scan_idx, CACHE_VERSION])
        split = table.records[idxs[0]].split
        for c in sample_background(volume, seeds, cfg.background_per_scan, rng, r, cfg.background_max_air):
            bg_cubes.append(extract_patch(volume, c, size=r).array)
            bg_rows.append((str(image), c.x, c.y, c.z, split))
    les.flush()
    del les
    bg = np.stack(bg_cubes) if bg_cubes else np.zeros((0, r, r, r), np.float32)
    np.save(folder / "background.npy", bg)
    with open(folder / "background.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_path", "coordX", "coordY", "coordZ", "split"])
        w.writerows(bg_rows)
    meta = {
        "version": CACHE_VERSION,
        "seeds_csv": str(cfg.seeds_csv),
        "region_size": r,
        "n_lesions": len(table.records),
        "n_background": len(bg_rows),
        "background_min_distance_mm": BACKGROUND_MIN_DISTANCE_MM,
        "units": "(HU + 1024) / 3072, float32, (z, y, x), 1 mm",
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    (folder / "scans.json").write_text(json.dumps(scans_meta))
    tmp_les.replace(folder / "lesions.npy")
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))  # written last: marks complete


def build_cache(cfg: DataConfig) -> PatchCache:
    """Build the cache if needed (rank 0 only; the others wait) and open it memory-mapped."""
    table = LesionTable.read(cfg.seeds_csv, cfg.split_column, cfg.split_ratios, cfg.split_seed)
    folder = Path(cfg.cache_dir) / cache_key(cfg)
    if udist.rank() == 0 and not (folder / "meta.json").is_file():
        log.info("building patch cache in %s", folder)
        _build(cfg, table, folder)
    udist.barrier()
    with open(folder / "background.csv", newline="") as f:
        splits = tuple(row["split"] for row in csv.DictReader(f))
    scans = tuple(
        CachedScan(str(m["image_path"]), str(m["split"]),
                   Volume(np.load(folder / "scans" / f"{k:05d}.npy", mmap_mode="r"), np.asarray(m["affine"])))
        for k, m in enumerate(json.loads((folder / "scans.json").read_text()))
    )  # fmt: skip
    scan_of = {s.image_path: k for k, s in enumerate(scans)}
    return PatchCache(
        lesions=np.load(folder / "lesions.npy", mmap_mode="r"),
        background=np.load(folder / "background.npy", mmap_mode="r"),
        background_splits=splits,
        table=table,
        folder=folder,
        scans=scans,
        lesion_scan=tuple(scan_of[str(r.image_path)] for r in table.records),
    )


__all__ = ["CachedScan", "PatchCache", "build_cache", "cache_key", "random_scan_patch", "sample_background"]
