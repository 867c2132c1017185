"""Prefetch of the next case (issue 18, point 6): the same multi-study export run with
``prefetch`` off and on, interleaved, in one process (the encoder loaded once), medians.

Reports per setting: wall seconds, process CPU seconds (user + system), lesions/s, the
encoder's seconds (its forward passes, features back on the host), the share of wall time
the encoder waits for decoding (the run loop's time in stages 1-3 -- import, decoding,
patches -- on its own thread, or waiting for the prefetch thread to hand them over:
``decode_wait_share``) and the share it is idle for any reason (also exports and tables:
``encoder_idle_share``). On a CPU the
prefetch thread competes with the encoder's threads for the same cores; on CUDA it overlaps
host work with the device's.

Run: ``.venv/bin/python benchmarks/prefetch.py [--device cuda] [--studies 8] [--reps 3]``
Writes ``benchmarks/out/prefetch[_DEVICE].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "lib"))

from mhub_fmcib import pipeline  # noqa: E402
from mhub_fmcib.config import Precision, RunConfig  # noqa: E402
from mhub_fmcib.model.extractor import FeatureExtractor  # noqa: E402
from mhub_fmcib.model.weights import read_weights, write_random_weights  # noqa: E402
from mhub_fmcib.pipeline import run  # noqa: E402


def timed_decoding() -> dict[str, float]:
    """Count the run loop's seconds spent on stages 1-3 (``prepare_case`` on the main
    thread) or waiting for the prefetch thread (``Prefetcher.next``) in the returned dict
    (``"s"``); stages 1-3 in the prefetch thread itself overlap the encoder and are not
    counted."""
    waited = {"s": 0.0}
    prepare, fetch_next = pipeline.prepare_case, pipeline.Prefetcher.next

    def timed_prepare(*args: object, **kw: object) -> object:
        if threading.current_thread() is not threading.main_thread():
            return prepare(*args, **kw)  # type: ignore[arg-type]
        t = time.perf_counter()
        try:
            return prepare(*args, **kw)  # type: ignore[arg-type]
        finally:
            waited["s"] += time.perf_counter() - t

    def timed_next(self: pipeline.Prefetcher, stop: pipeline.StopFlag | None) -> object:
        t = time.perf_counter()
        try:
            return fetch_next(self, stop)
        finally:
            waited["s"] += time.perf_counter() - t

    pipeline.prepare_case = timed_prepare  # type: ignore[assignment]
    pipeline.Prefetcher.next = timed_next  # type: ignore[assignment,method-assign]
    return waited


def timed_extractor(ex: FeatureExtractor) -> dict[str, float]:
    """Wrap ``ex.extract`` so that its seconds add up in the returned dict (``"s"``)."""
    spent = {"s": 0.0}
    inner = ex.extract

    def extract(p: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        try:
            return inner(p)  # synchronous: the features are on the host when it returns
        finally:
            spent["s"] += time.perf_counter() - t

    ex.extract = extract  # type: ignore[method-assign,assignment]
    return spent


def one_run(
    config: RunConfig, ex: FeatureExtractor, spent: dict[str, float], waited: dict[str, float]
) -> dict[str, float]:
    """One run of ``config``: wall, CPU, encoder and decode-wait seconds."""
    spent["s"] = waited["s"] = 0.0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    report = run(config, {}, extractor=ex)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "lesions_ok": report.n_ok,
        "lesions_per_s": report.n_ok / wall,
        "encoder_s": spent["s"],
        "decode_wait_s": waited["s"],
        "decode_wait_share": waited["s"] / wall,
        "encoder_idle_share": 1 - spent["s"] / wall,
        "load_1min": os.getloadavg()[0],
    }


def compare(
    device: str, studies: int, reps: int, precision: str = "fp32", batch_size: int | None = None, exports: bool = False
) -> dict[str, object]:
    """``reps`` interleaved pairs of runs (prefetch off / on) of a ``studies``-study export
    after one warm-up run; medians per setting."""
    from fmcib_testlib.export_builder import make_export

    res: dict[str, object] = {"device": device, "studies": studies, "precision": precision, "exports": exports}
    res["load_average_start"] = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        weights = read_weights(write_random_weights(tmp / "model_weights.torch"))
        ex = FeatureExtractor(weights, device=device, batch_size=batch_size, precision=Precision(precision))
        res["batch_size"] = ex.batch_size
        res["bytes_per_patch_measured"] = ex.bytes_per_patch
        spent, waited = timed_extractor(ex), timed_decoding()
        export = make_export(tmp / "export", studies)
        base = RunConfig(input=export, output=tmp / "warm", resume=False, precision=Precision(precision))
        if not exports:
            base = replace(base, export_sr=False, export_seg=False, export_qc=False)
        one_run(replace(base, prefetch=False), ex, spent, waited)  # warm-up: caches, first forward
        for rep in range(reps):
            for key in ("off", "on") if rep % 2 == 0 else ("on", "off"):
                r = one_run(replace(base, output=tmp / f"{key}_{rep}", prefetch=key == "on"), ex, spent, waited)
                runs[key].append(r)
                print(f"rep {rep} prefetch {key}: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s cpu", flush=True)
        same = (tmp / "on_0" / "features.csv").read_bytes() == (tmp / "off_0" / "features.csv").read_bytes()
    for key, rs in runs.items():
        res[key] = {m: statistics.median(r[m] for r in rs) for m in rs[0]} | {"all": rs}
    res["speedup_wall"] = res["off"]["wall_s"] / res["on"]["wall_s"]  # type: ignore[index]
    res["features_identical"] = same
    res["load_average_end"] = os.getloadavg()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch-size", default="auto")
    ap.add_argument("--exports", action="store_true", help="write SR, SEG and QC too (default: tables only)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    bs = None if a.batch_size == "auto" else int(a.batch_size)
    res = compare(a.device, a.studies, a.reps, a.precision, bs, a.exports)
    name = "prefetch" if a.device == "cpu" else f"prefetch_{a.device.split(':')[0]}"
    out = a.out or ROOT / "benchmarks" / "out" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    short = {k: v for k, v in res.items() if k not in ("off", "on")}
    for k in ("off", "on"):
        short[k] = {m: v for m, v in res[k].items() if m != "all"}  # type: ignore[attr-defined]
    print(json.dumps(short, indent=1))


if __name__ == "__main__":
    main()
