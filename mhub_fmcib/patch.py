"""The 50 mm patch: exactly the reference preprocessing, computed only where it is needed.

The reference (``fmcib.run.get_features``; facts in ``shared/fmcib-reference.md``) resamples
the **whole** volume for every seed: normalise ``(HU + 1024) / 3072`` without clipping,
resample to a 1 mm axis-aligned grid (trilinear, ``align_corners=True``, zero padding,
computed in float64 and stored as float32), reorient to LPS, map the LPS seed to an index by
truncation toward zero, crop ``[c - 25, c + 25)`` clamped to the volume, transpose to
(z, y, x) and pad symmetrically with zeros to 50³.

Here the same 1 mm grid is derived from the geometry alone (:func:`reference_grid`, the
arithmetic of MONAI's ``Spacing`` + ``Orientation``) and only the ≤ 50³ output voxels of the
crop are interpolated, from the few input slices they touch. A test rebuilds the reference
from MONAI's transforms on the whole volume and checks equality (max abs diff ≤ 1e-5).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import SeedError
from .records import LPS_TO_RAS, PATCH_SIZE, Patch, SeedPoint, Volume

#: MONAI's tolerance for "this spacing is already the target spacing" (``AFFINE_TOL``).
SPACING_TOL = 1e-3
#: HU offset and scale of the reference normalisation.
HU_OFFSET = np.float32(-1024.0)
HU_SCALE = np.float32(3072.0)


def normalise_hu(hu: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """``(HU + 1024) / 3072`` in float32, no clipping (−3024 HU → −0.651, 4000 HU → 1.635)."""
    a = np.asarray(hu).astype(np.float32, copy=False)
    out: npt.NDArray[np.float32] = (a - HU_OFFSET) / HU_SCALE
    return out


@dataclass(frozen=True, eq=False)
class ReferenceGrid:
    """The 1 mm grid the reference resamples a volume onto, after reorientation to LPS.

    Attributes:
        shape: (X, Y, Z) voxels of the reoriented grid (x→L, y→P, z→S).
        affine_ras: (4, 4) the reference's (MONAI's) RAS affine of that grid; the seed is
            mapped through its inverse exactly as the reference does.
        affine_lps: (4, 4) the same grid's index → LPS mm affine.
        grid_to_input: (4, 4) reoriented grid index → continuous input voxel index (i, j, k).
    """

    shape: tuple[int, int, int]
    affine_ras: npt.NDArray[np.float64]
    affine_lps: npt.NDArray[np.float64]
    grid_to_input: npt.NDArray[np.float64]


def _shape_and_offset(
    in_shape: tuple[int, int, int], in_affine: npt.NDArray[np.float64], out_affine: npt.NDArray[np.float64]
) -> tuple[tuple[int, int, int], npt.NDArray[np.float64]]:
    """Output shape and origin of a resampling grid, as MONAI's ``compute_shape_offset``
    decides them (``scale_extent=False``): the grid covers the input's corner voxel centres;
    its origin is the corner that is smallest along every output axis, or, for oblique
    inputs where no corner is, the grid is centred on the input."""
    shape = np.asarray(in_shape, dtype=float)
    corners = np.array(np.meshgrid(*[(0.0, d - 1.0) for d in shape], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones((1, corners.shape[1]))])
    corners_out_h = np.linalg.solve(out_affine, in_affine) @ corners
    corners_world = in_affine @ corners
    dist = corners_out_h[:-1]
    corners_out = corners_out_h[:-1] / corners_out_h[-1]
    out_shape = np.round(np.ptp(corners_out, axis=1) + 1.0)
    offset: npt.NDArray[np.float64] | None = None
    for i in range(corners_world.shape[1]):
        if np.allclose(np.min(dist - dist[:, i : i + 1], 1), 0.0, rtol=SPACING_TOL):
            offset = corners_world[:-1, i]
            break
    if offset is None:
        offset = in_affine[:-1, :-1] @ (shape / 2.0) + in_affine[:-1, -1] - out_affine[:-1, :-1] @ (out_shape / 2.0)
    s = out_shape.astype(int)
    return (int(s[0]), int(s[1]), int(s[2])), offset


def reference_grid(volume: Volume) -> ReferenceGrid:
    """The reference's 1 mm LPS grid for ``volume``, from its geometry alone (no pixels)."""
    in_ras = LPS_TO_RAS @ volume.affine
    spacing = np.linalg.norm(in_ras[:3, :3], axis=0)
    out_d = np.where(np.abs(spacing - 1.0) <= SPACING_TOL, spacing, 1.0)
    resampled = np.diag(np.append(out_d, 1.0))
    shape, offset = _shape_and_offset(volume.shape, in_ras, resampled)
    resampled[:3, 3] = offset[:3]
    resample_xform = np.linalg.solve(in_ras, resampled)  # resampled index -> input index
    # Orientation to LPS: the resampled grid is RAS-aligned (positive diagonal), so x and y flip.
    flip = np.eye(4)
    for axis in (0, 1):
        flip[axis, axis] = -1.0
        flip[axis, 3] = shape[axis] - 1.0
    affine_ras = resampled @ flip
    return ReferenceGrid(
        shape=shape,
        affine_ras=affine_ras,
        affine_lps=LPS_TO_RAS @ affine_ras,
        grid_to_input=resample_xform @ flip,
    )


