"""t-SNE maps of features, coloured by class, with per-class density contours.

The embedding is scikit-learn's ``TSNE(n_components=2, perplexity, init="pca",
random_state=seed)`` on standardised features (zero mean, unit variance per feature).
Density contours: ``scipy.stats.gaussian_kde`` per class (Scott's bandwidth) evaluated on a
200 × 200 grid, drawn at the levels enclosing about 25, 50 and 75 % of the mass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.stats import gaussian_kde

from mhub_fmcib_train.evaluation.tables import save_figure

FloatArray = npt.NDArray[np.float64]


def tsne_embedding(features: npt.ArrayLike, perplexity: float = 30.0, seed: int = 0) -> FloatArray:
    """2D t-SNE of standardised ``features`` (n, F) -> (n, 2)."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 5:
        raise ValueError(f"features must be (n >= 5, F), got {x.shape}")
    sd = x.std(0)
    z = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    perp = min(perplexity, (x.shape[0] - 1) / 3.0)
    emb: FloatArray = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(z)
    return emb.astype(np.float64)


def _mass_levels(density: FloatArray, fractions: tuple[float, ...]) -> list[float]:
    d = np.sort(density.ravel())[::-1]
    c = np.cumsum(d) / d.sum()
    idx = [min(int(np.searchsorted(c, f)), d.size - 1) for f in fractions]
    return sorted({float(d[i]) for i in idx})


def plot_tsne(
    embedding: npt.ArrayLike, labels: npt.ArrayLike, stem: Path, title: str = "t-SNE of features"
) -> tuple[Path, Path]:
    """Scatter of ``embedding`` (n, 2) coloured by ``labels`` (n,) with density contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = np.asarray(embedding, dtype=np.float64)
    lab = np.asarray(labels)
    if e.ndim != 2 or e.shape[1] != 2 or lab.shape != (e.shape[0],):
        raise ValueError(f"embedding must be (n, 2) with labels (n,), got {e.shape}, {lab.shape}")
    pad = 0.1 * np.ptp(e, axis=0)
    lo, hi = e.min(0) - pad, e.max(0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    cmap = plt.get_cmap("tab10")
    for i, cls in enumerate(np.unique(lab)):
        pts = e[lab == cls]
        colour = cmap(i % 10)
        ax.scatter(pts[:, 0], pts[:, 1], s=10, color=colour, label=str(cls), alpha=0.7)
        if pts.shape[0] >= 3 and np.linalg.matrix_rank(pts - pts.mean(0)) == 2:
            dens = gaussian_kde(pts.T)(np.vstack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
            ax.contour(gx, gy, dens, levels=_mass_levels(dens, (0.25, 0.5, 0.75)), colors=[colour], linewidths=1)
    ax.legend(title="class", fontsize=8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, stem)
