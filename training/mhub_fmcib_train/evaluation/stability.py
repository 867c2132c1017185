"""Stability: intraclass correlation, test–retest feature agreement, inter-reader simulation.

ICC forms follow Shrout & Fleiss (1979), from the two-way ANOVA mean squares of an
(n targets × k raters) table: ICC(1,1), ICC(2,1), ICC(3,1) and their k-rater means
ICC(1,k), ICC(2,k), ICC(3,k). Each lesion is a target, the test and retest scans are the
two "raters". **The paper's test–retest figure is ICC(3,1)**: two-way mixed effects,
consistency, single measurement — the authors' ``analysis/stability.py`` takes row 2 of
pingouin's ``intraclass_corr`` table (``ICC3``). **ICC(2,1)** (two-way random effects,
absolute agreement, single measurement), which also penalises a systematic test–retest
shift, is reported beside it; :func:`test_retest_icc` returns both, labelled, and
:func:`icc_table` all six forms with a ``role`` column.

Test–retest features: for each feature, across lesions, Spearman's rho and R² (squared
Pearson correlation, i.e. the coefficient of determination of a least-squares line) between
its test and retest values.

Inter-reader simulation: each lesion's seed point is moved ``n_perturbations`` (50) times
by an offset drawn from a zero-mean normal with variance 16 voxels² per axis (standard
deviation 4 voxels). With ``grid="isotropic"`` (default) a voxel is the 1 mm voxel of the
resampled grid the encoder sees (4 mm on every LPS axis), the space in which the reference
crops its patches; with ``grid="image"`` a voxel is one voxel of the image, so the offset
in mm is ``direction @ (spacing * offset_voxels)`` (e.g. 4 voxels = 2.3 mm in-plane and
20 mm across 5 mm slices, which moves many seeds off small lesions). Each perturbed
seed goes through the real chain: ``extract_patch`` → feature extractor → head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from mhub_fmcib.errors import CaseError, ConfigError
from mhub_fmcib.records import Patch, SeedPoint, Volume

from .metrics import auc_roc

FloatArray = npt.NDArray[np.float64]

ICC_FORMS = ("ICC(1,1)", "ICC(2,1)", "ICC(3,1)", "ICC(1,k)", "ICC(2,k)", "ICC(3,k)")
#: The form of the paper's test–retest figure (the authors' code: pingouin ICC3).
TEST_RETEST_ICC = "ICC(3,1)"
#: The form reported beside it (absolute agreement).
TEST_RETEST_ICC_BESIDE = "ICC(2,1)"
#: What each reported form is, as written into tables.
ICC_ROLES = {
    TEST_RETEST_ICC: "paper's figure: two-way mixed, consistency, single "
    "(authors' analysis/stability.py, pingouin ICC3)",
    TEST_RETEST_ICC_BESIDE: "beside it: two-way random, absolute agreement, single",
}


@dataclass(frozen=True)
class IccTable:
    """All six Shrout & Fleiss ICCs of an (n, k) ratings table, with the ANOVA mean squares."""

    n_targets: int
    n_raters: int
    bms: float
    jms: float
    wms: float
    ems: float
    values: tuple[tuple[str, float], ...]

    def __getitem__(self, form: str) -> float:
        for name, value in self.values:
            if name == form:
                return value
        raise KeyError(f"unknown ICC form {form!r}; choose from {ICC_FORMS}")


def icc(ratings: npt.ArrayLike) -> IccTable:
    """Shrout & Fleiss ICCs of ``ratings``, shape (n targets, k raters), no missing values."""
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"ratings must be (n >= 2 targets, k >= 2 raters), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("ratings contain NaN or infinite values; ICC needs a complete table")
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * np.sum((x.mean(1) - grand) ** 2)
    ss_cols = n * np.sum((x.mean(0) - grand) ** 2)
    ss_total = np.sum((x - grand) ** 2)
    ss_within = ss_total - ss_rows
    ss_error = ss_total - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    jms = ss_cols / (k - 1)
    wms = ss_within / (n * (k - 1))
    ems = ss_error / ((n - 1) * (k - 1))
    values = (
        ("ICC(1,1)", (bms - wms) / (bms + (k - 1) * wms)),
        ("ICC(2,1)", (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)),
        ("ICC(3,1)", (bms - ems) / (bms + (k - 1) * ems)),
        ("ICC(1,k)", (bms - wms) / bms),
        ("ICC(2,k)", (bms - ems) / (bms + (jms - ems) / n)),
        ("ICC(3,k)", (bms - ems) / bms),
    )
    return IccTable(n, k, float(bms), float(jms), float(wms), float(ems), tuple((f, float(v)) for f, v in values))


def icc_table(ratings: npt.ArrayLike) -> pd.DataFrame:
    """The six ICCs as a table (``form, icc, role``; ``role`` says which is the paper's
    figure and which is reported beside it, empty for the others)."""
    t = icc(ratings)
    return pd.DataFrame([{"form": f, "icc": v, "role": ICC_ROLES.get(f, "")} for f, v in t.values])


@dataclass(frozen=True)
class TestRetestIcc:
    """The two reported test–retest ICCs of a prediction.

    Attributes:
        paper: ICC(3,1), consistency — the paper's figure (authors' code).
        absolute_agreement: ICC(2,1), reported beside it.
    """

    paper: float
    absolute_agreement: float
    paper_form: str = TEST_RETEST_ICC
    absolute_agreement_form: str = TEST_RETEST_ICC_BESIDE

    def describe(self) -> str:
        """``ICC(3,1) = 0.981 (paper's figure, consistency); ICC(2,1) = 0.975 (absolute agreement)``."""
        return (f"{self.paper_form} = {self.paper:.3f} (paper's figure, consistency); "
                f"{self.absolute_agreement_form} = {self.absolute_agreement:.3f} (absolute agreement)")  # fmt: skip


def test_retest_icc(ratings: npt.ArrayLike) -> TestRetestIcc:
    """ICC(3,1) and ICC(2,1) of an (n lesions, 2 scans) table, labelled."""
    t = icc(ratings)
    return TestRetestIcc(paper=t[TEST_RETEST_ICC], absolute_agreement=t[TEST_RETEST_ICC_BESIDE])


test_retest_icc.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
TestRetestIcc.__test__ = False  # type: ignore[attr-defined]


def feature_agreement(test: npt.ArrayLike, retest: npt.ArrayLike) -> pd.DataFrame:
    """Per feature, across lesions: Spearman rho and R² between test and retest.

    ``test``, ``retest``: (n lesions, F features), rows paired. Constant features give NaN.
    """
    a = np.asarray(test, dtype=np.float64)
    b = np.asarray(retest, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 3:
        raise ValueError(f"test and retest must both be (n >= 3, F), got {a.shape} and {b.shape}")
    rows = []
    for j in range(a.shape[1]):
        if np.ptp(a[:, j]) == 0 or np.ptp(b[:, j]) == 0:
            rho, r = float("nan"), float("nan")
        else:
            rho = float(spearmanr(a[:, j], b[:, j]).statistic)
            r = float(pearsonr(a[:, j], b[:, j]).statistic)
        rows.append({"feature": j, "spearman": rho, "r2": r * r})
    return pd.DataFrame(rows)


def perturb_seeds(
    seed: SeedPoint,
    volume: Volume,
    n: int = 50,
    sd_voxels: float = 4.0,
    rng: np.random.Generator | None = None,
    grid: str = "isotropic",
) -> list[SeedPoint]:
    """``n`` seeds moved by N(0, sd_voxels²) voxels per axis (see module docstring for ``grid``)."""
    if n < 1 or sd_voxels < 0:
        raise ValueError(f"need n >= 1 and sd_voxels >= 0, got {n} and {sd_voxels}")
    g = rng if rng is not None else np.random.default_rng(0)
    offsets = g.normal(0.0, sd_voxels, size=(n, 3))
    if grid == "image":
        mm = offsets @ volume.affine[:3, :3].T
    elif grid == "isotropic":
        mm = offsets
    else:
        raise ConfigError(f"unknown perturbation grid {grid!r}; use 'image' or 'isotropic'")
    p = seed.as_array()[None, :] + mm
    return [SeedPoint(float(x), float(y), float(z)) for x, y, z in p]


class FeatureSource(Protocol):
    """Anything with ``extract(patches (B,50,50,50) float32) -> (B, F) float32``,
    e.g. :class:`mhub_fmcib.model.extractor.FeatureExtractor`."""

    def extract(self, patches: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


PatchFn = Callable[[Volume, SeedPoint], Patch]
Head = Callable[[npt.NDArray[np.float32]], npt.ArrayLike]


@dataclass(frozen=True)
class ReaderCase:
    """One lesion for the inter-reader simulation: its image, reference seed and label."""

    case_id: str
    volume: Volume
    seed: SeedPoint
    label: int


@dataclass(frozen=True, eq=False)
class InterReaderResult:
    """Predictions under seed perturbation.

    Attributes:
        case_ids: (L,) lesion ids.
        reference: (L,) prediction at the unperturbed seed.
        predictions: (L, P) prediction per perturbation (NaN where the moved seed left the image).
        aucs: (P,) AUC-ROC over lesions of each perturbation replicate (binary labels).
    """

    case_ids: tuple[str, ...]
    reference: FloatArray
    predictions: FloatArray
    aucs: FloatArray
    sd_voxels: float
    grid: str

    def summary(self) -> pd.DataFrame:
        """Per lesion: reference, mean, SD, min, max of predictions and perturbations used."""
        p = self.predictions
        return pd.DataFrame(
            {
                "case_id": list(self.case_ids),
                "reference": self.reference,
                "mean": np.nanmean(p, 1),
                "sd": np.nanstd(p, 1, ddof=1),
                "min": np.nanmin(p, 1),
                "max": np.nanmax(p, 1),
                "n_valid": np.sum(np.isfinite(p), 1),
            }
        )

    def auc_summary(self) -> dict[str, float]:
        """Spread of AUC over perturbation replicates: mean, SD, min, max, 2.5 and 97.5 %."""
        a = self.aucs[np.isfinite(self.aucs)]
        if a.size == 0:
            return {k: float("nan") for k in ("mean", "sd", "min", "max", "p2.5", "p97.5")}
        return {
            "mean": float(a.mean()),
            "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "min": float(a.min()),
            "max": float(a.max()),
            "p2.5": float(np.quantile(a, 0.025)),
            "p97.5": float(np.quantile(a, 0.975)),
        }


def _default_patch_fn() -> PatchFn:
    from mhub_fmcib.patch import extract_patch

    def fn(volume: Volume, seed: SeedPoint) -> Patch:
        return extract_patch(volume, seed)

    return fn


def inter_reader_simulation(
    cases: Sequence[ReaderCase],
    extractor: FeatureSource,
    head: Head,
    n_perturbations: int = 50,
    sd_voxels: float = 4.0,
    seed: int = 0,
    grid: str = "isotropic",
    patch_fn: PatchFn | None = None,
) -> InterReaderResult:
    """Run every lesion's reference and perturbed seeds through patch → features → head.

    ``head`` maps features (B, F) to one score per patch (B,) (e.g. a probe's probability
    of class 1). ``patch_fn`` defaults to :func:`mhub_fmcib.patch.extract_patch`.
    Perturbations come from ``numpy.random.default_rng(seed)``, lesion by lesion.
    """
    if not cases:
        raise ValueError("inter-reader simulation needs at least one lesion")
    make_patch = patch_fn if patch_fn is not None else _default_patch_fn()
    rng = np.random.default_rng(seed)
    ref = np.full(len(cases), np.nan)
    preds = np.full((len(cases), n_perturbations), np.nan)
    for i, case in enumerate(cases):
        seeds = [case.seed, *perturb_seeds(case.seed, case.volume, n_perturbations, sd_voxels, rng, grid)]
        patches, where = [], []
        for j, s in enumerate(seeds):
            try:
                patches.append(make_patch(case.volume, s).array)
            except CaseError:
                if j == 0:
                    raise
                continue  # a moved seed outside the image: recorded as NaN
            where.append(j)
        feats = extractor.extract(np.stack(patches).astype(np.float32))
        scores = np.asarray(head(feats), dtype=np.float64).reshape(-1)
        if scores.size != len(where):
            raise ValueError(f"head returned {scores.size} scores for {len(where)} patches")
        for j, sc in zip(where, scores, strict=True):
            if j == 0:
                ref[i] = sc
            else:
                preds[i, j - 1] = sc
    labels = np.array([c.label for c in cases])
    aucs = np.full(n_perturbations, np.nan)
    for j in range(n_perturbations):
        ok = np.isfinite(preds[:, j])
        if len(np.unique(labels[ok])) == 2:
            aucs[j] = auc_roc(labels[ok], preds[ok, j])
    return InterReaderResult(tuple(c.case_id for c in cases), ref, preds, aucs, sd_voxels, grid)
