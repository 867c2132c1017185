"""DICOM exports (issue 18, point 5): seconds per lesion of each exporter on the sample CT.

For N lesions (random seeds around the sample nodule, so the 50 mm cubes overlap) with
random float32 features, one process measures, each step timed with wall and CPU seconds:

* ``sr_first``: the SR exporter's first call in the process (imports, highdicom's
  template build) for one lesion: the fixed cost a run pays once;
* ``sr``: building and writing the SR(s) of the N lesions (``build_feature_srs`` where the
  code has it, else one ``build_feature_sr`` with ``max_lesions=N``);
* ``seg`` and ``seg_frames``: building and writing the patch-region SEG, and its frame
  building (``patch_seg._frames``) alone.

``--write DIR`` also writes the outputs with fixed timestamps (every Content/Instance
Creation/Series date and time and Contribution DateTime set to constants), so two code
versions can be compared byte by byte: run this script with ``PYTHONPATH`` pointing at
each version's tree.

Run: ``nice -n 10 .venv/bin/python benchmarks/exports.py --lesions 5 60 --reps 3``;
prints one JSON object per lesion count and writes ``benchmarks/out/exports.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
NODULE = (-21.858572, -120.535814, -611.496416)
#: Seeds are drawn in this LPS box around the nodule (mm): 60 cubes of 50 mm overlap.
SPREAD_MM = (60.0, 50.0, 60.0)
_FIXED = {
    "ContentDate": "20260101",
    "ContentTime": "120000",
    "InstanceCreationDate": "20260101",
    "InstanceCreationTime": "120000",
    "SeriesDate": "20260101",
    "SeriesTime": "120000",
}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def _results(n: int, ct: pydicom.Dataset, volume: Any) -> list[Any]:
    """``n`` OK results with seeds drawn around the nodule, real patches, random features."""
    from mhub_fmcib.patch import extract_patch
    from mhub_fmcib.records import (
        N_FEATURES,
        FileOrigin,
        Lesion,
        LesionResult,
        LesionStatus,
        SeedPoint,
        SeedSource,
        SeriesRef,
    )

    rng = np.random.default_rng(18)
    series = SeriesRef(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID), str(ct.FrameOfReferenceUID))
    out = []
    for i in range(n):
        xyz = np.asarray(NODULE) + rng.uniform(-1, 1, 3) * np.asarray(SPREAD_MM)
        seed = SeedPoint(*(float(v) for v in xyz))
        lesion = Lesion(
            lesion_id=f"lesion_{i:03d}",
            seed=seed,
            seed_source=SeedSource.USER,
            origin=FileOrigin(image_path="ct series folder", series=series, row=i + 1),
        )
        feats = (rng.standard_normal(N_FEATURES) * 10.0 ** rng.integers(-6, 3, N_FEATURES)).astype(np.float32)
        out.append(
            LesionResult(lesion=lesion, status=LesionStatus.OK, features=feats, patch=extract_patch(volume, seed))
        )
    return out


def _fix_volatile(ds: pydicom.Dataset) -> None:
    """Set what differs between two runs on the same input (dates, times, highdicom's random
    Dimension Organization UID) to constants."""
    for kw, value in _FIXED.items():
        if kw in ds:
            setattr(ds, kw, value)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = "20260101120000"
    for kw in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in ds.get(kw, []):
            item.DimensionOrganizationUID = "1.2.3.4"


def _build_srs(cts: list[pydicom.Dataset], results: list[Any], provenance: Any) -> list[Any]:
    from mhub_fmcib.export import sr

    if hasattr(sr, "build_feature_srs"):
        return list(sr.build_feature_srs(cts, results, provenance))
    return [sr.build_feature_sr(cts, results, provenance, max_lesions=max(len(results), 1))]


def _write_srs(srs: list[Any], folder: Path) -> list[Path]:
    from mhub_fmcib.export import sr

    if hasattr(sr, "write_srs"):
        return list(sr.write_srs(srs, folder))
    return [sr.write_sr(s, folder) for s in srs]


def measure(n: int, reps: int, write: Path | None, first_in_process: bool) -> dict[str, Any]:
    """Medians over ``reps`` of each exporter's wall and CPU seconds for ``n`` lesions
    (``sr_first_s`` only when this is the process's first SR)."""
    from mhub_fmcib.export import patch_seg
    from mhub_fmcib.image_io import read_image
    from mhub_fmcib.provenance import collect_provenance

    cts: list[pydicom.Dataset] = [
        pydicom.dcmread(f, stop_before_pixels=True) for f in sorted((SAMPLE / "dicom" / "ct").glob("*.dcm"))
    ]
    volume = read_image(SAMPLE / "nrrd" / "lung1_image.nrrd")
    provenance = collect_provenance("0123456789abcdef" * 4, "model_weights.torch")
    results = _results(n, cts[0], volume)
    out: dict[str, Any] = {"lesions": n, "reps": reps}
    timings: dict[str, list[tuple[float, float]]] = {"sr": [], "seg": [], "seg_frames": []}
    frames_calls: list[tuple[float, float]] = []
    original = patch_seg._frames

    def frames(*a: Any, **k: Any) -> Any:
        got, fw, fc = _timed(lambda: original(*a, **k))
        frames_calls.append((fw, fc))
        return got

    def sr_step(folder: Path, lesions: list[Any]) -> None:
        _write_srs(_build_srs(cts, lesions, provenance), folder)

    def seg_step(folder: Path) -> None:
        patch_seg.write_seg(_seg(patch_seg, cts, volume, results, provenance), folder, cts[0].SeriesInstanceUID)

    with tempfile.TemporaryDirectory() as tmp:
        if first_in_process:
            _, w, c = _timed(lambda: sr_step(Path(tmp) / "first", results[:1]))
            out["sr_first_s"] = {"wall": w, "cpu": c}
        patch_seg._frames = frames
        try:
            for r in range(reps):
                sr_dir, seg_dir = Path(tmp) / f"sr{r}", Path(tmp) / f"seg{r}"
                timings["sr"].append(_timed(functools.partial(sr_step, sr_dir, results))[1:])
                timings["seg"].append(_timed(functools.partial(seg_step, seg_dir))[1:])
                timings["seg_frames"].append(frames_calls[-1])
        finally:
            patch_seg._frames = original
    for key, vals in timings.items():
        wall = statistics.median(v[0] for v in vals)
        cpu = statistics.median(v[1] for v in vals)
        out[f"{key}_s"] = {"wall": wall, "cpu": cpu, "wall_per_lesion": wall / n, "cpu_per_lesion": cpu / n}
    if write is not None:
        _write_fixed(write, cts, volume, results, provenance)
    return out


def _seg(patch_seg: Any, cts: list[pydicom.Dataset], volume: Any, results: list[Any], provenance: Any) -> Any:
    """The patch-region SEG dataset of ``results``."""
    return patch_seg.build_patch_region_seg(cts, volume, results, provenance).dataset


def _write_fixed(folder: Path, cts: list[pydicom.Dataset], volume: Any, results: list[Any], provenance: Any) -> None:
    """The SR(s) and the SEG with fixed timestamps under ``folder`` (for byte comparison)."""
    from mhub_fmcib.export import patch_seg

    srs = _build_srs(cts, results, provenance)
    for s in srs:
        _fix_volatile(s)
    _write_srs(srs, folder)
    seg = _seg(patch_seg, cts, volume, results, provenance)
    _fix_volatile(seg)
    patch_seg.write_seg(seg, folder, cts[0].SeriesInstanceUID)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lesions", type=int, nargs="+", default=[5, 60])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--write", type=Path, default=None, help="also write fixed-time outputs to DIR/<lesions>/")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "exports.json")
    args = ap.parse_args()
    rows = []
    for i, n in enumerate(args.lesions):
        row = measure(n, args.reps, args.write / str(n) if args.write else None, first_in_process=i == 0)
        print(json.dumps(row), flush=True)
        rows.append(row)
    doc = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code": str(Path(sys.modules["mhub_fmcib"].__file__ or "").parent),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
