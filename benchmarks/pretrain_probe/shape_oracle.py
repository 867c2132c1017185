"""Check for the pre-training benchmark: is the shape label visible in the patches at all?

Hand-made shape features of each labelled lesion's 50³ inference patch (from the
benchmark's cache): threshold at −400 HU, the connected component at the centre, its
compactness (surface voxels / volume^(2/3)), the ratio of its largest inscribed radius
to its equivalent-sphere radius, and its volume; plus density only (patch and centre
means). Logistic regression on train + tune, test AUC for each feature set.

    PYTHONPATH=.:training .venv/bin/python benchmarks/pretrain_probe/shape_oracle.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
from mhub_fmcib_train.config import DataConfig
from mhub_fmcib_train.data.cache import build_cache
from mhub_fmcib_train.evaluation.metrics import auc_roc
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

REPO = Path(__file__).resolve().parents[2]
THRESHOLD = (-400.0 + 1024.0) / 3072.0  # normalised units


def shape_features(patch: npt.NDArray[np.float32]) -> list[float]:
    m = patch > THRESHOLD
    lab, _ = ndimage.label(m)
    c = lab[25, 25, 25]
    if c == 0:  # centre below threshold: the component nearest the centre
        idx = np.argwhere(lab > 0)
        if idx.size == 0:
            return [0.0, 0.0, 0.0]
        c = lab[tuple(idx[np.argmin(((idx - 25) ** 2).sum(1))])]
    comp = lab == c
    vol = float(comp.sum())
    surface = float((comp & ~ndimage.binary_erosion(comp)).sum())
    inscribed = float(ndimage.distance_transform_edt(comp).max())
    r_eq = (3 * vol / (4 * np.pi)) ** (1 / 3)
    return [surface / vol ** (2 / 3), inscribed / r_eq, vol]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/out/pretrain_probe")
    a = ap.parse_args()
    data = DataConfig(seeds_csv=a.out / "cohort_labelled" / "seeds.csv", cache_dir=a.out / "cache",
                      label_column="malignant")  # fmt: skip
    cache = build_cache(data)
    rows = {s: [r.index for r in cache.table.select(s)] for s in ("train", "tune", "test")}  # type: ignore[arg-type]
    feats: dict[str, list[list[float]]] = {}
    for s, rs in rows.items():
        out = []
        for i in rs:
            p = cache.centre_patch(np.asarray(cache.lesions[i]))
            out.append([*shape_features(p), float(p.mean()), float(p[19:31, 19:31, 19:31].mean())])
        feats[s] = out
    y = {s: np.array([int(cache.table.records[i].get("malignant")) for i in rs]) for s, rs in rows.items()}
    result = {}
    for name, cols in (("shape (compactness, inscribed/equivalent radius, volume)", [0, 1, 2]),
                       ("compactness only", [0]), ("volume only", [2]), ("density only", [3, 4])):  # fmt: skip
        x_tr = np.array(feats["train"] + feats["tune"])[:, cols]
        x_te = np.array(feats["test"])[:, cols]
        sc = StandardScaler().fit(x_tr)
        model = LogisticRegression(max_iter=1000).fit(sc.transform(x_tr), np.r_[y["train"], y["tune"]])
        result[name] = auc_roc(y["test"], model.predict_proba(sc.transform(x_te))[:, 1])
        print(f"{name}: test AUC {result[name]:.3f}")
    result["n_test"] = len(rows["test"])
    (a.out / "shape_oracle.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
