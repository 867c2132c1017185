"""Which studies to process, and per study which series to pull (QIDO-RS + series metadata).

No pixel data is fetched here: CT instances are listed with an instance-level QIDO-RS
search, and the SEG/RTSTRUCT series are read with WADO-RS *metadata* requests, from which
the CT series they reference are found:

* SEG: ``ReferencedSeriesSequence`` (0008,1115) → ``SeriesInstanceUID``; failing that,
  the ``SourceImageSequence`` (0008,2112) of the frames' ``DerivationImageSequence``
  mapped to CT series through the CT instances' SOPInstanceUIDs.
* RTSTRUCT: ``ReferencedFrameOfReferenceSequence`` (3006,0010) → ``RTReferencedStudySequence``
  (3006,0012) → ``RTReferencedSeriesSequence`` (3006,0014) → ``SeriesInstanceUID``;
  failing that, ``ContourImageSequence`` (3006,0016) instance UIDs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword

from mhub_fmcib.dicomweb.errors import (
    DicomWebNotFoundError,
    DicomWebOptionError,
    DicomWebServerError,
)
from mhub_fmcib.dicomweb.session import DicomWebClient, translated_errors

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
SEGMENTATION_MODALITIES = ("SEG", "RTSTRUCT")

# DICOM JSON tags (PS3.18 F.2), upper-case hex.
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"
_SOP_CLASS_UID = "00080016"
_MODALITY = "00080060"
_SERIES_DESCRIPTION = "0008103E"
_REF_SOP_UID = "00081155"
_REF_SERIES_SEQ = "00081115"
_SOURCE_IMAGE_SEQ = "00082112"
_DERIVATION_IMAGE_SEQ = "00089124"
_SHARED_FG_SEQ = "52009229"
_PER_FRAME_FG_SEQ = "52009230"
_REF_FOR_SEQ = "30060010"
_RT_REF_STUDY_SEQ = "30060012"
_RT_REF_SERIES_SEQ = "30060014"
_CONTOUR_IMAGE_SEQ = "30060016"
_ROI_CONTOUR_SEQ = "30060039"
_CONTOUR_SEQ = "30060040"

DicomJson = dict[str, Any]


def is_uid(text: str) -> bool:
    """Whether ``text`` is a valid DICOM UID (digits and dots, no leading zeros, <= 64 chars)."""
    return len(text) <= 64 and _UID_RE.match(text) is not None


def check_uid(uid: str, what: str = "StudyInstanceUID") -> str:
    """``uid`` stripped, if it is a valid DICOM UID (digits and dots, at most 64 chars)."""
    uid = uid.strip()
    if len(uid) > 64 or not _UID_RE.match(uid):
        raise DicomWebOptionError(
            f"{what} {uid!r} is not a valid DICOM UID (digits and dots, no leading zeros, at most 64 characters)"
        )
    return uid


def read_studies_file(path: Path) -> list[str]:
    """StudyInstanceUIDs from a file: one per line; blank lines and ``#`` comments ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DicomWebOptionError(f"Cannot read the studies file {path}: {exc.strerror}") from None
    uids = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            uids.append(check_uid(text, f"StudyInstanceUID on line {number} of {path}:"))
    return uids


def parse_query(query: str) -> tuple[str, str]:
    """``"PatientID=ABC"`` → ``("PatientID", "ABC")``; the key is a DICOM keyword or 8-hex tag."""
    key, sep, value = query.partition("=")
    key, value = key.strip(), value.strip()
    is_tag = re.fullmatch(r"[0-9A-Fa-f]{8}", key) is not None
    if not sep or not value or not (is_tag or tag_for_keyword(key) is not None):
        raise DicomWebOptionError(
            f"The query {query!r} is not KEY=VALUE with KEY a DICOM keyword or tag, e.g. "
            "PatientID=LUNG1-001 or ModalitiesInStudy=CT"
        )
    return key, value


def _values(item: DicomJson, tag: str) -> list[Any]:
    if not isinstance(item, dict):
        return []
    element = item.get(tag)
    if not isinstance(element, dict):
        return []
    values = element.get("Value", [])
    return values if isinstance(values, list) else []


