"""SOP Class UIDs and other DICOM constants used by the importer."""

import re
import struct

#: What pydicom raises on a damaged, truncated or hostile file (never a bare ``except``).
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    OverflowError,
    struct.error,
)
#: What decoding pixel data can raise on damaged or unsupported data.
DECODE_ERRORS: tuple[type[BaseException], ...] = (*READ_ERRORS, RuntimeError, NotImplementedError)


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: Transfer syntaxes (PS3.6 Annex A) named here without importing pydicom.
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"

CT_SOP_CLASSES = frozenset({CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE})

#: ManufacturerModelName of the DICOM objects this software writes (SR, patch-region SEG);
#: such objects found in an input are outputs of an earlier run, not lesion segmentations.
OWN_MANUFACTURER_MODEL_NAME = "mhub-fmcib"

_UID_SHAPE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def plausible_uid(value: str) -> bool:
    """Whether ``value`` can be a DICOM UID: digits and dots, no empty component, at most
    64 characters. Leading zeros in a component (common in old exports) are tolerated here;
    DICOM outputs check the strict grammar (:func:`mhub_fmcib.export.layout.check_uid`)."""
    return len(value) <= 64 and bool(_UID_SHAPE.match(value))
