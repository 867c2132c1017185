"""Side by side (issue 18, point 1 target): the authors' ``fmcib.run.get_features`` against
``mhub-fmcib run --seeds`` on the same seeds CSV of the sample CT, each in a fresh process,
process start to features on disk, interleaved repeats, medians.

The reference runs in a separate virtual environment (``--ref-python``; see
``benchmarks/reference/README.md``); without one this benchmark is skipped with a note.
Also compares the two feature tables (max abs difference, same image, seeds and weights).

Run: ``nice -n 10 .venv/bin/python benchmarks/vs_reference.py --ref-python /tmp/fmcib-ref/bin/python``
Writes ``benchmarks/out/vs_reference.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REF_DRIVER = """
import sys
exec(open(sys.argv[1]).read())
from fmcib.run import get_features
df = get_features(sys.argv[2], weights_path=sys.argv[3])
df.to_csv(sys.argv[4], index=False)
"""
OURS_DRIVER = "from mhub_fmcib.cli import console; console()"  # what the console script runs


def write_seeds(path: Path, image: Path, n: int, seed: int = 0) -> None:
    """``n`` seed points (LPS mm) spread over the middle of the sample CT."""
    from mhub_fmcib.image_io import read_image

    vol = read_image(image)
    rng = np.random.default_rng(seed)
    shape = np.array(vol.shape)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_path", "coordX", "coordY", "coordZ"])
        for _ in range(n):
            x, y, z = vol.index_to_lps(rng.uniform(0.2, 0.8, 3) * (shape - 1))
            w.writerow([str(image), f"{x:.3f}", f"{y:.3f}", f"{z:.3f}"])


def timed_run(cmd: list[str], env: dict[str, str], settle_s: float = 0.0) -> dict[str, float]:
    """Wall seconds and the child's CPU seconds (user + system), after ``settle_s`` seconds
    idle (no run starts while the previous one's processes may still be exiting)."""
    time.sleep(settle_s)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def read_features(path: Path, first: str) -> np.ndarray:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    i = rows[0].index(first)
    return np.asarray([[float(v) for v in r[i : i + 4096]] for r in rows[1:]], dtype=np.float32)


def summarise(
    res: dict[str, object],
    runs: dict[str, list[dict[str, float]]],
    counts: list[int],
    variants: list[tuple[str, ...]],
    diffs: dict[str, float],
    out_path: Path,
) -> None:
    """Medians, speed-ups and the fixed + per-lesion fit of what has run so far, written to
    ``out_path`` (after every repeat: an interrupted benchmark keeps its finished repeats)."""
    for k, rs in runs.items():
        res[k] = {m: statistics.median(r[m] for r in rs) for m in rs[0]} | {"all": rs}
    for n in counts:
        ref = res[f"reference_{n}"]
        for name, _ in variants:
            ours = res[f"{name}_{n}"]
            res[f"speedup_{name}_{n}"] = {m: ref[m] / ours[m] for m in ("wall_s", "cpu_s")}  # type: ignore[index]
    if len(counts) >= 2:  # fixed + per-lesion cost from the two smallest/largest counts (medians)
        lo, hi = min(counts), max(counts)
        for name in ["reference", *(v[0] for v in variants)]:
            fit = {}
            for m in ("wall_s", "cpu_s"):
                t_lo, t_hi = res[f"{name}_{lo}"][m], res[f"{name}_{hi}"][m]  # type: ignore[index]
                per = (t_hi - t_lo) / (hi - lo)
                fit[m] = {"fixed_s": t_lo - per * lo, "per_lesion_s": per}
            res[f"fit_{name}"] = fit
    res["max_abs_feature_diff"] = diffs
    res["load_average_end"] = os.getloadavg()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k.startswith(("speedup", "fit", "max_abs", "load"))}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref-python", type=Path, default=os.environ.get("FMCIB_REF_PYTHON"))
    ap.add_argument("--seeds", default="5,60")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--ours-args", default="", help="extra arguments for every mhub-fmcib run")
    ap.add_argument(
        "--variants",
        default="ours=",
        help="our runs, NAME=ARGS;NAME=ARGS (e.g. 'eager=--encoder eager;traced=--encoder traced'), each timed",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="idle seconds before every timed run (0: back to back)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "vs_reference.json")
    a = ap.parse_args()
    if a.ref_python is None or not Path(a.ref_python).exists():
        print(
            "vs_reference: no --ref-python (a venv with the authors' fmcib, "
            "see benchmarks/reference/README.md): skipped"
        )
        return
    from mhub_fmcib.model.weights import write_random_weights

    image = ROOT / "sample_data" / "nrrd" / "lung1_image.nrrd"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}
    env = {k: v for k, v in env.items() if v}
    variants = [tuple(v.split("=", 1)) for v in a.variants.split(";") if v.strip()]
    res: dict[str, object] = {
        "load_average_start": os.getloadavg(),
        "variants": dict(variants),
        "settle_s": a.settle,
    }
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        w = write_random_weights(tmp / "model_weights.torch")
        driver = tmp / "ref_driver.py"
        driver.write_text(REF_DRIVER)
        counts = [int(s) for s in a.seeds.split(",")]
        for n in counts:
            write_seeds(tmp / f"seeds_{n}.csv", image, n)
        diffs: dict[str, float] = {}
        for rep in range(a.reps):
            for n in counts:
                seeds = tmp / f"seeds_{n}.csv"
                ref_out = tmp / f"ref_{n}_{rep}.csv"
                r = timed_run(
                    [
                        str(a.ref_python),
                        str(driver),
                        str(ROOT / "benchmarks" / "reference" / "shim.py"),
                        str(seeds),
                        str(w),
                        str(ref_out),
                    ],
                    env,
                    a.settle,
                )
                r["load_1min"] = os.getloadavg()[0]
                runs.setdefault(f"reference_{n}", []).append(r)
                line = f"rep {rep} n={n}: reference {r['wall_s']:.1f} s ({r['cpu_s']:.1f} cpu s)"
                # our variants rotate their order each repeat: the run right after the
                # reference (its 4 loader workers still exiting) measured up to ~1 s slower
                k = rep % len(variants)
                for name, extra in variants[k:] + variants[:k]:
                    out = tmp / f"{name}_{n}_{rep}"
                    cmd = [sys.executable, "-c", OURS_DRIVER, "run", str(seeds), str(out), "--seeds"]
                    cmd += ["--weights", str(w), "--no-sr", "--no-seg", "--no-qc", *a.ours_args.split(), *extra.split()]
                    o = timed_run(cmd, env, a.settle)
                    o["load_1min"] = os.getloadavg()[0]
                    runs.setdefault(f"{name}_{n}", []).append(o)
                    line += f", {name} {o['wall_s']:.1f} s ({o['cpu_s']:.1f} cpu s)"
                    if rep == 0:
                        theirs = read_features(ref_out, "pred_0")
                        ours = read_features(out / "features.csv", "feature_0")
                        diffs[f"{name}_{n}"] = float(np.abs(theirs - ours).max())
                        if name != variants[0][0]:
                            first = read_features(tmp / f"{variants[0][0]}_{n}_0" / "features.csv", "feature_0")
                            diffs[f"{name}_{n}_vs_{variants[0][0]}"] = float(np.abs(first - ours).max())
                print(line, flush=True)
            summarise(res, runs, counts, variants, diffs, a.out)


if __name__ == "__main__":
    main()
