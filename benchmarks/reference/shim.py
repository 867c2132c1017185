"""Harness shim for running the authors' fmcib 1.0.0 get_features offline on a CPU-only torch.
Replaces only what is not on the feature path: torchvision.transforms.Lambda (identical
behaviour; the PyPI torchvision build does not load against this CPU torch) and
fmcib.utils.idc_helper (IDC download helper: pydicom_seg, dcmrtstruct2nii, google-cloud)."""
import sys, types
tv = types.ModuleType('torchvision'); tr = types.ModuleType('torchvision.transforms')
class Lambda:
    def __init__(self, lambd): self.lambd = lambd
    def __call__(self, img): return self.lambd(img)
tr.Lambda = Lambda; tv.transforms = tr
sys.modules['torchvision'] = tv; sys.modules['torchvision.transforms'] = tr
sys.modules['fmcib.utils.idc_helper'] = types.ModuleType('fmcib.utils.idc_helper')
