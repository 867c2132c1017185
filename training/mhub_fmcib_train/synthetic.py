"""A synthetic lesion cohort: CT-like scans with lesions of known class and survival.

Each scan is an int16 HU volume (default 128×128×48 voxels of 1×1×2.5 mm, LPS axes, origin
at the centre): air (−1000 HU) outside a body ellipse of soft tissue (40 HU), two lung
ellipsoids (−850 HU) with smooth texture, and Gaussian noise. One to three lesions sit in
the lungs, each of one of three classes that differ in shape, density and texture:

=============  =====================================  ===========  ===============
class          shape                                  density HU   texture (HU sd)
=============  =====================================  ===========  ===============
solid          sphere                                 N(40, 25)    10
lobulated      3–5 overlapping spheres                N(10, 25)    40
ground_glass   ellipsoid                              N(-450, 80)  70
=============  =====================================  ===========  ===============

``malignant`` is 1 for lobulated and ground-glass lesions.

With ``classes = "shape"`` the lesions are ``round`` (an ellipsoid, axes within ±15 %) or
``lobulated`` (a core and 4–6 overlapping lobes), ``malignant`` = lobulated, and nothing
but the shape differs: each lesion's volume is drawn as that of a sphere of radius
U(5, 9) mm for both classes (the lobulated shape is rescaled to it), its mean density from
N(20, 30) HU and its texture (smooth noise of SD 30 HU) alike. Survival (months) is
exponential with scale ``60 · exp(−0.25 · (radius_mm − 6))`` (bigger lesions die sooner),
censored uniformly in [6, 60]; ``time`` and ``event`` hold the result.

With ``classes = "texture"`` the lesions are ``fine`` or ``coarse`` grained,
``malignant`` = coarse, and only the spatial correlation length of the texture differs:
both are ellipsoids (axes within ±15 %) of the volume of a sphere of radius U(``lesion_radius_mm``), default U(5, 9) mm,
with mean density N(20, 30) HU and a texture of Gaussian-filtered noise rescaled to the
same SD (``texture_sd_hu``, default 60 HU) — filter σ ``texture_sigma_voxels`` (default 0.5
voxel fine, 1.5 voxels coarse). Each scan also holds ``distractors`` (default two)
unlabelled distractor nodules of the same kind (random grain), at least 25 mm from
every lesion, so that random background patches contain lesion-like tissue too, and each
labelled lesion's centre lies 25 mm or more inside the scan, so that its 50³ patch is
centred (scans need > 50 mm along every axis). Scans are split
into train/tune/test by ``split_ratios``.

Outputs in ``output_dir``: ``images/scan_NNN.nrrd``, ``masks/scan_NNN_label.nrrd`` (lesion
``n`` has label ``n``), and ``seeds.csv`` (reference columns ``image_path, coordX, coordY,
coordZ`` in LPS mm at each mask's centre of mass, plus ``lesion_id, patient_id, split,
label, malignant, radius_mm, mean_hu, time, event, mask_path, mask_label``).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy import ndimage

from .config import SyntheticConfig

CLASSES = ("solid", "lobulated", "ground_glass")
MALIGNANT = {"solid": 0, "lobulated": 1, "ground_glass": 1}
_DENSITY = {"solid": (40.0, 25.0), "lobulated": (10.0, 25.0), "ground_glass": (-450.0, 80.0)}
_TEXTURE = {"solid": 10.0, "lobulated": 40.0, "ground_glass": 70.0}

SEEDS_COLUMNS = (
    "image_path", "coordX", "coordY", "coordZ", "lesion_id", "patient_id", "split", "label",
    "malignant", "radius_mm", "mean_hu", "time", "event", "mask_path", "mask_label",
)  # fmt: skip


@dataclass(frozen=True)
class SyntheticLesion:
    """One generated lesion (seed in LPS mm, radius in mm)."""

    lesion_id: str
    patient_id: str
    label: str
    seed_lps: tuple[float, float, float]
    radius_mm: float
    mean_hu: float
    time: float
    event: int
    split: str


@dataclass(frozen=True)
class SyntheticCohort:
    """Where the cohort was written and what it holds."""

    seeds_csv: Path
    lesions: tuple[SyntheticLesion, ...]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> npt.NDArray[np.float64]:
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    sd = n.std()
    return n / sd if sd > 0 else n


_SHAPE_CLASSES = ("round", "lobulated")
_SHAPE_MEAN_HU = (20.0, 30.0)
_SHAPE_TEXTURE_HU = 30.0
_TEXTURE_CLASSES = ("fine", "coarse")


def _shape_mask(
    cls: str, centre: npt.NDArray[np.float64], grids: tuple[npt.NDArray[np.float64], ...], radius: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.bool_]:  # fmt: skip
    """Mask of a ``round`` or ``lobulated`` lesion whose volume is that of a sphere of
    ``radius`` mm (lobulated: the unit shape is rescaled to that volume)."""
    X, Y, Z = (g - c for g, c in zip(grids, centre, strict=True))
    if cls == "round":
        ax = rng.uniform(0.85, 1.15, size=3)
        ax /= np.prod(ax) ** (1 / 3)  # same volume as the sphere
        return ((X / (radius * ax[0])) ** 2 + (Y / (radius * ax[1])) ** 2 + (Z / (radius * ax[2])) ** 2) <= 1.0
    n_lobes = int(rng.integers(4, 7))
    dirs = rng.standard_normal((n_lobes, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    lobe_r = rng.uniform(0.45, 0.6, size=n_lobes)

    def build(scale: float) -> npt.NDArray[np.bool_]:
        m = X**2 + Y**2 + Z**2 <= (0.55 * scale) ** 2
        for d, r in zip(dirs, lobe_r, strict=True):
            o = d * 0.6 * scale
            m |= (X - o[0]) ** 2 + (Y - o[1]) ** 2 + (Z - o[2]) ** 2 <= (r * scale) ** 2
        return m

    voxel = float(np.prod([np.ptp(g) / max(g.shape[a] - 1, 1) for a, g in enumerate(grids)]))
    target = 4.0 / 3.0 * math.pi * radius**3
    scale = radius
    for _ in range(3):  # volume ~ scale³: rescale to the target volume
        vol = float(build(scale).sum()) * voxel
        scale *= (target / max(vol, voxel)) ** (1 / 3)
    return build(scale)


def _place(
    rng: np.random.Generator, lc: npt.NDArray[np.float64], extent: npt.NDArray[np.float64],
    placed: list[npt.NDArray[np.float64]], bound: npt.NDArray[np.float64] | None,
) -> npt.NDArray[np.float64] | None:  # fmt: skip
    """A lesion centre (mm) in the ellipsoid ``lc ± extent``, more than 25 mm from every
    ``placed`` centre; the last try if none is. With ``bound``: only centres with
    ``|centre| <= bound`` per axis, ``None`` if 300 tries find none."""
    centre = lc
    for _ in range(300 if bound is not None else 100):
        u = rng.uniform(-1, 1, size=3)
        if np.sum(u**2) > 1:
            continue
        centre = lc + u * extent
        inside = bound is None or bool(np.all(np.abs(centre) <= bound))
        if inside and all(np.linalg.norm(centre - o) > 25.0 for o in placed):
            return centre
    return None if bound is not None else centre


def _scan(
    cfg: SyntheticConfig, rng: np.random.Generator, patient: str, split: str
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8], npt.NDArray[np.float64], list[SyntheticLesion]]:
    shape = cfg.shape
    sp = np.asarray(cfg.spacing)
    origin = -0.5 * (np.asarray(shape) - 1) * sp
    x, y, z = (origin[a] + sp[a] * np.arange(shape[a]) for a in range(3))
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    half = 0.5 * np.asarray(shape) * sp
    body_a, body_b = half[0] * rng.uniform(0.85, 0.95), half[1] * rng.uniform(0.65, 0.8)
    hu = np.full(shape, -1000.0)
    body = (X / body_a) ** 2 + (Y / body_b) ** 2 <= 1.0
    hu[body] = 40.0
    lungs = np.zeros(shape, dtype=bool)
    lung_centres = []
    for side in (-1, 1):
        c = np.array([side * body_a * 0.45, -0.05 * body_b, 0.0])
        r = np.array([body_a * 0.35, body_b * 0.7, half[2] * 0.95])
        lung_centres.append((c, r))
        lungs |= ((X - c[0]) / r[0]) ** 2 + ((Y - c[1]) / r[1]) ** 2 + ((Z - c[2]) / r[2]) ** 2 <= 1.0
    hu[lungs] = -850.0 + 30.0 * _smooth_noise(rng, shape, 2.0)[lungs]
    labels = np.zeros(shape, dtype=np.uint8)
    occupied = np.zeros(shape, dtype=bool)  # distractors' voxels (not in the label mask)
    lesions: list[SyntheticLesion] = []
    n_les = int(rng.integers(cfg.lesions_per_scan[0], cfg.lesions_per_scan[1] + 1))
    n_distract = cfg.distractors if cfg.classes == "texture" else 0
    placed: list[npt.NDArray[np.float64]] = []
    for n in range(1, n_les + n_distract + 1):
        classes = {"shape": _SHAPE_CLASSES, "texture": _TEXTURE_CLASSES}.get(cfg.classes, CLASSES)
        cls = classes[int(rng.integers(len(classes)))]
        radius = float(rng.uniform(*cfg.lesion_radius_mm) if cfg.classes != "mixed" else rng.uniform(4.0, 10.0))
        lc, lr = lung_centres[int(rng.integers(2))]
        bound = half - 25.0 if cfg.classes == "texture" and n <= n_les else None
        centre = _place(rng, lc, np.maximum(lr - radius - 4.0, 1.0), placed, bound)
        if centre is None:  # no centred place left for a texture lesion: skip it
            continue
        d2 = ((X - centre[0]) ** 2 + (Y - centre[1]) ** 2 + (Z - centre[2]) ** 2) ** 0.5
        if cfg.classes == "shape":
            m = _shape_mask(cls, centre, (X, Y, Z), radius, rng)
        elif cfg.classes == "texture":
            m = _shape_mask("round", centre, (X, Y, Z), radius, rng)
        elif cls == "solid":
            m = d2 <= radius
        elif cls == "lobulated":
            m = d2 <= radius * 0.7
            for _ in range(int(rng.integers(3, 6))):
                off = rng.standard_normal(3)
                off = off / np.linalg.norm(off) * radius * 0.55
                m |= np.linalg.norm(
                    np.stack([X - centre[0] - off[0], Y - centre[1] - off[1], Z - centre[2] - off[2]]),
                    axis=0,
                ) <= radius * rng.uniform(0.4, 0.6)
        else:
            ax = rng.uniform(0.7, 1.3, size=3)
            m = (
                ((X - centre[0]) / (radius * ax[0])) ** 2
                + ((Y - centre[1]) / (radius * ax[1])) ** 2
                + ((Z - centre[2]) / (radius * ax[2])) ** 2
            ) <= 1.0
        m &= (labels == 0) & ~occupied
        if not m.any():
            continue
        placed.append(centre)
        if cfg.classes == "texture":
            mean_hu = float(rng.normal(*_SHAPE_MEAN_HU))
            sigma = cfg.texture_sigma_voxels[_TEXTURE_CLASSES.index(cls)]
            hu[m] = mean_hu + cfg.texture_sd_hu * _smooth_noise(rng, shape, sigma)[m]
            occupied |= m
            if n > n_les:  # an unlabelled distractor: tissue in the background, no seed
                continue
        else:
            mu, sd = _SHAPE_MEAN_HU if cfg.classes == "shape" else _DENSITY[cls]
            mean_hu = float(rng.normal(mu, sd))
            tex = (_SHAPE_TEXTURE_HU if cfg.classes == "shape" else _TEXTURE[cls]) * _smooth_noise(rng, shape, 1.0)
            hu[m] = mean_hu + tex[m]
        labels[m] = n
        com = np.array([X[m].mean(), Y[m].mean(), Z[m].mean()])
        scale = 60.0 * math.exp(-0.25 * (radius - 6.0))
        t_event = float(rng.exponential(scale))
        t_cens = float(rng.uniform(6.0, 60.0))
        lesions.append(
            SyntheticLesion(
                lesion_id=f"{patient}_L{n}",
                patient_id=patient,
                label=cls,
                seed_lps=(float(com[0]), float(com[1]), float(com[2])),
                radius_mm=radius,
                mean_hu=mean_hu,
                time=min(t_event, t_cens),
                event=int(t_event <= t_cens),
                split=split,
            )
        )
    hu += cfg.noise_hu * rng.standard_normal(shape)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(sp)
    affine[:3, 3] = origin
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), labels, affine, lesions


def _write(arr: npt.NDArray[np.generic], affine: npt.NDArray[np.float64], path: Path) -> None:
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))  # (i,j,k) -> (k,j,i)
    img.SetSpacing([float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)])
    img.SetOrigin([float(o) for o in affine[:3, 3]])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)


def generate_cohort(cfg: SyntheticConfig) -> SyntheticCohort:
    """Write the cohort described by ``cfg`` (deterministic in ``cfg.seed``)."""
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.output_dir)
    n_train = round(cfg.n_scans * cfg.split_ratios[0])
    n_tune = round(cfg.n_scans * cfg.split_ratios[1])
    splits = ["train"] * n_train + ["tune"] * n_tune + ["test"] * (cfg.n_scans - n_train - n_tune)
    rows: list[dict[str, object]] = []
    all_lesions: list[SyntheticLesion] = []
    for s in range(cfg.n_scans):
        patient = f"scan_{s:03d}"
        hu, labels, affine, lesions = _scan(cfg, rng, patient, splits[s])
        image_path = (out / "images" / f"{patient}.nrrd").resolve()
        mask_path = (out / "masks" / f"{patient}_label.nrrd").resolve()
        _write(hu, affine, image_path)
        _write(labels, affine, mask_path)
        for les in lesions:
            rows.append(
                {
                    "image_path": str(image_path),
                    "coordX": f"{les.seed_lps[0]:.4f}",
                    "coordY": f"{les.seed_lps[1]:.4f}",
                    "coordZ": f"{les.seed_lps[2]:.4f}",
                    "lesion_id": les.lesion_id,
                    "patient_id": les.patient_id,
                    "split": les.split,
                    "label": les.label,
                    "malignant": MALIGNANT.get(les.label, int(les.label in ("lobulated", "coarse"))),
                    "radius_mm": f"{les.radius_mm:.3f}",
                    "mean_hu": f"{les.mean_hu:.1f}",
                    "time": f"{les.time:.3f}",
                    "event": les.event,
                    "mask_path": str(mask_path),
                    "mask_label": les.lesion_id.rsplit("_L", 1)[1],
                }
            )
        all_lesions += lesions
    seeds = out / "seeds.csv"
    with open(seeds, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(SEEDS_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return SyntheticCohort(seeds_csv=seeds, lesions=tuple(all_lesions))