def _first_str(item: DicomJson, tag: str) -> str | None:
    values = _values(item, tag)
    return str(values[0]) if values and values[0] is not None else None


def _required_str(item: DicomJson, tag: str, context: str) -> str:
    value = _first_str(item, tag)
    if value is None:
        raise DicomWebServerError(f"The server's {context} answer lacks attribute ({tag[:4]},{tag[4:]})")
    return value


def _server_uid(item: DicomJson, tag: str, context: str) -> str:
    """A UID the server sent; it becomes a file name, so it must be a valid DICOM UID."""
    value = _required_str(item, tag, context)
    if not is_uid(value):
        raise DicomWebServerError(
            f"The server's {context} answer holds {value[:80]!r} in ({tag[:4]},{tag[4:]}), "
            "which is not a valid DICOM UID"
        )
    return value


def _dicom_json_list(answer: object, server: str, action: str) -> list[DicomJson]:
    """``answer`` if it is a list of DICOM JSON objects, else a DicomWebServerError saying what it is."""
    if not isinstance(answer, list):
        raise DicomWebServerError(
            f"The DICOMweb server {server} answered {action} with JSON that is not a list of DICOM "
            f"JSON objects (a {type(answer).__name__})"
        )
    for item in answer:
        if not isinstance(item, dict) or not all(isinstance(v, dict) for v in item.values()):
            raise DicomWebServerError(
                f"The DICOMweb server {server} answered {action} with a list holding "
                f"{str(item)[:80]!r}, which is not a DICOM JSON object"
            )
    return answer


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


#: QIDO-RS page size; servers may cap results, so searches page with ``limit``/``offset``.
QIDO_PAGE_SIZE = 1000


def _search_all(
    client: DicomWebClient,
    search: Callable[..., list[DicomJson]],
    action: str,
    study_uid: str | None,
    key_tag: str,
    **kwargs: Any,
) -> list[DicomJson]:
    """Every result of a QIDO-RS search, page by page, checked to be DICOM JSON.

    Stops at a short page, or at a page with nothing new (a server that ignores
    ``offset``, such as Orthanc's plugin, repeats its first page).
    """
    results: list[DicomJson] = []
    seen: set[str] = set()
    offset = 0
    while True:
        with translated_errors(client, action, study_uid):
            answer = search(limit=QIDO_PAGE_SIZE, offset=offset, **kwargs)
        page = _dicom_json_list(answer, client.settings.server, action)
        new = [item for item in page if _first_str(item, key_tag) not in seen]
        seen.update(str(_first_str(item, key_tag)) for item in new)
        results.extend(new)
        if len(page) < QIDO_PAGE_SIZE or not new:
            return results
        offset += len(page)


def select_studies(
    client: DicomWebClient,
    study_uids: Sequence[str],
    studies_file: Path | None,
    queries: Sequence[str],
) -> list[str]:
    """The StudyInstanceUIDs to process, in the order given, without duplicates.

    Args:
        client: the server.
        study_uids: UIDs given one by one (``--study``).
        studies_file: a file of UIDs (``--studies``), see :func:`read_studies_file`.
        queries: ``KEY=VALUE`` QIDO-RS study filters (``--query``), combined with AND; the
            studies they match are added.

    Raises:
        DicomWebOptionError: a UID or query is malformed, or nothing was selected.
    """
    uids = [check_uid(uid) for uid in study_uids]
    if studies_file is not None:
        uids.extend(read_studies_file(studies_file))
    if queries:
        filters = dict(parse_query(query) for query in queries)
        found = _search_all(
            client,
            client.search_for_studies,
            "QIDO-RS search for studies",
            None,
            _STUDY_UID,
            search_filters=filters,
            fields=["StudyInstanceUID"],
        )
        matched = [_server_uid(study, _STUDY_UID, "QIDO-RS study") for study in found]
        if not matched and not uids:
            raise DicomWebOptionError(f"The query {' AND '.join(queries)} matched no study on {client.settings.server}")
        uids.extend(matched)
    if not uids:
        raise DicomWebOptionError("No study selected; give --study UID, --studies FILE or --query")
    return _unique(uids)


