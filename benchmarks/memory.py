"""Memory benchmark (issue 15, point 12): peak RSS of the real CLI on a long CT and on a
SEG with many segments.

Inputs, synthesised into a temporary folder from the committed sample study:

1. **ct1500**: a 1500-slice CT series (512 x 512, JPEG-LS as in ``sample_data``): the 48
   sample slices repeated with their compressed pixel data unchanged, re-positioned at
   0.7 mm steps (1050 mm of patient), own UIDs; plus a highdicom SEG with one nodule
   (an ellipsoid of 8 x 8 x 10 voxels) half-way along the series. The SEG references only
   the slices the nodule is on.
2. **seg500**: the 48-slice sample CT with one SEG holding 500 segments (small disjoint
   ellipsoids on a regular lattice, built from a label map with highdicom).

Each input is measured with ``mhub-fmcib run INPUT OUTPUT --weights W --progress none``
(SR, patch-region SEG and QC exports on, as by default) in a fresh subprocess, with a
random-initialised encoder in the published format (738 MB; the weights are memory-mapped,
so their pages count in the RSS once touched). Peak RSS is ``ru_maxrss`` of the child
(``os.wait4``). Also reported: the RSS of a child that only loads the encoder and runs one
patch (the "weights" share of the bound).

Run: ``PYTHONPATH=$PWD .venv/bin/python benchmarks/memory.py [--only ct1500] [--json out.json]``
(about 15 minutes on 2 cores, most of it the 500 lesions of seg500).
Results: ``benchmarks/README.md``, "Memory (issue 15.12)".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lib"))

from fmcib_testlib.dicom_builders import ct_files, lattice_label, make_label_seg, make_seg, read_ct_datasets  # noqa: E402

from mhub_fmcib.model.weights import write_random_weights  # noqa: E402

N_LONG = 1500
STEP_MM = 0.7
N_SEGMENTS = 500
GiB = float(1 << 30)

_MODEL_ONLY = """
import sys, numpy as np
from pathlib import Path
from mhub_fmcib.model.extractor import FeatureExtractor
from mhub_fmcib.model.weights import read_weights
ex = FeatureExtractor(read_weights(Path(sys.argv[1])), device="cpu", batch_size=1)
ex.extract(np.zeros((1, 50, 50, 50), np.float32))
"""


def make_long_ct(dest: Path, n: int = N_LONG, step: float = STEP_MM) -> list[pydicom.Dataset]:
    """``n`` CT slices in ``dest/ct`` (the sample slices' pixel data, new positions and UIDs);
    returns their headers sorted by z."""
    sources = [pydicom.dcmread(p) for p in ct_files()]
    sources.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    study, series, frame = (generate_uid(entropy_srcs=[f"memory-{w}"]) for w in ("study", "series", "for"))
    z0 = float(sources[0].ImagePositionPatient[2])
    out = dest / "ct"
    out.mkdir(parents=True)
    headers = []
    for k in range(n):
        ds = sources[k % len(sources)]
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"memory-sop-{k}"])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        x, y, _ = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, round(z0 + k * step, 4)]
        ds.SliceThickness = step
        ds.InstanceNumber = k + 1
        ds.SliceLocation = round(z0 + k * step, 4)
        ds.save_as(out / f"IM{k:05d}.dcm")
        headers.append(pydicom.dcmread(out / f"IM{k:05d}.dcm", stop_before_pixels=True))
    return headers


def ellipsoid(shape: tuple[int, int, int], centre: tuple[int, int, int], radii: tuple[int, int, int]) -> np.ndarray:
    """bool (I, J, K) ellipsoid, computed only inside its bounding box."""
    out = np.zeros(shape, dtype=bool)
    lo = [max(c - r, 0) for c, r in zip(centre, radii, strict=True)]
    hi = [min(c + r + 1, s) for c, r, s in zip(centre, radii, shape, strict=True)]
    g = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij")
    r = sum(((g[a] - centre[a]) / radii[a]) ** 2 for a in range(3))
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = r <= 1.0
    return out


def make_ct1500(base: Path) -> Path:
    """Input 1: the long CT and a one-nodule SEG referencing the slices it covers."""
    inp = base / "ct1500"
    headers = make_long_ct(inp)
    k_mid, half = N_LONG // 2, 12
    sub = headers[k_mid - half : k_mid + half]
    mask = ellipsoid((512, 512, len(sub)), (300, 260, half), (8, 8, 10))
    make_seg(sub, {"Nodule": mask}, inp / "seg" / "SEG.dcm")
    return inp


def make_seg500(base: Path, n: int = N_SEGMENTS) -> Path:
    """Input 2: the sample CT and one SEG of ``n`` disjoint small ellipsoids."""
    inp = base / "seg500"
    (inp / "ct").mkdir(parents=True)
    for p in ct_files():
        (inp / "ct" / p.name).write_bytes(p.read_bytes())
    headers = read_ct_datasets()
    make_label_seg(headers, lattice_label((512, 512, len(headers)), n), inp / "seg" / "SEG.dcm")
    return inp


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def peak_rss(cmd: list[str], log: Path) -> tuple[int, float, float]:
    """(exit code, peak RSS in GiB, wall seconds) of ``cmd`` run as a child."""
    t0 = time.perf_counter()
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env())
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024 / GiB, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["ct1500", "seg500"], action="append")
    ap.add_argument("--work", type=Path, help="folder for inputs and outputs (default: a temporary one)")
    ap.add_argument("--weights", type=Path, help="weights file (default: random, written into --work)")
    ap.add_argument("--json", type=Path, help="write the results here as JSON")
    ap.add_argument("--label", default="", help="a name for this run (e.g. before/after)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fmcib-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    weights = args.weights or work / "model_weights.torch"
    if not weights.is_file():
        write_random_weights(weights, seed=0)
    results: dict[str, object] = {
        "label": args.label,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0],
    }
    rc, rss, wall = peak_rss([sys.executable, "-c", _MODEL_ONLY, str(weights)], work / "model_only.log")
    results["model_only"] = {"rc": rc, "peak_rss_gib": round(rss, 3), "wall_s": round(wall, 1)}
    print(f"model only: rc {rc}, peak RSS {rss:.2f} GiB, {wall:.0f} s", flush=True)
    makers = {"ct1500": make_ct1500, "seg500": make_seg500}
    for name in args.only or list(makers):
        inp = work / name
        if not inp.is_dir():
            makers[name](work)
        out = work / f"out_{name}_{args.label or 'run'}"
        cmd = [sys.executable, "-m", "mhub_fmcib.cli", "run", str(inp), str(out), "--weights", str(weights)]
        cmd += ["--progress", "none", "--no-resume"]
        rc, rss, wall = peak_rss(cmd, work / f"{name}_{args.label or 'run'}.log")
        doc = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
        summary = doc.get("summary", {})
        results[name] = {
            "rc": rc,
            "peak_rss_gib": round(rss, 3),
            "wall_s": round(wall, 1),
            "lesions": len(doc.get("lesions", [])),
            "summary": {k: v for k, v in summary.items() if isinstance(v, int | float | str)},
        }
        print(f"{name}: rc {rc}, peak RSS {rss:.2f} GiB, {wall:.0f} s, log {work}/{name}_*.log", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
