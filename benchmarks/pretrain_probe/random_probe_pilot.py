"""Pilot: does a random-init narrow encoder's probe see the texture label at a lesion size?
And does the whole 50³ patch's gradient energy (a global average, as the encoder's pool)?

A 40-scan texture cohort (half train, half test scans), features of a random-init width-1/8
encoder (seed 0), StandardScaler + LogisticRegressionCV on train, test AUC. Minutes on
2 cores; for choosing the lesion size before a full run.

    PYTHONPATH=.:training .venv/bin/python benchmarks/pretrain_probe/random_probe_pilot.py 15 20 --seed 7
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from mhub_fmcib_train.config import DataConfig, EncoderConfig, SyntheticConfig
from mhub_fmcib_train.data.cache import build_cache
from mhub_fmcib_train.evaluation.metrics import auc_roc
from mhub_fmcib_train.features import extract_features
from mhub_fmcib_train.models import build_encoder
from mhub_fmcib_train.synthetic import generate_cohort
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import StandardScaler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("radius", type=float, nargs=2, help="lesion radius range, mm")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scans", type=int, default=40)
    ap.add_argument("--sigma", type=float, nargs=2, default=(0.5, 1.5), help="fine, coarse grain σ (voxels)")
    ap.add_argument("--texture-sd", type=float, default=60.0, help="texture SD, HU")
    ap.add_argument("--distractors", type=int, default=2)
    ap.add_argument("--noise", type=float, default=25.0, help="scan noise SD, HU")
    a = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="random_probe_pilot_"))
    try:
        c = generate_cohort(SyntheticConfig(output_dir=out / "c", n_scans=a.scans, shape=(96, 96, 96),
                                            spacing=(1.0, 1.0, 1.0), lesions_per_scan=(2, 4), classes="texture",
                                            split_ratios=(0.5, 0.0, 0.5), seed=a.seed,
                                            lesion_radius_mm=(a.radius[0], a.radius[1]),
                                            texture_sigma_voxels=(a.sigma[0], a.sigma[1]),
                                            texture_sd_hu=a.texture_sd, distractors=a.distractors,
                                            noise_hu=a.noise))  # fmt: skip
        cache = build_cache(DataConfig(seeds_csv=c.seeds_csv, cache_dir=out / "cache", label_column="malignant"))
        torch.manual_seed(0)
        enc = build_encoder(EncoderConfig(widen_factor=0.125, layers=(1, 1, 1, 1)))
        rows = list(range(len(cache.table.records)))
        x = np.asarray(extract_features(enc, cache, rows, torch.device("cpu"), 16))
        y = np.array([int(r.get("malignant")) for r in cache.table.records])
        split = np.array([r.split for r in cache.table.records])
        tr, te = split == "train", split == "test"
        sc = StandardScaler().fit(x[tr])
        m = LogisticRegressionCV(max_iter=2000).fit(sc.transform(x[tr]), y[tr])
        auc = auc_roc(y[te], m.predict_proba(sc.transform(x[te]))[:, 1])
        patches = np.stack([cache.centre_patch(np.asarray(p)) for p in cache.lesions]).astype(np.float64) * 3072.0
        energy = np.mean([np.mean(np.diff(patches, axis=k) ** 2, axis=(1, 2, 3)) for k in (1, 2, 3)], axis=0)
        ge = auc_roc(y, energy)
        print(
            f"whole-patch gradient energy AUC {ge:.3f} (separation {max(ge, 1 - ge):.3f}: what a global "
            "average pool of a local-texture feature could see)"
        )
        print(
            f"radius {a.radius} mm, sigma {a.sigma}, sd {a.texture_sd}, distractors {a.distractors}, "
            f"noise {a.noise}, seed {a.seed}: {tr.sum()} train / {te.sum()} test lesions, test AUC {auc:.3f}"
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