@dataclass(frozen=True)
class SegmentationRef:
    """A SEG or RTSTRUCT instance and the CT series it references."""

    modality: str
    series_uid: str
    sop_uid: str
    referenced_series_uids: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.modality not in SEGMENTATION_MODALITIES:
            raise ValueError(f"modality must be SEG or RTSTRUCT, got {self.modality!r}")


@dataclass(frozen=True)
class CtSeriesPlan:
    """One CT series: its instances and the segmentations that reference it."""

    series_uid: str
    description: str
    sop_uids: tuple[str, ...]
    segmentations: tuple[SegmentationRef, ...] = ()

    def __post_init__(self) -> None:
        if not self.sop_uids:
            raise ValueError(f"CT series {self.series_uid} has no instances")

    @property
    def has_segmentation(self) -> bool:
        """Whether a SEG or RTSTRUCT references this series (else it needs seeds)."""
        return bool(self.segmentations)


@dataclass(frozen=True)
class StudyPlan:
    """What a study holds for us, found from metadata only.

    Attributes:
        study_uid: StudyInstanceUID.
        ct_series: every CT series; those without segmentation are listed but flagged
            (:attr:`CtSeriesPlan.has_segmentation` False).
        orphan_segmentations: SEG/RTSTRUCT instances that reference no CT series of the
            study (they are not pulled).
        other_series: SeriesInstanceUIDs of other modalities (ignored).
    """

    study_uid: str
    ct_series: tuple[CtSeriesPlan, ...]
    orphan_segmentations: tuple[SegmentationRef, ...] = ()
    other_series: tuple[str, ...] = field(default=())

    def instances_to_pull(self, include_unsegmented: bool = False) -> list[tuple[str, str]]:
        """``(SeriesInstanceUID, SOPInstanceUID)`` pairs to pull, CT before segmentations.

        Args:
            include_unsegmented: also pull CT series no segmentation references (when seeds
                are given for them).
        """
        pairs: list[tuple[str, str]] = []
        segmentations: list[tuple[str, str]] = []
        for series in self.ct_series:
            if not (series.has_segmentation or include_unsegmented):
                continue
            pairs.extend((series.series_uid, sop) for sop in series.sop_uids)
            segmentations.extend((ref.series_uid, ref.sop_uid) for ref in series.segmentations)
        return list(dict.fromkeys(pairs + segmentations))


def _seg_references(instance: DicomJson, sop_to_series: dict[str, str]) -> list[str]:
    series = [uid for item in _values(instance, _REF_SERIES_SEQ) if (uid := _first_str(item, _SERIES_UID)) is not None]
    if series:
        return _unique(series)
    sources = list(_values(instance, _SOURCE_IMAGE_SEQ))
    for groups_tag in (_SHARED_FG_SEQ, _PER_FRAME_FG_SEQ):
        for group in _values(instance, groups_tag):
            for derivation in _values(group, _DERIVATION_IMAGE_SEQ):
                sources.extend(_values(derivation, _SOURCE_IMAGE_SEQ))
    return _unique(
        sop_to_series[sop]
        for item in sources
        if (sop := _first_str(item, _REF_SOP_UID)) is not None and sop in sop_to_series
    )


def _rtstruct_references(instance: DicomJson, sop_to_series: dict[str, str]) -> list[str]:
    series: list[str] = []
    contour_images: list[DicomJson] = []
    for frame in _values(instance, _REF_FOR_SEQ):
        for study in _values(frame, _RT_REF_STUDY_SEQ):
            for item in _values(study, _RT_REF_SERIES_SEQ):
                uid = _first_str(item, _SERIES_UID)
                if uid is not None:
                    series.append(uid)
                contour_images.extend(_values(item, _CONTOUR_IMAGE_SEQ))
    if series:
        return _unique(series)
    for roi in _values(instance, _ROI_CONTOUR_SEQ):
        for contour in _values(roi, _CONTOUR_SEQ):
            contour_images.extend(_values(contour, _CONTOUR_IMAGE_SEQ))
    return _unique(
        sop_to_series[sop]
        for item in contour_images
        if (sop := _first_str(item, _REF_SOP_UID)) is not None and sop in sop_to_series
    )


