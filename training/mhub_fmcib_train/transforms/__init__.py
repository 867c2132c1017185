"""Augmentations on cached cubes (normalised units, (z, y, x))."""

from .finetune import FinetuneAugment, centre_crop
from .views import (
    SimCLRView,
    gaussian_smooth,
    histogram_shift,
    rand_scale_box,
    rand_scale_crop,
    random_flip,
    random_resized_crop,
)

__all__ = [
    "FinetuneAugment",
    "SimCLRView",
    "centre_crop",
    "gaussian_smooth",
    "histogram_shift",
    "rand_scale_box",
    "rand_scale_crop",
    "random_flip",
    "random_resized_crop",
]
