"""Benchmark: does contrastive pre-training help a narrow encoder on a shape-only label?

    nice -n 19 env PYTHONPATH=.:training .venv/bin/python benchmarks/pretrain_probe/run.py [--tiny]

Design (see README.md next to this file):

* Two synthetic cohorts from different seeds (so disjoint scans): a **pre-training
  cohort** (no labels used) and a **labelled cohort** split by scan into train / tune /
  test. Lesions are ``round`` or ``lobulated`` with matched volume, density and texture
  (``SyntheticConfig(classes="shape")``): only the shape carries the label. A density-only
  logistic regression is reported as a check that density gives nothing away.
* A narrow encoder (width 1/8, one block per stage, 256 features) pre-trained twice with
  the same steps, optimiser and augmentations: the authors' background-only InfoNCE and our
  NT-Xent + background (the loss ablation). The step count is sized from a measured step so
  that the run fits its wall-time budget on a shared 2-core machine.
* Linear probe (StandardScaler + logistic regression, optuna over C) on the frozen features
  and fine-tuning (all layers) at 100 / 50 / 20 / 10 % of train and tune, ``--draws``
  subset draws each (the same draws for every arm), the whole test set always.
* Per fraction: test AUC mean ± SD over draws, and a paired permutation test of the mean
  AUC difference over draws (each test lesion's two predictions swapped with probability
  1/2, the same swap in every draw; two-sided, (count + 1) / (n + 1)).

Writes ``--out`` (default ``benchmarks/out/pretrain_probe``) ``/results.json``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from mhub_fmcib_train.config import (
    DataConfig,
    EncoderConfig,
    FinetuneConfig,
    PretrainConfig,
    SyntheticConfig,
)
from mhub_fmcib_train.data.cache import PatchCache, build_cache
from mhub_fmcib_train.evaluation.metrics import auc_roc
from mhub_fmcib_train.features import extract_features
from mhub_fmcib_train.finetune import run_finetune
from mhub_fmcib_train.models import build_encoder, load_trunk
from mhub_fmcib_train.pretrain import run_pretrain
from mhub_fmcib_train.probe import fit_probe
from mhub_fmcib_train.synthetic import generate_cohort
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

REPO = Path(__file__).resolve().parents[2]
FRACTIONS = (1.0, 0.5, 0.2, 0.1)
Array = npt.NDArray[np.float64]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a minutes-long smoke version (numbers meaningless)")
    ap.add_argument("--classes", choices=("texture", "shape"), default="texture", help="which label (SyntheticConfig)")
    ap.add_argument("--radius", type=float, nargs=2, default=(5.0, 9.0), help="lesion radius range, mm")
    ap.add_argument("--sigma", type=float, nargs=2, default=(0.5, 1.5), help="texture: fine, coarse grain σ, voxels")
    ap.add_argument("--texture-sd", type=float, default=60.0, help="texture: SD in both classes, HU")
    ap.add_argument("--distractors", type=int, default=2, help="texture: unlabelled nodules per scan")
    ap.add_argument("--noise", type=float, default=25.0, help="scan noise SD, HU")
    ap.add_argument(
        "--pilot",
        action="store_true",
        help="only the label checks, the random-init probe and one random-init fine-tuning at 100 %%: "
        "can the label be learnt at this compute?",
    )
    ap.add_argument("--pretrain-scans", type=int, default=80)
    ap.add_argument("--labelled-scans", type=int, nargs=3, default=(25, 12, 110), metavar=("TRAIN", "TUNE", "TEST"))
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--batch", type=int, default=16, help="lesions per pre-training step")
    ap.add_argument("--pretrain-minutes", type=float, default=10.0, help="wall-time budget per pre-training run")
    ap.add_argument("--max-steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--trust", type=float, default=0.02)
    ap.add_argument("--finetune-minutes", type=float, default=16.0, help="wall-time budget of all fine-tuning")
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--finetune-lr", type=float, default=0.003125, help="fine-tuning SGD lr (the authors' 0.003125)")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--stop-minutes", type=float, default=55.0, help="start no fine-tuning fraction after this")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/out/pretrain_probe")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="complete an interrupted run: keep its cohorts, caches, calibration, pre-trained "
        "encoders and finished fine-tuning runs (their best.pt is re-scored on test)",
    )
    ap.add_argument("--finetune-epochs", type=int, default=0, help="fix the fine-tuning epochs (0: from the budget)")
    a = ap.parse_args()
    if a.tiny:
        a.pretrain_scans, a.labelled_scans, a.batch = 8, (6, 4, 6), 4
        a.pretrain_minutes, a.max_steps, a.finetune_minutes, a.max_epochs = 0.3, 3, 0.5, 1
        a.draws, a.trials, a.permutations = 2, 3, 50
    return a


def make_cohorts(a: argparse.Namespace) -> tuple[DataConfig, DataConfig]:
    """The pre-training cohort (all ``train``) and the labelled cohort (train/tune/test)."""
    geometry: dict[str, Any] = {"shape": (96, 96, 96), "spacing": (1.0, 1.0, 1.0), "lesions_per_scan": (2, 4),
                                "classes": a.classes, "lesion_radius_mm": tuple(a.radius), "noise_hu": a.noise,
                                "texture_sigma_voxels": tuple(a.sigma), "texture_sd_hu": a.texture_sd,
                                "distractors": a.distractors}  # fmt: skip
    if a.classes == "shape":
        geometry.update(shape=(96, 96, 40), spacing=(1.0, 1.0, 2.0))
    if a.reuse and (a.out / "cohort_pretrain/seeds.csv").is_file() and (a.out / "cohort_labelled/seeds.csv").is_file():
        return (DataConfig(seeds_csv=a.out / "cohort_pretrain/seeds.csv", cache_dir=a.out / "cache",
                           label_column="malignant"),
                DataConfig(seeds_csv=a.out / "cohort_labelled/seeds.csv", cache_dir=a.out / "cache",
                           label_column="malignant"))  # fmt: skip
    pre = generate_cohort(SyntheticConfig(output_dir=a.out / "cohort_pretrain", n_scans=a.pretrain_scans,
                                          split_ratios=(1.0, 0.0, 0.0), seed=101, **geometry))  # fmt: skip
    n = sum(a.labelled_scans)
    ratios = (a.labelled_scans[0] / n, a.labelled_scans[1] / n, a.labelled_scans[2] / n)
    lab = generate_cohort(SyntheticConfig(output_dir=a.out / "cohort_labelled", n_scans=n, split_ratios=ratios,
                                          seed=202, **geometry))  # fmt: skip
    pre_data = DataConfig(seeds_csv=pre.seeds_csv, cache_dir=a.out / "cache", label_column="malignant")
    lab_data = DataConfig(seeds_csv=lab.seeds_csv, cache_dir=a.out / "cache", label_column="malignant")
    return pre_data, lab_data


def pretrain_config(a: argparse.Namespace, data: DataConfig, loss: str, steps: int, out: Path) -> PretrainConfig:
    """The recipe of both pre-training runs; only ``loss`` differs (``ntxent+background``
    gets two background views per lesion, so both see 4 views per lesion)."""
    return PretrainConfig(
        data=data, output_dir=out, encoder=EncoderConfig(widen_factor=a.width, layers=(1, 1, 1, 1)),
        loss=loss,  # type: ignore[arg-type]
        background_per_lesion=2, batch_size=a.batch, max_steps=steps, warmup_steps=max(1, steps // 10),
        lr=a.lr, trust_coefficient=a.trust, projection_hidden=128, projection_dim=64,
        checkpoint_every=max(steps, 1), device="cpu",
    )  # fmt: skip


def seconds_per_step(log_csv: Path) -> float:
    """Mean data + compute seconds of the logged steps after the first two (warm-up)."""
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    t = [float(r["data_s"]) + float(r["compute_s"]) for r in rows[2:]] or [float(rows[-1]["compute_s"])]
    return float(np.mean(t))


def features_of(encoder: torch.nn.Module, cache: PatchCache, split_rows: dict[str, list[int]]) -> dict[str, Any]:
    return {s: extract_features(encoder, cache, rows, torch.device("cpu"), 16) for s, rows in split_rows.items()}


def draw_seed(cache: PatchCache, fraction: float, draw: int) -> int:
    """Subset seed of draw ``draw``: ``draw``, or ``draw + 1000 k`` for the first k whose
    training subset holds both classes (a one-class subset cannot be fitted)."""
    for k in range(100):
        seed = draw + 1000 * k
        y = {r.get("malignant") for r in cache.table.select("train", fraction, seed)}
        if len(y) == 2:
            return seed
    raise ValueError(f"no two-class training subset at fraction {fraction}")


def subset_rows(cache: PatchCache, fraction: float, draw: int) -> dict[str, list[int]]:
    seed = draw_seed(cache, fraction, draw)
    return {s: [r.index for r in cache.table.select(s, fraction, seed)] for s in ("train", "tune", "test")}  # type: ignore[arg-type]


def labels_of(cache: PatchCache, rows: Sequence[int]) -> npt.NDArray[np.int64]:
    return np.array([int(cache.table.records[i].get("malignant")) for i in rows], dtype=np.int64)


def probe_arm(a: argparse.Namespace, cache: PatchCache, feats_all: npt.NDArray[np.float32]) -> dict[str, Any]:
    """Probe at every fraction and draw on precomputed features (row = cache row)."""
    out: dict[str, Any] = {}
    for f in FRACTIONS:
        runs = []
        for d in range(a.draws):
            rows = subset_rows(cache, f, d)
            x = {s: feats_all[rows[s]] for s in rows}
            y = {s: labels_of(cache, rows[s]) for s in rows}
            scaler, model, c, tune = fit_probe(x["train"], y["train"], x["tune"], y["tune"], "binary",
                                               a.trials, (1e-6, 1e3), d)  # fmt: skip
            p = model.predict_proba(scaler.transform(x["test"]))[:, 1]
            runs.append({"draw": d, "C": c, "tune_auc": tune, "test_auc": auc_roc(y["test"], p),
                         "n_train": len(rows["train"]), "n_tune": len(rows["tune"]), "p": p.tolist()})  # fmt: skip
        out[str(f)] = runs
    return out


def finetune_arm(a: argparse.Namespace, data: DataConfig, cache: PatchCache, init: str, weights: Path | None,
                 epochs: int, root: Path, fractions: Sequence[float] = FRACTIONS) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    enc = EncoderConfig(widen_factor=a.width, layers=(1, 1, 1, 1))
    for f in fractions:
        runs = []
        for d in range(a.draws):
            cfg = FinetuneConfig(
                data=dataclasses.replace(data, fraction=f, fraction_seed=draw_seed(cache, f, d)),
                output_dir=root / f"{init}_{f}_{d}",
                init=init, weights=weights, encoder=enc, epochs=epochs, lr=a.finetune_lr,  # type: ignore[arg-type]
                step_size=max(1, round(epochs * 0.3)), device="cpu", seed=d,
            )  # fmt: skip
            t0 = time.perf_counter()
            if a.reuse and (cfg.output_dir / "metrics.json").is_file():
                runs.append(rescore(cfg, d))
                continue
            r = run_finetune(cfg)
            print(
                f"finetune {root.name}/{init} {f} draw {d}: test AUC {r.test_metric:.3f} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            runs.append({"draw": d, "best_epoch": r.best_epoch, "tune_auc": r.best_tune_metric,
                         "test_auc": r.test_metric, "seconds": round(time.perf_counter() - t0, 1),
                         "p": r.test_probabilities.tolist()})  # fmt: skip
        out[str(f)] = runs
    return out


def rescore(cfg: FinetuneConfig, draw: int) -> dict[str, Any]:
    """A finished fine-tuning run of an interrupted benchmark: its best.pt scored on test."""
    from mhub_fmcib_train.data.datasets import LabelledDataset
    from mhub_fmcib_train.finetune import EVAL_BATCH, FinetuneModel, _predict
    from mhub_fmcib_train.models import ClassifierHead
    from torch.utils.data import DataLoader

    metrics = json.loads((cfg.output_dir / "metrics.json").read_text())
    state = torch.load(cfg.output_dir / "best.pt", map_location="cpu", weights_only=True)
    enc = EncoderConfig(widen_factor=state["encoder"]["widen_factor"], layers=tuple(state["encoder"]["layers"]))
    model = FinetuneModel(build_encoder(enc), ClassifierHead(enc.n_features, (enc.n_features // 2,), 1))
    model.trunk.load_state_dict(state["trunk_state_dict"])
    model.head.load_state_dict(state["head_state_dict"])
    cache = build_cache(cfg.data)
    test = [r.index for r in cache.table.select("test")]
    ds = LabelledDataset(cache, test, [0.0] * len(test), None, 0, True)
    p = _predict(model, DataLoader(ds, batch_sampler=[[(0, i) for i in range(len(test))][k : k + EVAL_BATCH]
                                                      for k in range(0, len(test), EVAL_BATCH)]),
                 torch.device("cpu"), True)  # fmt: skip
    y = labels_of(cache, test)
    if abs(auc_roc(y, p) - metrics["test"]) > 1e-4:
        raise RuntimeError(f"{cfg.output_dir}: re-scored test AUC {auc_roc(y, p)} != recorded {metrics['test']}")
    return {"draw": draw, "best_epoch": metrics["best_epoch"], "tune_auc": metrics["tune"],
            "test_auc": metrics["test"], "seconds": None, "p": p.tolist(), "reused": True}  # fmt: skip


def paired_permutation_over_draws(
    y: npt.NDArray[np.int64], pa: Array, pb: Array, n_perm: int, seed: int = 0
) -> dict[str, float]:
    """``pa``, ``pb``: (draws, n) test predictions of two arms on the same test lesions.
    Statistic: mean over draws of AUC(a) − AUC(b). Null: each lesion's two predictions are
    swapped with probability 1/2 (the same swap in every draw). Two-sided p."""

    def stat(a_: Array, b_: Array) -> float:
        return float(np.mean([auc_roc(y, a_[k]) - auc_roc(y, b_[k]) for k in range(a_.shape[0])]))

    observed = stat(pa, pb)
    rng = np.random.default_rng(seed)
    null = np.empty(n_perm)
    for i in range(n_perm):
        m = rng.random(y.size) < 0.5
        null[i] = stat(np.where(m, pb, pa), np.where(m, pa, pb))
    p = (np.sum(np.abs(null) >= abs(observed) - 1e-12) + 1) / (n_perm + 1)
    return {"mean_auc_difference": observed, "p_value": float(p), "n_permutations": n_perm}


def summarise(arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: {f: {"mean": float(np.mean([r["test_auc"] for r in runs])),
                       "sd": float(np.std([r["test_auc"] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
                       "n_train": runs[0].get("n_train")}
                   for f, runs in arm.items()} for name, arm in arms.items()}  # fmt: skip


def comparisons(y: npt.NDArray[np.int64], arms: dict[str, dict[str, Any]], pairs: list[tuple[str, str]],
                n_perm: int) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    for a_name, b_name in pairs:
        for f in arms[a_name]:
            pa = np.array([r["p"] for r in arms[a_name][f]])
            pb = np.array([r["p"] for r in arms[b_name][f]])
            out[f"{a_name} vs {b_name} @ {f}"] = paired_permutation_over_draws(y, pa, pb, n_perm)
    return out


def density_baseline(cache: PatchCache, rows: dict[str, list[int]]) -> dict[str, float]:
    """Logistic regression on density only: mean of the 50³ patch, of its central 12³, and
    the lesion's generated mean HU. Test AUC near 0.5 means density carries no label."""

    def feats(rs: list[int]) -> Array:
        out = []
        for i in rs:
            p = cache.centre_patch(np.asarray(cache.lesions[i]))
            c = p[19:31, 19:31, 19:31]
            out.append([p.mean(), c.mean(), float(cache.table.records[i].get("mean_hu"))])
        return np.array(out)

    x_tr, x_te = feats(rows["train"] + rows["tune"]), feats(rows["test"])
    y_tr, y_te = labels_of(cache, rows["train"] + rows["tune"]), labels_of(cache, rows["test"])
    sc = StandardScaler().fit(x_tr)
    m = LogisticRegression(max_iter=1000).fit(sc.transform(x_tr), y_tr)
    return {"test_auc": auc_roc(y_te, m.predict_proba(sc.transform(x_te))[:, 1]), "features": 3}