def seed_to_grid_index(grid: ReferenceGrid, seed: SeedPoint) -> tuple[int, int, int]:
    """The reference's seed index: LPS → RAS, inverse affine, truncation toward zero."""
    centre = (-seed.x, -seed.y, seed.z, 1.0)
    c = np.linalg.inv(grid.affine_ras) @ np.array(centre)
    return (int(c[0]), int(c[1]), int(c[2]))


def _trilinear_zero_padded(
    volume: Volume, coords: npt.NDArray[np.float64], slabs: Sequence[Volume] = ()
) -> npt.NDArray[np.float64]:
    """Trilinear interpolation of normalised intensities at continuous input indices
    ``coords`` (N, 3), neighbours outside the volume counting as 0 (``grid_sample`` with
    ``padding_mode="zeros"``, ``align_corners=True``). Reads only the touched block (from
    ``slabs`` when given, see :func:`read_block`)."""
    shape = np.asarray(volume.shape)
    base = np.floor(coords).astype(np.int64)
    frac = coords - base
    lo, hi = _trilinear_window(volume.shape, coords)
    if np.any(hi <= lo):
        return np.zeros(len(coords))
    window = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
    block = normalise_hu(read_block(volume, window, slabs)).astype(np.float64)
    out = np.zeros(len(coords))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                idx = base + (dx, dy, dz)
                inside = np.all((idx >= 0) & (idx < shape), axis=1)
                w = (
                    (frac[:, 0] if dx else 1.0 - frac[:, 0])
                    * (frac[:, 1] if dy else 1.0 - frac[:, 1])
                    * (frac[:, 2] if dz else 1.0 - frac[:, 2])
                )
                local = np.clip(idx - lo, 0, np.asarray(block.shape) - 1)
                vals = block[local[:, 0], local[:, 1], local[:, 2]]
                out += np.where(inside, w * vals, 0.0)
    return out


