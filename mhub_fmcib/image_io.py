"""Image files (NIfTI, NRRD, MHA, …) to and from :class:`~mhub_fmcib.records.Volume`.

SimpleITK reads every format ITK knows, in ITK's LPS convention, which is what the
reference (MONAI's ``ITKReader``) sees. SimpleITK is imported on the first read or
conversion (a DICOM run and the CLI's other commands never load it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .errors import SegmentationError
from .records import Volume

if TYPE_CHECKING:
    import SimpleITK as sitk

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has a suffix of an image format we read (not DICOM)."""
    name = path.name.lower()
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def sitk_to_volume(img: sitk.Image, what: str = "image") -> Volume:
    """A 3D scalar SimpleITK image as a Volume (array in (i, j, k) order)."""
    import SimpleITK as sitk

    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"{what}: expected a 3D scalar image, got {img.GetDimension()}D with "
            f"{img.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = img.GetOrigin()
    return Volume(array=arr, affine=affine)


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """The inverse of :func:`sitk_to_volume`."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(volume.array).transpose(2, 1, 0)))
    img.SetSpacing(volume.spacing)
    img.SetOrigin(volume.origin)
    img.SetDirection(tuple(volume.direction.ravel().tolist()))
    return img


def read_image(path: Path) -> Volume:
    """Read a 3D image file (NIfTI, NRRD, MHA/MHD) as a Volume.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be read or is not a 3D scalar image.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise ValueError(f"{path}: cannot be read as an image ({first})") from e
    return sitk_to_volume(img, str(path))


def read_mask(path: Path, like: Volume) -> npt.NDArray[np.int64]:
    """Read a label mask file and check it lies on ``like``'s grid.

    Returns:
        int64 labels, shape ``like.shape`` in (i, j, k) order.

    Raises:
        SegmentationError: the mask's grid differs from the image's (shape, spacing,
            origin or direction beyond 1e-3 mm / 1e-4).
    """
    mask = read_image(path)
    if mask.shape != like.shape or not np.allclose(mask.affine, like.affine, atol=1e-3, rtol=1e-4):
        raise SegmentationError(
            f"mask {path} is not on the image's voxel grid (mask shape {mask.shape}, image "
            f"shape {like.shape}; affines differ by up to "
            f"{np.abs(mask.affine - like.affine).max():.4g} mm). Resample the mask onto "
            "the image first (nearest neighbour)."
        )
    return np.asarray(mask.array).astype(np.int64)