def texture_oracle(cache: PatchCache, rows: dict[str, list[int]]) -> dict[str, float]:
    """Hand-made features of the central 5³ voxels (inside every lesion): gradient energy
    (mean squared difference of neighbours), voxel SD and mean. Logistic regression on
    train + tune, test AUC per feature set: the label is visible if gradient energy
    separates, and density-free if the mean does not."""

    def feats(rs: list[int]) -> Array:
        out = []
        for i in rs:
            c = cache.centre_patch(np.asarray(cache.lesions[i]))[23:28, 23:28, 23:28].astype(np.float64) * 3072.0
            g = float(np.mean([np.mean(np.diff(c, axis=k) ** 2) for k in range(3)]))
            out.append([g, c.std(), c.mean()])
        return np.array(out)

    x_tr, x_te = feats(rows["train"] + rows["tune"]), feats(rows["test"])
    y_tr, y_te = labels_of(cache, rows["train"] + rows["tune"]), labels_of(cache, rows["test"])
    res = {}
    for name, cols in (("gradient energy", [0]), ("voxel SD", [1]), ("mean density", [2]),
                       ("all three", [0, 1, 2])):  # fmt: skip
        sc = StandardScaler().fit(x_tr[:, cols])
        m = LogisticRegression(max_iter=1000).fit(sc.transform(x_tr[:, cols]), y_tr)
        res[name] = auc_roc(y_te, m.predict_proba(sc.transform(x_te[:, cols]))[:, 1])
    for k, name in enumerate(("gradient_energy", "voxel_sd_hu", "mean_hu")):
        res[f"{name} by class (0, 1)"] = [float(x_te[y_te == c, k].mean()) for c in (0, 1)]  # type: ignore[assignment]
    return res