def _ct_instances(client: DicomWebClient, study_uid: str, series_uid: str) -> tuple[str, ...]:
    instances = _search_all(
        client,
        client.search_for_instances,
        f"QIDO-RS search for the instances of series {series_uid}",
        study_uid,
        _SOP_UID,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        fields=["SOPInstanceUID"],
    )
    return tuple(_unique(_server_uid(i, _SOP_UID, "QIDO-RS instance") for i in instances))


def _segmentation_refs(
    client: DicomWebClient, study_uid: str, series_uid: str, modality: str, sop_to_series: dict[str, str]
) -> list[SegmentationRef]:
    action = f"WADO-RS metadata of series {series_uid}"
    with translated_errors(client, action, study_uid):
        answer = client.retrieve_series_metadata(study_uid, series_uid)
    find = _seg_references if modality == "SEG" else _rtstruct_references
    return [
        SegmentationRef(
            modality=modality,
            series_uid=series_uid,
            sop_uid=_server_uid(instance, _SOP_UID, "WADO-RS metadata"),
            referenced_series_uids=tuple(find(instance, sop_to_series)),
        )
        for instance in _dicom_json_list(answer, client.settings.server, action)
    ]


def plan_study(client: DicomWebClient, study_uid: str) -> StudyPlan:
    """Find the CT series of a study and the SEG/RTSTRUCT instances referencing them.

    Raises:
        DicomWebNotFoundError: the server has no such study.
        DicomWebServerError: an answer is not valid DICOM JSON (or lacks a UID).
        DicomWebAuthError, DicomWebConnectionError, DicomWebDeadlineError: see
            :func:`mhub_fmcib.dicomweb.session.translated_errors`.
    """
    study_uid = check_uid(study_uid)
    series_list = _search_all(
        client,
        client.search_for_series,
        "QIDO-RS search for series",
        study_uid,
        _SERIES_UID,
        study_instance_uid=study_uid,
        fields=["Modality", "SeriesDescription"],
    )
    if not series_list:
        raise DicomWebNotFoundError(
            f"The DICOMweb server {client.settings.server} has no study with StudyInstanceUID "
            f"{study_uid} (QIDO-RS found no series); check the UID"
        )
    ct: list[tuple[str, str, tuple[str, ...]]] = []
    segmentation_series: list[tuple[str, str]] = []
    other: list[str] = []
    for item in series_list:
        series_uid = _server_uid(item, _SERIES_UID, "QIDO-RS series")
        modality = _first_str(item, _MODALITY) or ""
        if modality == "CT":
            sops = _ct_instances(client, study_uid, series_uid)
            ct.append((series_uid, _first_str(item, _SERIES_DESCRIPTION) or "", sops))
        elif modality in SEGMENTATION_MODALITIES:
            segmentation_series.append((series_uid, modality))
        else:
            other.append(series_uid)
    sop_to_series = {sop: series_uid for series_uid, _, sops in ct for sop in sops}
    refs = [
        ref
        for series_uid, modality in segmentation_series
        for ref in _segmentation_refs(client, study_uid, series_uid, modality, sop_to_series)
    ]
    ct_plans = tuple(
        CtSeriesPlan(
            series_uid=series_uid,
            description=description,
            sop_uids=sops,
            segmentations=tuple(r for r in refs if series_uid in r.referenced_series_uids),
        )
        for series_uid, description, sops in ct
        if sops
    )
    ct_uids = {plan.series_uid for plan in ct_plans}
    return StudyPlan(
        study_uid=study_uid,
        ct_series=ct_plans,
        orphan_segmentations=tuple(r for r in refs if not ct_uids.intersection(r.referenced_series_uids)),
        other_series=tuple(other),
    )
