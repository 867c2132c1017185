"""Smooth guided back-propagation saliency (MONAI) on a fine-tuned FMCIB model.

A fine-tuned model is the FMCIB trunk followed by a linear head,
:class:`FineTunedClassifier` (input (B, 1, 50, 50, 50) in (z, y, x), output logits (B, C)).
The map is ``monai.visualize.GuidedBackpropSmoothGrad`` (SmoothGrad with guided ReLUs:
``n_samples`` noisy copies, noise SD ``stdev_spread × (max − min)`` of the patch,
magnitude = root mean square of the gradients). MONAI swaps only modules whose *name*
contains ``relu``; the FMCIB stem activation is named ``act`` (MONAI's naming), so it is
swapped for MONAI's guided ReLU as well, so that every ReLU is guided. Noise comes from
torch's global generator, seeded with ``seed`` first.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from mhub_fmcib.records import N_FEATURES

FloatArray = npt.NDArray[np.float32]


class FineTunedClassifier(nn.Module):
    """``trunk`` (features (B, F)) then ``nn.Linear(F, n_classes)``: logits (B, n_classes)."""

    def __init__(self, trunk: nn.Module, n_classes: int, n_features: int = N_FEATURES) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.trunk = trunk
        self.head = nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.trunk(x))
        return out


def smooth_guided_backprop(
    model: nn.Module,
    patch: npt.ArrayLike,
    target_class: int | None = None,
    n_samples: int = 25,
    stdev_spread: float = 0.15,
    seed: int = 0,
) -> FloatArray:
    """Saliency of ``patch`` (D, H, W) for ``target_class`` (arg-max if None) -> (D, H, W)."""
    from monai.networks.utils import replace_modules_temp
    from monai.visualize import GuidedBackpropSmoothGrad
    from monai.visualize.gradient_based import _GradReLU

    x = torch.as_tensor(np.asarray(patch, dtype=np.float32))
    if x.ndim != 3:
        raise ValueError(f"patch must be 3D (D, H, W), got shape {tuple(x.shape)}")
    model.eval()
    stem_acts = [
        name for name, m in model.named_modules() if isinstance(m, nn.ReLU) and "relu" not in name.split(".")[-1]
    ]
    saliency = GuidedBackpropSmoothGrad(
        model, stdev_spread=stdev_spread, n_samples=n_samples, magnitude=True, verbose=False
    )
    torch.manual_seed(seed)
    with torch.enable_grad(), ExitStack() as stack:
        for name in stem_acts:
            stack.enter_context(replace_modules_temp(model, name, _GradReLU(), strict_match=True))
        out = saliency(x[None, None], index=target_class)
    result: FloatArray = out[0, 0].detach().cpu().numpy().astype(np.float32)
    return result


def render_saliency(patch: npt.ArrayLike, saliency: npt.ArrayLike, path: Path, title: str = "") -> Path:
    """Central axial, coronal and sagittal slices: patch in grey, saliency overlaid (PNG).

    ``patch`` and ``saliency``: (z, y, x), same shape; the patch in normalised units is
    shown with the lung window (−1000 to 400 HU, i.e. (HU + 1024) / 3072).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.asarray(patch, dtype=np.float32)
    s = np.asarray(saliency, dtype=np.float32)
    if p.shape != s.shape or p.ndim != 3:
        raise ValueError(f"patch and saliency must share a 3D shape, got {p.shape} and {s.shape}")
    c = [n // 2 for n in p.shape]
    views = (
        ("axial", p[c[0]], s[c[0]]),
        ("coronal", p[:, c[1]][::-1], s[:, c[1]][::-1]),
        ("sagittal", p[:, :, c[2]][::-1], s[:, :, c[2]][::-1]),
    )
    vmin, vmax = (-1000 + 1024) / 3072, (400 + 1024) / 3072
    smax = float(s.max()) if s.max() > 0 else 1.0
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    for ax, (name, img, sal) in zip(axes, views, strict=True):
        ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax)
        ax.imshow(np.ma.masked_less(sal, 0.2 * smax), cmap="jet", alpha=0.5, vmin=0, vmax=smax)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
