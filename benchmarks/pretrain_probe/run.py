"""Benchmark: linear probe on a pre-trained small encoder vs the same encoder randomly
initialised, at 100 % and 10 % of the training labels, on the synthetic cohort.

    PYTHONPATH=.:training .venv/bin/python benchmarks/pretrain_probe/run.py [--scans 48 --steps 200]

Writes benchmarks/out/pretrain_probe/results.json and prints a table: test AUC of the
``malignant`` label with 95 % bootstrap CIs (2,000 resamples by default).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from mhub_fmcib_train.config import DataConfig, EncoderConfig, PretrainConfig, ProbeConfig, SyntheticConfig
from mhub_fmcib_train.pretrain import run_pretrain
from mhub_fmcib_train.probe import run_probe
from mhub_fmcib_train.synthetic import generate_cohort
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[2]


def bootstrap_auc(y: np.ndarray, p: np.ndarray, n: int, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        if len(np.unique(y[i])) == 2:
            stats.append(roc_auc_score(y[i], p[i]))
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scans", type=int, default=48)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/out/pretrain_probe")
    a = ap.parse_args()
    out = a.out
    t0 = time.time()
    cohort = generate_cohort(SyntheticConfig(output_dir=out / "cohort", n_scans=a.scans, seed=11))
    data = DataConfig(seeds_csv=cohort.seeds_csv, cache_dir=out / "cache", label_column="malignant")
    enc = EncoderConfig(widen_factor=a.width, layers=(1, 1, 1, 1))
    pre = PretrainConfig(
        data=data,
        output_dir=out / "pretrain",
        encoder=enc,
        batch_size=16,
        max_steps=a.steps,
        warmup_steps=max(1, a.steps // 10),
        lr=0.1,
        trust_coefficient=0.02,
        projection_hidden=256,
        projection_dim=64,
        checkpoint_every=a.steps,
        device="cpu",
    )
    res = run_pretrain(pre)
    t_pre = time.time() - t0
    rows = []
    for init in ("pretrained", "random"):
        for fraction in (1.0, 0.1):
            cfg = ProbeConfig(
                data=dataclasses.replace(data, fraction=fraction),
                output_dir=out / f"probe_{init}_{fraction}",
                weights=res.encoder_path if init == "pretrained" else None,
                random_init=init == "random",
                encoder=enc,
                n_trials=a.trials,
                device="cpu",
            )
            torch.manual_seed(0)
            r = run_probe(cfg)
            lo, hi = bootstrap_auc(r.test_targets, r.test_probabilities, a.bootstrap)
            rows.append(
                {
                    "encoder": init,
                    "fraction": fraction,
                    "test_auc": r.test_metric,
                    "ci95": [lo, hi],
                    "tune_auc": r.tune_metric,
                    "C": r.best_c,
                }
            )
            print(f"{init:10s} {fraction:4.0%}  test AUC {r.test_metric:.3f} [{lo:.3f}, {hi:.3f}]  C={r.best_c:.3g}")
    result = {
        "rows": rows,
        "pretrain": {
            "first_loss": res.first_loss,
            "last_loss": res.last_loss,
            "steps": res.end_step,
            "seconds": round(t_pre, 1),
            "data_fraction": res.data_fraction,
        },
        "args": {k: str(v) for k, v in vars(a).items()},
        "n_lesions": len(cohort.lesions),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "seconds": round(time.time() - t0, 1),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
