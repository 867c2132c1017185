"""GPU benchmark (issue 18, point 6); run through ``benchmarks/gpu.sh`` on a CUDA machine.

1. Dense rates of this GPU: an 8192² matmul in float32 (TF32 off), bfloat16 and float16.
2. Encoder: patches/s for ``--precision fp32|bf16|fp16`` x memory format (NCDHW,
   channels-last-3d) x batch (32 and ``auto``: chosen by free memory and the measured
   activation memory per patch), each as a fraction of the matching dense rate (25.7
   GFLOP per patch), peak GPU memory, and the features' max abs deviation from fp32 on the
   same patches (and of fp32 on the GPU from fp32 on the CPU).
3. End to end: a 20-study export (``fmcib_testlib.export_builder.make_export``) through
   :func:`mhub_fmcib.pipeline.run` with SR, SEG and QC, ``--batch-size auto``, fp32 and
   bf16, prefetch off and on (``benchmarks/prefetch.py``): lesions/s, the share of wall time
   the GPU waits for decoding (``decode_wait_share``) and the share it is idle for any
   reason, exports included (``encoder_idle_share``).

Writes ``benchmarks/out/gpu.json``; prints one JSON document. About 3-6 minutes on one GPU.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "lib"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mhub_fmcib.config import Precision  # noqa: E402
from mhub_fmcib.model.extractor import FeatureExtractor  # noqa: E402
from mhub_fmcib.model.weights import read_weights, write_random_weights  # noqa: E402

GFLOP_PER_PATCH = 25.7
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def dense_rates(n: int = 8192) -> dict[str, float]:
    """TFLOP/s of an n x n matmul per dtype (float32 with TF32 off)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    out = {}
    for name, dt in DTYPES.items():
        a = torch.randn(n, n, device="cuda", dtype=dt)
        b = torch.randn(n, n, device="cuda", dtype=dt)
        a @ b
        torch.cuda.synchronize()
        times = []
        for _ in range(5):
            t = time.perf_counter()
            a @ b
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        out[name] = 2 * n**3 / min(times) / 1e12
    return out


def encoder_rates(weights_path: Path, dense: dict[str, float]) -> dict[str, object]:
    weights = read_weights(weights_path)
    rng = np.random.default_rng(0)
    x = rng.normal(0.2, 0.3, size=(64, 50, 50, 50)).astype(np.float32)
    cpu = FeatureExtractor(weights, device="cpu", batch_size=8).extract(x[:8])
    res: dict[str, object] = {}
    ref: np.ndarray | None = None
    for prec in ("fp32", "bf16", "fp16"):
        for cl in (False, True):
            for requested in (32, None):
                ex = FeatureExtractor(
                    weights, device="cuda", batch_size=requested, precision=Precision(prec), channels_last=cl
                )
                bs = ex.batch_size
                n = 4 * bs  # four chunks per call: the pinned double buffers overlap copy and compute
                if x.shape[0] < n:
                    x = np.concatenate([x] * (n // x.shape[0] + 1))[:n]
                f = ex.extract(x[:bs])
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    ex.extract(x[:n])  # includes host->device copies and the features' way back
                    times.append(time.perf_counter() - t)
                pps = n / statistics.median(times)
                key = f"{prec}_{'cl3d' if cl else 'ncdhw'}_b{'auto' if requested is None else bs}"
                entry: dict[str, float] = {
                    "patches_per_s": pps,
                    "tflop_per_s": pps * GFLOP_PER_PATCH / 1000,
                    "fraction_of_dense": pps * GFLOP_PER_PATCH / 1000 / dense[prec],
                    "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
                    "batch": bs,
                    "bytes_per_patch_measured": ex.bytes_per_patch or 0.0,
                }
                if prec == "fp32" and not cl and requested == 32:
                    ref = f[:8]
                    entry["max_abs_diff_vs_cpu_fp32"] = float(np.abs(f[:8] - cpu).max())
                if ref is not None:
                    entry["max_abs_diff_vs_gpu_fp32"] = float(np.abs(f[:8] - ref).max())
                entry["feature_scale"] = float(np.abs(cpu).max())
                res[key] = entry
                del ex
                torch.cuda.empty_cache()
    return res


def main() -> None:
    if not torch.cuda.is_available():
        print("gpu.py: no CUDA device on this machine; nothing measured")
        raise SystemExit(3)
    res: dict[str, object] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    res["dense_tflop_per_s"] = dense = dense_rates()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        w = write_random_weights(tmp / "model_weights.torch")
        res["encoder"] = encoder_rates(w, dense)
    from prefetch import compare  # benchmarks/prefetch.py, beside this file

    res["end_to_end_20_studies"] = {p: compare("cuda", 20, 1, p, None, exports=True) for p in ("fp32", "bf16")}
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
