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
OURS_DRIVER = "import sys; from mhub_fmcib.cli import main; sys.exit(main(sys.argv[1:]))"


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


def timed_run(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds and the child's CPU seconds (user + system)."""
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref-python", type=Path, default=os.environ.get("FMCIB_REF_PYTHON"))
    ap.add_argument("--seeds", default="5,60")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--ours-args", default="", help="extra arguments for mhub-fmcib run")
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
    res: dict[str, object] = {"load_average_start": os.getloadavg()}
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
                )
                runs.setdefault(f"reference_{n}", []).append(r)
                out = tmp / f"ours_{n}_{rep}"
                cmd = [sys.executable, "-c", OURS_DRIVER, "run", str(seeds), str(out), "--seeds", "--weights", str(w)]
                cmd += ["--no-sr", "--no-seg", "--no-qc", *a.ours_args.split()]
                o = timed_run(cmd, env)
                runs.setdefault(f"ours_{n}", []).append(o)
                print(f"rep {rep} n={n}: reference {r['wall_s']:.1f} s, ours {o['wall_s']:.1f} s", flush=True)
                if rep == 0:
                    diffs[str(n)] = float(
                        np.abs(
                            read_features(ref_out, "pred_0") - read_features(out / "features.csv", "feature_0")
                        ).max()
                    )
    for k, rs in runs.items():
        res[k] = {m: statistics.median(r[m] for r in rs) for m in rs[0]} | {"all": rs}
    for n in counts:
        ref, ours = res[f"reference_{n}"], res[f"ours_{n}"]
        res[f"speedup_{n}"] = {m: ref[m] / ours[m] for m in ("wall_s", "cpu_s")}  # type: ignore[index]
    res["max_abs_feature_diff_ours_vs_reference"] = diffs
    res["load_average_end"] = os.getloadavg()
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vs_reference.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if not k.startswith(("reference_", "ours_"))}, indent=1))
    for n in counts:
        ref, ours, sp = res[f"reference_{n}"], res[f"ours_{n}"], res[f"speedup_{n}"]
        print(f"| {n} seeds | reference {ref['wall_s']:.1f} s | ours {ours['wall_s']:.1f} s | {sp['wall_s']:.1f}x |")  # type: ignore[index]


if __name__ == "__main__":
    main()