def pilot(a: argparse.Namespace, data: DataConfig, cache: PatchCache, out: Path) -> None:
    """Can the label be learnt at this compute? Random-init probe and one random-init
    fine-tuning at 100 % (``--finetune-epochs``, default 3), printed and written to
    ``pilot.json``."""
    t = time.time()
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(widen_factor=a.width, layers=(1, 1, 1, 1)))
    feats = extract_features(enc, cache, list(range(len(cache.table.records))), torch.device("cpu"), 16)
    a.draws = 1
    probe = probe_arm(a, cache, feats)["1.0"][0]
    print(f"pilot: random-init probe at 100 %: test AUC {probe['test_auc']:.3f} ({time.time() - t:.0f} s)", flush=True)
    ft = finetune_arm(a, data, cache, "random", None, a.finetune_epochs or 3, out / "pilot_finetune", (1.0,))["1.0"][0]
    res = {"random_probe_test_auc": probe["test_auc"], "random_finetune_test_auc": ft["test_auc"],
           "finetune_best_epoch": ft["best_epoch"], "finetune_tune_auc": ft["tune_auc"],
           "seconds": round(time.time() - t, 1), "args": {k: str(v) for k, v in vars(a).items()}}  # fmt: skip
    (out / "pilot.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res), flush=True)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    a = parse_args()
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    loads: list[list[float]] = [list(os.getloadavg())]
    pre_data, lab_data = make_cohorts(a)
    pre_cache, lab_cache = build_cache(pre_data), build_cache(lab_data)
    timings["cohorts_and_caches"] = time.time() - t_start
    cpu["cohorts_and_caches"] = cpu_seconds()
    print(f"cohorts and caches: {timings['cohorts_and_caches']:.0f} s", flush=True)
    pre_images = {str(r.image_path) for r in pre_cache.table.records}
    lab_images = {str(r.image_path) for r in lab_cache.table.records}
    full = subset_rows(lab_cache, 1.0, 0)
    oracle = {"density_only_baseline": density_baseline(lab_cache, full),
              "texture_oracle": texture_oracle(lab_cache, full)}  # fmt: skip
    print(oracle, {s: len(r) for s, r in full.items()}, flush=True)
    if a.pilot:
        pilot(a, lab_data, lab_cache, out)
        return

    t = time.time()
    if not (a.reuse and (out / "calibrate" / "log.csv").is_file()):
        run_pretrain(pretrain_config(a, pre_data, "background_infonce", 4, out / "calibrate"))
    s_step = seconds_per_step(out / "calibrate" / "log.csv")
    steps = int(max(2, min(a.max_steps, a.pretrain_minutes * 60 / s_step)))
    timings["calibration"] = time.time() - t
    loads.append(list(os.getloadavg()))
    print(f"measured {s_step:.2f} s/step -> {steps} pre-training steps per loss", flush=True)

    pre: dict[str, Any] = {}
    for loss in ("background_infonce", "ntxent+background"):
        t = time.time()
        folder = out / f"pretrain_{loss.replace('+', '_')}"
        if a.reuse and (folder / "summary.json").is_file():
            sm = json.loads((folder / "summary.json").read_text())
            with open(folder / "log.csv", newline="") as f:
                secs = sum(float(r["data_s"]) + float(r["compute_s"]) for r in csv.DictReader(f))
            pre[loss] = {"encoder": folder / "encoder.pt", "first_loss": sm["first_loss"], "last_loss": sm["last_loss"],
                         "steps": sm["end_step"], "seconds": round(secs, 1),
                         "data_fraction": round(sm["data_fraction"], 3), "reused": True}  # fmt: skip
            print(f"pretrain {loss}: reused {pre[loss]}", flush=True)
            continue
        res = run_pretrain(pretrain_config(a, pre_data, loss, steps, folder))
        pre[loss] = {"encoder": res.encoder_path, "first_loss": res.first_loss, "last_loss": res.last_loss,
                     "steps": res.end_step, "seconds": round(time.time() - t, 1),
                     "data_fraction": round(res.data_fraction, 3)}  # fmt: skip
        print(f"pretrain {loss}: {pre[loss]}", flush=True)

    t = time.time()
    all_rows = list(range(len(lab_cache.table.records)))
    torch.manual_seed(0)
    random_enc = build_encoder(EncoderConfig(widen_factor=a.width, layers=(1, 1, 1, 1)))
    encoders = {"pretrained (authors' loss)": load_trunk(pre["background_infonce"]["encoder"])[0],
                "pretrained (our loss)": load_trunk(pre["ntxent+background"]["encoder"])[0],
                "random init": random_enc}  # fmt: skip
    probe = {name: probe_arm(a, lab_cache, extract_features(enc, lab_cache, all_rows, torch.device("cpu"), 16))
             for name, enc in encoders.items()}  # fmt: skip
    timings["probes"] = time.time() - t
    loads.append(list(os.getloadavg()))
    print("probes done", summarise(probe), flush=True)

    y_test = labels_of(lab_cache, full["test"])
    remaining = a.finetune_minutes * 60
    s_view = s_step / (4 * a.batch)
    n_train_total = 2 * a.draws * sum(max(2, int(np.ceil(f * len(full["train"])))) for f in FRACTIONS)
    per_epoch = s_view * 1.6 * n_train_total  # forward + backward, plus tune evaluation and overhead
    epochs = a.finetune_epochs or int(max(1, min(a.max_epochs, remaining / max(per_epoch, 1e-9))))
    print(f"fine-tuning: {epochs} epochs per run", flush=True)
    t = time.time()
    ft: dict[str, dict[str, Any]] = {"pretrained (authors' loss)": {}, "pretrained (our loss)": {}, "random init": {}}
    write_results(a, out, locals())
    for frac in (1.0, 0.1, 0.2, 0.5):  # all labels first (can it be learnt?); results written after each
        if time.time() - t_start > a.stop_minutes * 60:
            print(f"stopping before fine-tuning at {frac}: {a.stop_minutes} min reached", flush=True)
            break
        ft["pretrained (authors' loss)"].update(finetune_arm(a, lab_data, lab_cache, "foundation",
                                                             pre["background_infonce"]["encoder"], epochs,
                                                             out / "finetune", (frac,)))  # fmt: skip
        ft["pretrained (our loss)"].update(finetune_arm(a, lab_data, lab_cache, "foundation",
                                                        pre["ntxent+background"]["encoder"], epochs,
                                                        out / "finetune_ours", (frac,)))  # fmt: skip
        ft["random init"].update(finetune_arm(a, lab_data, lab_cache, "random", None, epochs,
                                              out / "finetune", (frac,)))  # fmt: skip
        timings["finetune"] = time.time() - t
        loads.append(list(os.getloadavg()))
        write_results(a, out, locals())
    write_results(a, out, locals())


def write_results(a: argparse.Namespace, out: Path, v: dict[str, Any]) -> None:
    """results.json and predictions.json from main's state ``v`` (called after every stage)."""
    pre_images, lab_images, pre_cache, lab_cache = v["pre_images"], v["lab_images"], v["pre_cache"], v["lab_cache"]
    full, y_test, pre, probe, ft = v["full"], v["y_test"], v["pre"], v["probe"], v["ft"]
    steps, epochs, timings, t_start = v["steps"], v["epochs"], v["timings"], v["t_start"]
    ft = {k: arm for k, arm in ft.items() if arm}

    pairs_probe = [("pretrained (authors' loss)", "random init"), ("pretrained (our loss)", "random init"),
                   ("pretrained (authors' loss)", "pretrained (our loss)")]  # fmt: skip
    result = {
        "design": {
            "pretrain_scans": len(pre_images), "pretrain_lesions": len(pre_cache.table.records),
            "labelled_scans": {s: len({str(r.image_path) for r in lab_cache.table.records if r.split == s})
                               for s in ("train", "tune", "test")},
            "labelled_lesions": {s: len(full[s]) for s in full},
            "test_positive_fraction": float(y_test.mean()),
            "cohorts_disjoint": not (pre_images & lab_images),
            "encoder": {"widen_factor": a.width, "layers": [1, 1, 1, 1], "features": int(512 * a.width) * 4},
            "pretrain_steps": steps, "batch_lesions": a.batch, "lr": a.lr, "trust_coefficient": a.trust,
            "finetune_epochs": epochs, "draws": a.draws, "probe_trials": a.trials,
            "permutations": a.permutations, "classes": a.classes,
        },
        **v["oracle"],
        "pretrain": {k: {kk: str(vv) if isinstance(vv, Path) else vv for kk, vv in v.items()} for k, v in pre.items()},
        "probe_summary": summarise(probe),
        "finetune_summary": summarise(ft),
        "probe_tests": comparisons(y_test, probe, pairs_probe, a.permutations),
        "finetune_tests": comparisons(y_test, ft, [p for p in pairs_probe if p[0] in ft and p[1] in ft],
                                      a.permutations),
        "probe_runs": {k: {f: [{kk: vv for kk, vv in r.items() if kk != "p"} for r in runs] for f, runs in v.items()}
                       for k, v in probe.items()},
        "finetune_runs": {k: {f: [{kk: vv for kk, vv in r.items() if kk != "p"} for r in runs] for f, runs in v.items()}
                          for k, v in ft.items()},
        "timings_s": {k: round(x, 1) for k, x in timings.items()},
        "cpu_s": {**{k: round(x, 1) for k, x in v["cpu"].items()}, "total": round(cpu_seconds(), 1)},
        "load_average_1_5_15": v["loads"] + [list(os.getloadavg())],
        "finetune_fractions_done": sorted(float(f) for f in next(iter(ft.values()), {})),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "seconds": round(time.time() - t_start, 1),
        "args": {k: str(v) for k, v in vars(a).items()},
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "predictions.json").write_text(json.dumps({"y_test": y_test.tolist(), "probe": probe, "finetune": ft}))
    print(json.dumps({k: result[k] for k in ("finetune_summary", "finetune_tests", "seconds", "cpu_s")},
                     indent=1), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
