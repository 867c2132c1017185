"""mhub-fmcib: the FMCIB foundation model (Pai et al. 2024) as DICOM-in/DICOM-out software."""

__version__ = "0.1.0"

__all__ = ["__version__"]
