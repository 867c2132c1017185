"""Push instances back with STOW-RS and check the server's answer for every instance.

The STOW-RS response (PS3.18 10.5.3) lists each stored instance in
``ReferencedSOPSequence`` (0008,1199), possibly with a ``WarningReason`` (0008,1196), and
each refused one in ``FailedSOPSequence`` (0008,1198) with a ``FailureReason``
(0008,1197). An instance we sent that appears in neither list counts as failed. HTTP 409
(all failed) and 202 (some failed) responses are read the same way.

Storing the same instance twice does not duplicate it: our outputs have deterministic
SOPInstanceUIDs and a DICOM archive keeps one instance per SOPInstanceUID.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
import requests
from pydicom.dataset import Dataset

from mhub_fmcib.dicomweb.errors import DicomWebServerError
from mhub_fmcib.dicomweb.session import DicomWebClient, translated_errors

logger = logging.getLogger(__name__)

#: Meaning of FailureReason / WarningReason codes (PS3.4 Annex B.2.3, PS3.18 Table 10.5.3-1).
STOW_REASONS: dict[int, str] = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA770: "out of resources: unable to store",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "referenced Transfer Syntax not supported",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class (stored anyway)",
}
DEFAULT_BATCH_SIZE = 16


def describe_reason(code: int | None) -> str:
    """``'0xA700 out of resources'``; ``'no reason given'`` for None."""
    if code is None:
        return "no reason given"
    return f"0x{code:04X} {STOW_REASONS.get(code, 'unknown reason')}"


@dataclass(frozen=True)
class StoreFailure:
    """One instance the server did not store (or stored with a warning)."""

    sop_instance_uid: str
    reason: str
    code: int | None = None


@dataclass(frozen=True)
class StoreReport:
    """Outcome of :func:`store_instances`, per instance.

    Attributes:
        stored: SOPInstanceUIDs the server acknowledged.
        failed: instances not stored, each with the reason.
        warnings: stored instances the server reported a warning for.
    """

    stored: tuple[str, ...]
    failed: tuple[StoreFailure, ...] = ()
    warnings: tuple[StoreFailure, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every instance was stored."""
        return not self.failed

    def to_json(self) -> dict[str, object]:
        """JSON-ready summary for ``run.json``."""
        return {
            "stored": list(self.stored),
            "failed": [{"sop_instance_uid": f.sop_instance_uid, "reason": f.reason} for f in self.failed],
            "warnings": [{"sop_instance_uid": w.sop_instance_uid, "reason": w.reason} for w in self.warnings],
        }


def _stow(client: DicomWebClient, datasets: list[Dataset]) -> Dataset:
    with translated_errors(client, "STOW-RS store"):
        try:
            response: Dataset = client.store_instances(datasets)
        except (TypeError, KeyError, SyntaxError) as exc:  # SyntaxError: xml ParseError
            raise DicomWebServerError(
                f"The STOW-RS answer of {client.settings.server} cannot be read "
                f"(Content-Type {client.monitor.last_content_type!r}; {type(exc).__name__})"
            ) from None
        except requests.HTTPError as exc:
            # 409: every instance failed; the body still says why, per instance.
            answer = exc.response
            if answer is None or answer.status_code != 409 or not answer.content:
                raise
            try:
                response = Dataset.from_json(answer.json())
            except ValueError:
                raise exc from None
    return response


def _reason_code(item: Dataset, keyword: str) -> int | None:
    value = item.get(keyword)
    return int(value) if value is not None else None


def store_instances(
    client: DicomWebClient,
    datasets_or_paths: Sequence[Dataset | Path],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> StoreReport:
    """STOW-RS the instances in batches and check the server's answer for each one.

    Args:
        client: the server.
        datasets_or_paths: datasets, or paths of DICOM files (read one batch at a time).
        batch_size: instances per request.

    Raises:
        DicomWebServerError: the server's answer is not a STOW-RS response.
        DicomWebAuthError, DicomWebConnectionError: see ``translated_errors``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stored: list[str] = []
    failed: list[StoreFailure] = []
    warnings: list[StoreFailure] = []
    for start in range(0, len(datasets_or_paths), batch_size):
        batch = [
            item if isinstance(item, Dataset) else pydicom.dcmread(item)
            for item in datasets_or_paths[start : start + batch_size]
        ]
        sent = [str(ds.SOPInstanceUID) for ds in batch]
        response = _stow(client, batch)
        if "ReferencedSOPSequence" not in response and "FailedSOPSequence" not in response:
            raise DicomWebServerError(
                f"The STOW-RS answer of {client.settings.server} lists neither stored nor "
                f"failed instances for {len(sent)} instances sent"
            )
        acknowledged: dict[str, Dataset] = {
            str(item.ReferencedSOPInstanceUID): item for item in response.get("ReferencedSOPSequence", [])
        }
        refused: dict[str, Dataset] = {
            str(item.ReferencedSOPInstanceUID): item for item in response.get("FailedSOPSequence", [])
        }
        batch_failed: list[StoreFailure] = []
        for uid in sent:
            if uid in refused:
                code = _reason_code(refused[uid], "FailureReason")
                batch_failed.append(StoreFailure(uid, describe_reason(code), code))
            elif uid in acknowledged:
                stored.append(uid)
                code = _reason_code(acknowledged[uid], "WarningReason")
                if code is not None:
                    warnings.append(StoreFailure(uid, describe_reason(code), code))
            else:
                batch_failed.append(StoreFailure(uid, "not listed in the server's STOW-RS response", None))
        for failure in batch_failed:
            logger.warning(
                "STOW-RS to %s failed for %s: %s",
                client.settings.server,
                failure.sop_instance_uid,
                failure.reason,
            )
        failed.extend(batch_failed)
    return StoreReport(stored=tuple(stored), failed=tuple(failed), warnings=tuple(warnings))
