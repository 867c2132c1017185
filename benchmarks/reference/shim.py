"""Harness shim for running the authors' fmcib 1.0.0 ``get_features`` offline on a CPU-only
torch (executed before ``fmcib`` is imported; see README.md beside this file).

Replaces only what is not on the feature path: ``torchvision.transforms.Lambda`` (identical
behaviour; the PyPI torchvision build does not load against this CPU torch) and
``fmcib.utils.idc_helper`` (the IDC download helper: pydicom_seg, dcmrtstruct2nii,
google-cloud-storage)."""

import sys
import types


class Lambda:
    """torchvision.transforms.Lambda: apply a user function."""

    def __init__(self, lambd):  # type: ignore[no-untyped-def]
        self.lambd = lambd

    def __call__(self, img):  # type: ignore[no-untyped-def]
        return self.lambd(img)


_tv = types.ModuleType("torchvision")
_tr = types.ModuleType("torchvision.transforms")
_tr.Lambda = Lambda  # type: ignore[attr-defined]
_tv.transforms = _tr  # type: ignore[attr-defined]
sys.modules["torchvision"] = _tv
sys.modules["torchvision.transforms"] = _tr
sys.modules["fmcib.utils.idc_helper"] = types.ModuleType("fmcib.utils.idc_helper")
