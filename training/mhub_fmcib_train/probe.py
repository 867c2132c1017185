"""Linear probe: StandardScaler + logistic regression on the encoder features, C by optuna.

Features are computed once per split from the cached cubes' central 50³ (the inference
patch). Optuna (TPE, seeded) searches C log-uniformly in ``c_range``, fitting on train and
scoring on tune (AUC for binary tasks, balanced accuracy otherwise); the final model is
refitted on train with the best C and written as a head file that ``mhub_fmcib.model.heads``
applies.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import optuna
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from mhub_fmcib.model.device import resolve_device
from mhub_fmcib.model.heads import LinearHead
from mhub_fmcib.model.weights_file import sha256_file

from .config import ProbeConfig, to_toml
from .data.cache import build_cache
from .features import extract_features
from .labels import TaskLabels
from .models import build_encoder, load_trunk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeResult:
    """Best C, tune/test metric (``metric_name``), the head file and test probabilities."""

    best_c: float
    metric_name: str
    tune_metric: float
    test_metric: float
    head_path: Path
    test_probabilities: npt.NDArray[np.float64]
    test_targets: npt.NDArray[np.int64]


def score(task: str, y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64]) -> float:
    """AUC (binary, ``proba`` (N,) of class 1) or balanced accuracy (``proba`` (N, C))."""
    if task == "binary":
        return float(roc_auc_score(y, proba)) if len(np.unique(y)) == 2 else float("nan")
    return float(balanced_accuracy_score(y, np.argmax(proba, axis=1)))


def _proba(model: LogisticRegression, x: npt.NDArray[np.float64], task: str) -> npt.NDArray[np.float64]:
    p: npt.NDArray[np.float64] = model.predict_proba(x)
    return p[:, 1] if task == "binary" else p


def fit_probe(
    x_train: npt.NDArray[np.float32], y_train: npt.NDArray[np.int64],
    x_tune: npt.NDArray[np.float32], y_tune: npt.NDArray[np.int64],
    task: str, n_trials: int, c_range: tuple[float, float], seed: int, max_iter: int = 1000,
) -> tuple[StandardScaler, LogisticRegression, float, float]:  # fmt: skip
    """Optuna search of C; returns (scaler, model refitted on train, best C, tune score)."""
    scaler = StandardScaler().fit(x_train)
    xt, xv = scaler.transform(x_train), scaler.transform(x_tune)

    def objective(trial: optuna.Trial) -> float:
        c = trial.suggest_float("C", c_range[0], c_range[1], log=True)
        m = LogisticRegression(C=c, max_iter=max_iter).fit(xt, y_train)
        s = score(task, y_tune, _proba(m, xv, task))
        return s if np.isfinite(s) else 0.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    best_c = float(study.best_params["C"])
    model = LogisticRegression(C=best_c, max_iter=max_iter).fit(xt, y_train)
    return scaler, model, best_c, float(study.best_value)


def run_probe(cfg: ProbeConfig) -> ProbeResult:
    """Fit and write the head; also ``probe_metrics.json`` and ``test_predictions.csv``."""
    device = resolve_device(cfg.device)
    cache = build_cache(cfg.data)
    if cfg.random_init:
        torch.manual_seed(cfg.seed)
        encoder, enc_cfg, sha = build_encoder(cfg.encoder), cfg.encoder, ""
    else:
        weights_path = cfg.weights
        if weights_path is None:  # guarded by ProbeConfig
            raise ValueError("weights missing")
        encoder, enc_cfg = load_trunk(weights_path)
        sha = sha256_file(weights_path)
    recs = {s: cache.table.select(s, cfg.data.fraction, cfg.data.fraction_seed) for s in ("train", "tune", "test")}
    labels = TaskLabels.from_records(recs["train"], cfg.data.label_column, cfg.task)
    feats = {s: extract_features(encoder, cache, [r.index for r in recs[s]], device, cfg.batch_size) for s in recs}
    ys = {s: np.asarray(labels.encode(recs[s]), np.int64) for s in recs}
    scaler, model, best_c, tune_metric = fit_probe(
        feats["train"],
        ys["train"],
        feats["tune"],
        ys["tune"],
        cfg.task,
        cfg.n_trials,
        cfg.c_range,
        cfg.seed,
        cfg.max_iter,
    )
    test_p = _proba(model, scaler.transform(feats["test"]), cfg.task)
    metric = "auc" if cfg.task == "binary" else "balanced_accuracy"
    test_metric = score(cfg.task, ys["test"], test_p)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_feat = feats["train"].shape[1]
    head = LinearHead(
        name=cfg.head_name or f"{cfg.data.label_column}_probe",
        task=cfg.task,
        class_names=labels.class_names,
        feature_names=tuple(f"fmcib_{i:04d}" for i in range(n_feat)),
        mean=np.asarray(scaler.mean_, np.float64),
        scale=np.asarray(scaler.scale_, np.float64),
        coef=np.asarray(model.coef_, np.float64),
        intercept=np.asarray(model.intercept_, np.float64),
        weights_sha256=sha,
    )
    head_path = out / "head.json"
    d = head.to_dict()
    d.update({"C": best_c, "tune_" + metric: tune_metric, "test_" + metric: test_metric,
              "encoder": {"widen_factor": enc_cfg.widen_factor, "layers": list(enc_cfg.layers)},
              "fraction": cfg.data.fraction, "n_train": len(recs["train"])})  # fmt: skip
    head_path.write_text(json.dumps(d))
    (out / "config.toml").write_text(to_toml(cfg))
    (out / "probe_metrics.json").write_text(json.dumps(
        {"C": best_c, "metric": metric, "tune": tune_metric, "test": test_metric,
         "n": {s: len(recs[s]) for s in recs}}, indent=2))  # fmt: skip
    with open(out / "test_predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        cols = ["p_" + labels.class_names[1]] if cfg.task == "binary" else ["p_" + c for c in labels.class_names]
        w.writerow(["lesion_id", "target", *cols])
        for r, y, p in zip(recs["test"], ys["test"], test_p, strict=True):
            w.writerow([r.lesion_id, labels.class_names[y], *np.atleast_1d(p).tolist()])
    return ProbeResult(best_c, metric, tune_metric, test_metric, head_path, np.asarray(test_p), ys["test"])
