"""Prototype (issue 18, points 2-4): encoder execution paths side by side in one process,
interleaved rounds, medians; exactness against eager float32 on real CT patches; bf16
deviation; batch-composition dependence.

Run: ``nice -n 10 .venv/bin/python benchmarks/encoder_proto.py --paths eager,traced,compile,bf16``
Writes ``benchmarks/out/encoder_proto.json``; with ``--save-io DIR`` also the patches and
eager features (for the OpenVINO side run, benchmarks/openvino_side.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mhub_fmcib.image_io import read_image  # noqa: E402
from mhub_fmcib.model.fused import FusedEncoder  # noqa: E402
from mhub_fmcib.model.network import FmcibResNet  # noqa: E402
from mhub_fmcib.model.weights import load_state_dict_file, write_random_weights  # noqa: E402
from mhub_fmcib.patch import extract_patch  # noqa: E402
from mhub_fmcib.records import SeedPoint  # noqa: E402

GFLOP_PER_PATCH = 25.7


def real_patches(n: int) -> np.ndarray:
    """n patches of the sample CT around seeds spread over the lung volume: (n, 1, 50, 50, 50)."""
    vol = read_image(ROOT / "sample_data" / "nrrd" / "lung1_image.nrrd")
    rng = np.random.default_rng(0)
    shape = np.array(vol.shape)
    out = []
    for _ in range(n):
        idx = rng.uniform(0.25, 0.75, 3) * (shape - 1)
        out.append(extract_patch(vol, SeedPoint(*vol.index_to_lps(idx))).array)
    return np.stack(out)[:, None].astype(np.float32)


def matmul_gflops(n: int = 4096) -> tuple[float, float]:
    """float32 matmul rate: (GFLOP per wall second, GFLOP per CPU second of this process),
    the best of 3."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    runs = [_timed(lambda: a @ b) for _ in range(3)]
    return 2 * n**3 / min(r[0] for r in runs) / 1e9, 2 * n**3 / min(r[1] for r in runs) / 1e9


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: all its threads, user + system)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paths", default="eager,traced,compile,bf16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--save-io", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "encoder_proto.json")
    a = ap.parse_args()
    paths = a.paths.split(",")
    bs = a.batch
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        w = a.weights or write_random_weights(Path(tmp) / "w.torch")
        sd = load_state_dict_file(w)
    model = FmcibResNet()
    model.load_state_dict(sd)
    model.eval()
    del sd
    x = torch.from_numpy(real_patches(bs))
    runners: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    setup: dict[str, float] = {}
    inf = torch.inference_mode
    runners["eager"] = lambda t: model(t)
    if "traced" in paths:
        t0 = time.perf_counter()
        with warnings.catch_warnings(), inf():
            warnings.simplefilter("ignore")
            traced = torch.jit.optimize_for_inference(torch.jit.trace(model, x, check_trace=False))
            traced(x)
            traced(x)
        setup["traced"] = time.perf_counter() - t0
        runners["traced"] = lambda t: traced(t)
    if "fused" in paths:  # the product's CPU default (--cpu-encoder fused)
        t0 = time.perf_counter()
        fused = FusedEncoder(model, bs)
        setup["fused"] = time.perf_counter() - t0
        runners["fused"] = lambda t: fused(t)
    if "compile" in paths:
        t0 = time.perf_counter()
        compiled = torch.compile(model, dynamic=False)
        with inf():
            compiled(x)
        setup["compile"] = time.perf_counter() - t0
        runners["compile"] = lambda t: compiled(t)
    if "bf16" in paths:

        def bf16(t: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(t).float()

        runners["bf16"] = bf16
    if "cl3d" in paths:
        model_cl = FmcibResNet()
        model_cl.load_state_dict(model.state_dict())
        model_cl = model_cl.eval().to(memory_format=torch.channels_last_3d)
        runners["cl3d"] = lambda t: model_cl(t.contiguous(memory_format=torch.channels_last_3d))
    feats: dict[str, np.ndarray] = {}
    times: dict[str, list[float]] = {k: [] for k in runners}
    cpu_times: dict[str, list[float]] = {k: [] for k in runners}
    mm: list[float] = []
    mm_cpu: list[float] = []
    load = [os.getloadavg()[0]]
    with inf():
        for k, f in runners.items():  # warm-up
            feats[k] = f(x).numpy().copy()
        for _ in range(a.rounds):
            for k, f in runners.items():
                wall, cpu = _timed(lambda f=f: f(x))  # type: ignore[misc]
                times[k].append(wall)
                cpu_times[k].append(cpu)
            rate, rate_cpu = matmul_gflops()
            mm.append(rate)
            mm_cpu.append(rate_cpu)
            load.append(os.getloadavg()[0])
    ref = feats["eager"]
    scale = float(np.abs(ref).max())
    res: dict[str, object] = {
        "batch": bs,
        "feature_scale_max_abs": scale,
        "matmul_fp32_gflops_median": statistics.median(mm),
        "matmul_fp32_gflop_per_cpu_s_median": statistics.median(mm_cpu),
        "threads": torch.get_num_threads(),
        "load_1min": load,
        "lscpu_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    eager_t = statistics.median(times["eager"])
    for k in runners:
        t = statistics.median(times[k])
        tc = statistics.median(cpu_times[k])
        d = np.abs(feats[k] - ref)
        cos = float(np.min((feats[k] * ref).sum(1) / np.linalg.norm(feats[k], axis=1) / np.linalg.norm(ref, axis=1)))
        res[k] = {
            "median_s": t,
            "patches_per_s": bs / t,
            "speedup_vs_eager": eager_t / t,
            "fraction_of_matmul": bs * GFLOP_PER_PATCH / t / statistics.median(mm),
            "median_cpu_s": tc,
            "gflop_per_cpu_s": bs * GFLOP_PER_PATCH / tc,
            "fraction_of_matmul_cpu_s": bs * GFLOP_PER_PATCH / tc / statistics.median(mm_cpu),
            "max_abs_diff_vs_eager": float(d.max()),
            "max_abs_diff_rel_scale": float(d.max()) / scale,
            "min_cosine_vs_eager": cos,
            "setup_s": setup.get(k, 0.0),
            "all_times": times[k],
            "all_cpu_times": cpu_times[k],
        }
    # batch composition: lesion 0 alone (batch 1), first in its batch, last in a batch of others
    with inf():
        f_alone = model(x[:1]).numpy()
        others = torch.from_numpy(real_patches(2 * bs)[bs:])
        mixed = torch.cat([others[: bs - 1], x[:1]])
        f_last = model(mixed).numpy()[-1:]
        f_first = ref[:1]
        mixed2 = torch.cat([x[:1], others[bs - 1 : 2 * bs - 2]])
        f_first_other = model(mixed2).numpy()[:1]
        bs4 = model(x[:4]).numpy()[:1]
    res["batch_dependence"] = {
        "batch1_vs_batch8_first": float(np.abs(f_alone - f_first).max()),
        "batch4_vs_batch8_first": float(np.abs(bs4 - f_first).max()),
        "batch8_last_vs_batch8_first": float(np.abs(f_last - f_first).max()),
        "batch8_first_other_companions": float(np.abs(f_first_other - f_first).max()),
    }
    if a.save_io:
        a.save_io.mkdir(parents=True, exist_ok=True)
        np.save(a.save_io / "x.npy", x.numpy())
        np.save(a.save_io / "eager.npy", ref)
        torch.save(model.state_dict(), a.save_io / "sd.torch")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
