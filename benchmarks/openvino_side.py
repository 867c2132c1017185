"""Side measurement (issue 18, point 2): the encoder under OpenVINO, in a separate virtual
environment that has ``openvino`` (never a dependency of the project).

Input: a folder written by ``encoder_proto.py --save-io DIR`` (patches ``x.npy``, eager
float32 features ``eager.npy``, the state dict ``sd.torch``). Prints set-up seconds,
patches/s of OpenVINO fp32 and of eager torch in the same process (interleaved rounds,
medians), and the max abs difference of OpenVINO's features to eager.

Run: ``nice -n 10 OV_VENV/bin/python benchmarks/openvino_side.py DIR``
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mhub_fmcib.model.network import FmcibResNet  # noqa: E402


def main() -> None:
    io = Path(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    x = np.load(io / "x.npy")
    ref = np.load(io / "eager.npy")
    model = FmcibResNet()
    model.load_state_dict(torch.load(io / "sd.torch", weights_only=True))
    model.eval()
    res: dict[str, object] = {"openvino": ov.__version__, "batch": int(x.shape[0])}
    t0 = time.perf_counter()
    ov_model = ov.convert_model(model, example_input=torch.from_numpy(x))
    core = ov.Core()
    compiled = {
        "ov_fp32": core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}),
    }
    res["setup_fp32_s"] = time.perf_counter() - t0
    try:
        compiled["ov_bf16"] = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    except RuntimeError as e:  # no bf16 on this CPU
        res["ov_bf16_error"] = str(e).splitlines()[0]
    times: dict[str, list[float]] = {k: [] for k in (*compiled, "eager")}
    feats: dict[str, np.ndarray] = {}
    for k, c in compiled.items():
        feats[k] = np.asarray(c(x)[0])
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        model(xt)
        for _ in range(rounds):
            for k, c in compiled.items():
                t = time.perf_counter()
                c(x)
                times[k].append(time.perf_counter() - t)
            t = time.perf_counter()
            model(xt)
            times["eager"].append(time.perf_counter() - t)
    eager = statistics.median(times["eager"])
    for k, ts in times.items():
        med = statistics.median(ts)
        entry: dict[str, float] = {"median_s": med, "patches_per_s": x.shape[0] / med, "speedup_vs_eager": eager / med}
        if k in feats:
            entry["max_abs_diff_vs_eager"] = float(np.abs(feats[k] - ref).max())
            entry["max_abs_diff_rel_scale"] = entry["max_abs_diff_vs_eager"] / float(np.abs(ref).max())
        res[k] = entry
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