def _trilinear_window(
    shape: tuple[int, int, int], coords: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The block [lo, hi) of input voxels :func:`_trilinear_zero_padded` reads for ``coords``."""
    n = np.asarray(shape)
    base = np.floor(coords).astype(np.int64)
    lo = np.clip(base.min(axis=0), 0, n - 1)
    hi = np.clip(base.max(axis=0) + 2, 1, n)
    return lo, hi


def _axis_weights(coords: npt.NDArray[np.float64], n: int) -> tuple[int, npt.NDArray[np.float64]]:
    """1D linear-interpolation weights with zero padding: ``(start, W)`` such that the value
    at ``coords[r]`` is ``W[r] @ line[start : start + W.shape[1]]`` for a line of length n."""
    base = np.floor(coords).astype(np.int64)
    frac = coords - base
    start = int(np.clip(base.min(), 0, n - 1))
    stop = int(np.clip(base.max() + 2, start + 1, n))
    w = np.zeros((len(coords), stop - start))
    rows = np.arange(len(coords))
    for offset, wt in ((0, 1.0 - frac), (1, frac)):
        idx = base + offset
        ok = (idx >= start) & (idx < stop)
        np.add.at(w, (rows[ok], idx[ok] - start), wt[ok])
    return start, w


@dataclass(frozen=True, eq=False)
class _SeparablePlan:
    """Separable trilinear sampling: grid axis ``a`` reads input axis ``perm[a]`` with
    weights ``weights[a]`` (grid voxels x input voxels) over the input block ``window``."""

    perm: tuple[int, int, int]
    weights: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]
    window: tuple[slice, slice, slice]


def _separable_plan(
    shape: tuple[int, int, int], xform: npt.NDArray[np.float64], lo: list[int], hi: list[int]
) -> _SeparablePlan | None:
    """The plan of trilinear sampling of grid voxels [lo, hi) when ``xform`` (grid index →
    input index) maps each grid axis onto one input axis (no obliquity): three small 1D
    interpolations instead of 8 gathers per voxel. ``None`` for oblique transforms."""
    rot = xform[:3, :3]
    nonzero = np.abs(rot) > 1e-12
    if not (np.all(nonzero.sum(axis=0) == 1) and np.all(nonzero.sum(axis=1) == 1)):
        return None
    perm = [int(np.flatnonzero(nonzero[:, a])[0]) for a in range(3)]  # grid axis a -> input axis
    window = [slice(0, 0)] * 3
    weights = []
    for a in range(3):
        p = perm[a]
        g = np.arange(lo[a], hi[a], dtype=np.float64)
        coords = rot[p, a] * g + xform[p, 3]
        start, w = _axis_weights(coords, shape[p])
        window[p] = slice(start, start + w.shape[1])
        weights.append(w)
    return _SeparablePlan(
        perm=(perm[0], perm[1], perm[2]),
        weights=(weights[0], weights[1], weights[2]),
        window=(window[0], window[1], window[2]),
    )


def _separable_sample(volume: Volume, plan: _SeparablePlan, slabs: Sequence[Volume] = ()) -> npt.NDArray[np.float64]:
    """Values of the grid voxels of ``plan`` (grid-axis order), read from ``plan.window``
    (of ``slabs`` when given, see :func:`read_block`)."""
    block = normalise_hu(read_block(volume, plan.window, slabs)).astype(np.float64)
    # bring the block into grid-axis order, then contract each axis with its weights
    block = block.transpose(plan.perm)
    wa, wb, wc = plan.weights
    t = (wa @ block.reshape(block.shape[0], -1)).reshape(wa.shape[0], block.shape[1], block.shape[2])
    t = np.matmul(wb, t)  # (na, nb, C)
    out: npt.NDArray[np.float64] = t @ wc.T  # (na, nb, nc)
    return out


@dataclass(frozen=True, eq=False)
class _PatchPlan:
    """Where a patch lies on the reference grid ([lo, hi) grid voxels) and how it is sampled."""

    grid: ReferenceGrid
    lo: list[int]
    hi: list[int]
    separable: _SeparablePlan | None


def _plan_patch(volume: Volume, seed: SeedPoint, size: int) -> _PatchPlan:
    if size < 2 or size % 2:
        raise ValueError(f"patch size must be even and >= 2, got {size}")
    grid = reference_grid(volume)
    c = seed_to_grid_index(grid, seed)
    half = size // 2
    lo = [max(c[a] - half, 0) for a in range(3)]
    hi = [min(c[a] + half, grid.shape[a]) for a in range(3)]
    if any(h <= low for low, h in zip(lo, hi, strict=True)):
        raise SeedError(_outside_message(volume, seed))
    return _PatchPlan(grid, lo, hi, _separable_plan(volume.shape, grid.grid_to_input, lo, hi))


def _oblique_coords(plan: _PatchPlan) -> tuple[tuple[int, int, int], npt.NDArray[np.float64]]:
    """Shape of the crop and the continuous input index (N, 3) of each of its voxels."""
    lo, hi = plan.lo, plan.hi
    a, b, k = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), np.arange(lo[2], hi[2]), indexing="ij")
    pts = np.stack([a.ravel(), b.ravel(), k.ravel(), np.ones(a.size)], axis=0).astype(np.float64)
    coords: npt.NDArray[np.float64] = (plan.grid.grid_to_input @ pts)[:3].T
    return (a.shape[0], a.shape[1], a.shape[2]), coords


def read_window(volume: Volume, seed: SeedPoint, size: int = PATCH_SIZE) -> tuple[slice, slice, slice]:
    """The block of input voxels (i, j, k slices of ``volume.array``) that
    :func:`extract_patch` reads for ``seed``: geometry only, no pixel is read. The pipeline
    decodes just the CT slices of these blocks.

    Raises:
        SeedError: as :func:`extract_patch`.
    """
    plan = _plan_patch(volume, seed, size)
    if plan.separable is not None:
        return plan.separable.window
    _, coords = _oblique_coords(plan)
    lo, hi = _trilinear_window(volume.shape, coords)
    hi = np.maximum(hi, lo)
    return (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))


def extract_patch(volume: Volume, seed: SeedPoint, size: int = PATCH_SIZE, *, slabs: Sequence[Volume] = ()) -> Patch:
    """The reference's patch around ``seed`` (LPS mm), computed only where needed.

    Args:
        volume: CT in HU with its LPS affine. Its geometry (shape and affine) decides the
            reference's 1 mm grid, as the reference resamples the whole volume.
        seed: centre of the patch in LPS mm.
        size: edge length in 1 mm voxels (the encoder uses 50; training may use more).
        slabs: when given, the voxels are read from these instead of ``volume.array``:
            runs of whole slices of ``volume`` (:func:`slab_offset`), one of which must
            hold :func:`read_window` (a DICOM CT decoded only where patches read,
            :attr:`mhub_fmcib.dicom.ct.CtSeries.slabs`). The result is bit-identical to
            the one from the whole volume.

    Returns:
        A :class:`Patch`: float32 (size, size, size) in (z, y, x) order, normalised units.

    Raises:
        SeedError: the seed's crop holds no voxel of the volume; the message says whether
            the seed would be inside with RAS signs; or no slab holds the voxels it reads.
    """
    plan = _plan_patch(volume, seed, size)
    grid, lo = plan.grid, plan.lo
    if plan.separable is not None:
        sampled = _separable_sample(volume, plan.separable, slabs)
    else:  # oblique input: general trilinear sampling
        shape, coords = _oblique_coords(plan)
        sampled = _trilinear_zero_padded(volume, coords, slabs).reshape(shape)
    crop = sampled.astype(np.float32).transpose(2, 1, 0)  # (x, y, z) -> (z, y, x)
    pads = [((size - s) // 2, size - s - (size - s) // 2) for s in crop.shape]
    arr = np.pad(crop, pads, mode="constant", constant_values=0.0)
    # patch index (z, y, x) -> reoriented grid index (x, y, z)
    to_grid = np.zeros((4, 4))
    to_grid[0, 2] = to_grid[1, 1] = to_grid[2, 0] = 1.0
    to_grid[0, 3] = lo[0] - pads[2][0]
    to_grid[1, 3] = lo[1] - pads[1][0]
    to_grid[2, 3] = lo[2] - pads[0][0]
    to_grid[3, 3] = 1.0
    valid = tuple((p[0], p[0] + s) for p, s in zip(pads, crop.shape, strict=True))
    return Patch(array=arr, affine=grid.affine_lps @ to_grid, valid=valid)  # type: ignore[arg-type]


#: Tolerance (voxels) when placing a slab on its volume's grid.
SLAB_TOL = 1e-4


def slab_offset(volume: Volume, slab: Volume) -> int:
    """The k index of ``volume`` at which ``slab`` (a run of whole slices of it) starts:
    ``slab.array[i, j, k - k0]`` is ``volume``'s voxel ``(i, j, k)``. From the two affines.

    Raises:
        ValueError: ``slab`` is not a run of whole slices of ``volume``'s grid.
    """
    xform = np.linalg.solve(volume.affine, slab.affine)  # slab index -> volume index
    k0 = round(float(xform[2, 3]))
    expected = np.eye(4)
    expected[2, 3] = k0
    if (
        not np.allclose(xform, expected, atol=SLAB_TOL)
        or slab.shape[:2] != volume.shape[:2]
        or not 0 <= k0 <= k0 + slab.shape[2] <= volume.shape[2]
    ):
        raise ValueError(
            f"a slab of shape {slab.shape} is not a run of whole slices of the volume {volume.shape} "
            f"(slab index -> volume index: {np.round(xform, 6).tolist()})"
        )
    return k0


def read_block(
    volume: Volume, window: tuple[slice, slice, slice], slabs: Sequence[Volume] = ()
) -> npt.NDArray[np.generic]:
    """``volume.array[window]`` (HU as stored), read from the slab that holds the whole
    window's slices when ``slabs`` are given (``window``: i, j, k slices with explicit
    start and stop, in ``volume``'s indices).

    Raises:
        SeedError: no slab holds the window (its slices were not decoded: a bug).
    """
    if not slabs:
        return volume.array[window]
    k = window[2]
    for slab in slabs:
        k0 = slab_offset(volume, slab)
        if k.stop <= k.start or (k0 <= k.start and k.stop <= k0 + slab.shape[2]):
            return slab.array[window[0], window[1], slice(k.start - k0, k.stop - k0)]
    decoded = ", ".join(f"{o}..{o + s.shape[2] - 1}" for o, s in ((slab_offset(volume, s), s) for s in slabs))
    raise SeedError(
        f"the patch reads CT slices {k.start}..{k.stop - 1}, but only slices {decoded} were decoded; "
        "this is a bug: please report it"
    )


def slices_read(volume: Volume, seeds: Iterable[SeedPoint], size: int = PATCH_SIZE) -> set[int]:
    """The k indices of ``volume`` the patches of ``seeds`` read (:func:`read_window`), from
    geometry alone; a seed outside the volume, or whose patch holds no voxel, reads none."""
    out: set[int] = set()
    for seed in seeds:
        if not volume.contains_lps(seed):
            continue
        try:
            window = read_window(volume, seed, size)
        except SeedError:
            continue
        out.update(range(window[2].start, window[2].stop))
    return out


def _outside_message(volume: Volume, seed: SeedPoint) -> str:
    flipped = SeedPoint(-seed.x, -seed.y, seed.z)
    lo = volume.index_to_lps(np.zeros(3))
    hi = volume.index_to_lps(np.asarray(volume.shape) - 1.0)
    extent = ", ".join(f"{ax} {min(lo[i], hi[i]):.1f}..{max(lo[i], hi[i]):.1f}" for i, ax in enumerate("xyz"))
    msg = f"seed ({seed.x:.2f}, {seed.y:.2f}, {seed.z:.2f}) LPS mm lies outside the image (LPS extent {extent} mm)"
    if volume.contains_lps(flipped):
        msg += (
            f"; with x and y negated it would be inside ({flipped.x:.2f}, {flipped.y:.2f}, "
            f"{flipped.z:.2f}): the seed was probably given in RAS. Seeds must be LPS "
            "(DICOM patient coordinates); negate coordX and coordY."
        )
    else:
        msg += "; check that the seed belongs to this image and is in LPS millimetres."
    return msg
