"""The TID 1500 Measurement Report (Comprehensive 3D SR) holding the FMCIB features.

One SR per CT series; a series with more than ``--sr-max-lesions`` lesions (default 50)
gets several, each holding up to that many of its lesions, in one SR series and cross-
referenced (:func:`build_feature_srs`). The content tree, built with highdicom::

    Imaging Measurement Report (TID 1500)
      Observation context: device observer "mhub-fmcib"
      Procedure reported: (25045-6, LN, "CT unspecified body region")
      Imaging Measurements
        Measurement Group (TID 1411), one per lesion with features:
          Tracking Identifier      the lesion's label, e.g. "FMCIB lesion 2 - Nodule (SEG #3)"
                                   (:mod:`.labels`: unique in the SR, <= 64 characters)
          Tracking Unique Id.      derive_uid("tracking", CT series UID, lesion_id)
          ROI  (exactly one, as TID 1411 requires)
            - Referenced Segment + Source series for segmentation (seed came from a SEG), or
            - Volume Surface: SCOORD3D POINT = the seed (every other seed source)
          Seed point               SCOORD3D POINT (DCM 128139) in the CT's Frame of
                                   Reference; only in groups whose ROI is a segment
                                   (see docs/outputs.md: an extension of TID 1411)
          Finding / Finding site   from the SEG segment, when it has them
          Algorithm (TID 4019)     "mhub-fmcib FMCIB encoder", package version,
                                   parameters = provenance key=value strings (first a
                                   "demonstration=..." one for random-initialised weights),
                                   then "precision=fp32|bf16|fp16" (the encoder arithmetic)
          4096 x NUM               (feature_<n>, 99FMCIB, "FMCIB feature <n>"), unit (1, UCUM)
          k x NUM                  linear-head predictions, (pred-<hash>, 99FMCIB, ...)
          3 x NUM                  the seed: (seed-x-lps, 99FMCIB, "Seed point x (LPS)"), y, z;
                                   unit (mm, UCUM): what dcmqi and 3D Slicer's tables show

Every numeric value is written twice by highdicom: Numeric Value (DS, at most 16
characters) and Floating Point Value (FD, the exact float64 of the float32 feature), so a
reader recovers the features bit-exactly from FD and to >= 10 significant digits from DS.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.charset import default_encoding
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from ..config import Precision
from ..provenance import Provenance
from ..records import N_FEATURES, CodeTuple, Lesion, LesionResult, LesionStatus, SeedSource
from .atomic import write_each
from .labels import lesion_labels
from .layout import (
    SR_FILE_NAME,
    ExportError,
    atomic_write_dataset,
    check_uid,
    derive_uid,
    dicom_output_dir,
    sr_file_name,
)
from .sr_encoding import (
    NumItemTemplate,
    concept_head_template,
    declare_explicit_vr_little_endian,
    encode_items,
    encode_num_items,
    num_item_head,
    raw_content_sequence,
    template_from_item,
)

#: Private coding scheme of the feature and prediction codes (PS3.3 8.2.2: "99" prefix).
FMCIB_SCHEME = "99FMCIB"
FMCIB_SCHEME_NAME = "mhub-fmcib FMCIB feature and prediction codes"
FMCIB_SCHEME_ORG = "mhub-fmcib developers"
FMCIB_SCHEME_VERSION = "1"
#: Manufacturer / model written into every DICOM output.
MANUFACTURER = "mhub-fmcib developers"
MODEL_NAME = "mhub-fmcib"
ALGORITHM_NAME = "mhub-fmcib FMCIB encoder"
SR_SERIES_NUMBER = 9501
SR_SERIES_DESCRIPTION = "FMCIB features - research use only, not for diagnosis"
#: Series description of a demonstration run (random-initialised weights).
DEMO_SR_SERIES_DESCRIPTION = "DEMONSTRATION random weights - features are not FMCIB"
#: First algorithm parameter of a demonstration run.
DEMO_PARAMETER = "demonstration=random-initialised weights: the features are meaningless"
UNIT_NONE = hd.sr.CodedConcept("1", "UCUM", "no units")
UNIT_MM = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
#: Concept names of the seed's LPS coordinates (NUM items in mm).
SEED_CONCEPTS = tuple(
    hd.sr.CodedConcept(f"seed-{axis}-lps", FMCIB_SCHEME, f"Seed point {axis} (LPS)") for axis in "xyz"
)
SEED_POINT = codes.DCM.SeedPoint
PROCEDURE_REPORTED = codes.LN.CTUnspecifiedBodyRegion
CONTENT_SEQUENCE_TAG = Tag(0x0040, 0xA730)

#: Type 2 attributes of the Patient and General Study modules that highdicom copies from
#: the CT; anonymised CTs often lack them, and an empty value is valid for Type 2.
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def feature_code(index: int) -> tuple[str, str]:
    """(Code Value, Code Meaning) of feature ``index`` (0-based) in :data:`FMCIB_SCHEME`."""
    return f"feature_{index}", f"FMCIB feature {index}"


@functools.cache
def feature_concept(index: int) -> hd.sr.CodedConcept:
    """Concept name of feature ``index`` (0-based): ``(feature_<index>, 99FMCIB, ...)``,
    built when first asked for."""
    value, meaning = feature_code(index)
    return hd.sr.CodedConcept(value, FMCIB_SCHEME, meaning)


#: Features whose template heads are compared with pydicom's encoding of the highdicom item
#: each time the templates are built (all 4096 in the tests).
_SPOT_CHECKED = (1, 9, 10, 99, 100, 999, 1000, N_FEATURES - 1)


@functools.cache
def feature_templates() -> tuple[NumItemTemplate, ...]:
    """The value-independent encoded parts of every feature's NUM item, built on the first
    call (the first SR of a process) and kept.

    highdicom's ``Measurement`` (the call each group's first feature goes through) builds the
    item of feature 0; the item of feature ``i`` is that item with the Concept Name Code
    Sequence of :func:`feature_concept` ``(i)``, whose head :func:`concept_head_template`
    fills in (checked against pydicom for :data:`_SPOT_CHECKED`; the tests compare all
    4096 and whole SRs with the reference encoding, in which highdicom builds every item).

    Raises:
        ExportError: a spot-checked head differs from pydicom's encoding.
    """
    item = hd.sr.Measurement(name=feature_concept(0), value=0.0, unit=UNIT_NONE)[0]
    first = template_from_item(item)  # checks the layout; every feature has the same unit
    heads = concept_head_template(item)
    out = [first]
    out.extend(NumItemTemplate(head=heads.head(*feature_code(i)), units=first.units) for i in range(1, N_FEATURES))
    for i in _SPOT_CHECKED:
        item.ConceptNameCodeSequence = [feature_concept(i)]
        if num_item_head(item) != out[i].head:
            raise ExportError(
                f"internal error: the SR encoder's template of feature {i} differs from pydicom's "
                "encoding; install the pydicom and highdicom versions pinned in requirements/ or report this"
            )
    return tuple(out)


def prediction_concept(name: str) -> hd.sr.CodedConcept:
    """Concept name of the prediction of linear head ``name``.

    Code Value is ``pred-`` + 11 hex digits of sha1(name) (SH allows 16 characters);
    the meaning carries the name (cut to the 64 characters LO allows).
    """
    code = "pred-" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:11]
    return hd.sr.CodedConcept(code, FMCIB_SCHEME, f"FMCIB prediction {name}"[:64])


def coding_scheme_identification() -> pydicom.Dataset:
    """The CodingSchemeIdentificationSequence item that declares :data:`FMCIB_SCHEME`."""
    item = pydicom.Dataset()
    item.CodingSchemeDesignator = FMCIB_SCHEME
    item.CodingSchemeName = FMCIB_SCHEME_NAME
    item.CodingSchemeVersion = FMCIB_SCHEME_VERSION
    item.CodingSchemeResponsibleOrganization = FMCIB_SCHEME_ORG
    return item


def _concept(code: CodeTuple) -> hd.sr.CodedConcept:
    value, scheme, meaning = code
    return hd.sr.CodedConcept(value, scheme, meaning)


def series_identity(ct_datasets: Sequence[pydicom.Dataset]) -> tuple[str, str, str]:
    """(StudyInstanceUID, SeriesInstanceUID, FrameOfReferenceUID) shared by every dataset.

    Raises :class:`ExportError` naming the attribute when one is missing, invalid, or
    differs between the datasets.
    """
    if len(ct_datasets) == 0:
        raise ExportError("no CT datasets given: pass the CT series the lesions were measured on")
    out: list[str] = []
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(kw, "") or "") for ds in ct_datasets}
        if len(values) != 1 or "" in values:
            raise ExportError(
                f"the CT datasets do not share one {kw} (seen: {sorted(values)}); pass the "
                "datasets of exactly one CT series, each with its study, series and frame of "
                "reference UIDs"
            )
        out.append(check_uid(values.pop(), kw))
    return out[0], out[1], out[2]


def header_copy(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Deep copy of ``ds`` without pixel data, with missing Type 2 patient/study
    attributes added as empty values (so anonymised CTs give valid outputs)."""
    out = pydicom.Dataset()
    for elem in ds:
        if elem.tag.group == 0x7FE0:
            continue
        out.add(copy.deepcopy(elem))
    for kw in _TYPE2_COPIED:
        if kw not in out or out[kw].value is None:
            setattr(out, kw, "")
    return out


def lesion_tracking_uid(series_uid: str, lesion_id: str) -> str:
    """Tracking Unique Identifier of a lesion: stable across re-runs on the same input."""
    return derive_uid("tracking", series_uid, lesion_id)


def _uid_key(
    series_uid: str, results: Sequence[LesionResult], provenance: Provenance, precision: Precision
) -> tuple[str, ...]:
    """What the SR UIDs of a CT series are derived from: CT series UID, weights sha256,
    package version, the lesions (ids and seeds) and, when it is not fp32, the precision."""
    lesions = ";".join(
        f"{r.lesion.lesion_id}@{r.lesion.seed.x!r},{r.lesion.seed.y!r},{r.lesion.seed.z!r}"
        for r in sorted(results, key=lambda r: r.lesion.lesion_id)
    )
    key = (series_uid, provenance.weights_sha256, provenance.package_version, lesions)
    return key if precision is Precision.FP32 else (*key, f"precision={precision.value}")


def sr_uids(
    series_uid: str, results: Sequence[LesionResult], provenance: Provenance, precision: Precision = Precision.FP32
) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the SR for this CT series. A series split into
    several SRs keeps this Series Instance UID; its parts' SOP Instance UIDs are
    :func:`sr_part_uid`'s.

    Deterministic in: CT series UID, weights sha256, package version, the lesions (ids and
    seeds) and a precision other than fp32, so re-running the same input gives the same UIDs.
    """
    key = _uid_key(series_uid, results, provenance, precision)
    return derive_uid("sr-series", *key), derive_uid("sr-instance", *key)


def sr_part_uid(
    series_uid: str,
    results: Sequence[LesionResult],
    provenance: Provenance,
    part: int,
    parts: int,
    precision: Precision = Precision.FP32,
) -> str:
    """SOPInstanceUID of SR ``part`` (1-based) of ``parts``: :func:`sr_uids`'s for a single
    SR, else derived from the same key and "part i of n"."""
    if parts == 1:
        return sr_uids(series_uid, results, provenance, precision)[1]
    return derive_uid("sr-instance", *_uid_key(series_uid, results, provenance, precision), f"part {part} of {parts}")


def _algorithm(
    provenance: Provenance, demonstration: bool = False, precision: Precision = Precision.FP32
) -> hd.sr.AlgorithmIdentification:
    """TID 4019: name, package version, parameters = the provenance's ``key=value`` strings
    (first a demonstration one for random-initialised weights), then ``precision=<p>``."""
    params = [*provenance.as_parameters(), f"precision={precision.value}"]
    if demonstration:
        params = [DEMO_PARAMETER, *params]
    return hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=provenance.package_version, parameters=params)


def _seed_measurements(result: LesionResult) -> list[hd.sr.Measurement]:
    """The seed as three NUM items in mm (LPS x, y, z): readers that show numbers but not
    SCOORD3D (dcmqi, 3D Slicer's tables) show the seed this way."""
    seed = result.lesion.seed
    return [
        hd.sr.Measurement(name=concept, value=float(v), unit=UNIT_MM)
        for concept, v in zip(SEED_CONCEPTS, (seed.x, seed.y, seed.z), strict=True)
    ]


def _feature_values(result: LesionResult) -> np.ndarray:
    """The lesion's 4096 features as float64 (exactly the float32 values), checked finite."""
    feats = np.asarray(result.features, dtype=np.float32)
    if feats.shape != (N_FEATURES,):
        raise ExportError(
            f"lesion {result.lesion.lesion_id!r}: {feats.shape} features, expected ({N_FEATURES},); "
            "pass the encoder's 4096 features"
        )
    if not np.all(np.isfinite(feats)):
        bad = int(np.count_nonzero(~np.isfinite(feats)))
        raise ExportError(
            f"lesion {result.lesion.lesion_id!r}: {bad} of its features are NaN or infinite; "
            "DICOM numeric values must be finite - check the input image and weights"
        )
    return feats.astype(np.float64)


def _prediction_measurements(result: LesionResult) -> list[hd.sr.Measurement]:
    out = []
    for name, value in result.predictions:
        if not np.isfinite(value):
            raise ExportError(
                f"lesion {result.lesion.lesion_id!r}: prediction {name!r} is {value}; predictions must be finite"
            )
        out.append(hd.sr.Measurement(name=prediction_concept(name), value=float(value), unit=UNIT_NONE))
    return out


def _seed_item(result: LesionResult, for_uid: str) -> hd.sr.Scoord3DContentItem:
    return hd.sr.Scoord3DContentItem(
        name=SEED_POINT,
        graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=result.lesion.seed.as_array().reshape(1, 3),
        frame_of_reference_uid=for_uid,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


def _seed_from_seg(lesion: Lesion) -> bool:
    """Whether the lesion's seed is the centre of a SEG segment (its ROI is then that segment)."""
    return (
        lesion.seed_source is SeedSource.SEGMENT_CENTROID
        and lesion.seg_sop_instance_uid is not None
        and lesion.segment_number is not None
    )


def _roi(
    result: LesionResult,
    series_uid: str,
    for_uid: str,
    seg_datasets: Mapping[str, pydicom.Dataset],
    from_seg: bool,
) -> dict[str, object]:
    """The group's one ROI (TID 1411): the referenced segment, or the seed as a volume surface."""
    lesion = result.lesion
    source_series = hd.sr.SourceSeriesForSegmentation(series_uid)
    if not from_seg:
        return {
            "referenced_volume_surface": hd.sr.VolumeSurface(
                graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                graphic_data=lesion.seed.as_array().reshape(1, 3),
                frame_of_reference_uid=for_uid,
                source_series=source_series,
            )
        }
    seg_uid = str(lesion.seg_sop_instance_uid)
    seg = seg_datasets.get(seg_uid)
    if seg is None:
        raise ExportError(
            f"lesion {lesion.lesion_id!r} comes from SEG {seg_uid} segment "
            f"{lesion.segment_number}, but that SEG was not passed in seg_datasets; pass "
            "every SEG the lesions came from (SOPInstanceUID -> dataset)"
        )
    return {
        "referenced_segment": hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.get("SOPClassUID", SegmentationStorage)),
            sop_instance_uid=seg_uid,
            segment_number=int(lesion.segment_number or 0),
            source_series=source_series,
        )
    }


def _group(
    result: LesionResult,
    label: str,
    series_uid: str,
    for_uid: str,
    seg_datasets: Mapping[str, pydicom.Dataset],
    algorithm: hd.sr.AlgorithmIdentification,
    measurements: Sequence[hd.sr.Measurement],
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    lesion = result.lesion
    tracking = hd.sr.TrackingIdentifier(uid=lesion_tracking_uid(series_uid, lesion.lesion_id), identifier=label)
    from_seg = _seed_from_seg(lesion)
    roi = _roi(result, series_uid, for_uid, seg_datasets, from_seg)
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        finding_type=_concept(lesion.finding_type) if lesion.finding_type else None,
        finding_sites=([hd.sr.FindingSite(_concept(lesion.finding_site))] if lesion.finding_site else None),
        algorithm_id=algorithm,
        measurements=list(measurements),
        **roi,  # type: ignore[arg-type]
    )
    if from_seg:
        # TID 1411 allows one ROI reference; the seed goes in its own SCOORD3D item, placed
        # before the measurements (see the module docstring and docs/outputs.md).
        items = group[0].ContentSequence
        first_num = next(i for i, it in enumerate(items) if it.ValueType == "NUM")
        items.insert(first_num, _seed_item(result, for_uid))
    return group


#: Default largest number of lesions in one SR: each lesion adds 4096 numeric measurements
#: (about 1 MB of SR, and about 30 ms to build and write on a 2-core machine). A series
#: with more lesions gets several SRs (:func:`build_feature_srs`).
MAX_SR_LESIONS = 50


@dataclass(frozen=True, eq=False)
class _SeriesLesions:
    """The checked input of a series' SRs: the CT series' identity and its OK lesions, in order."""

    study_uid: str
    series_uid: str
    for_uid: str
    ok: tuple[LesionResult, ...]


@dataclass(frozen=True, eq=False)
class _SrSettings:
    """What every SR of a series shares."""

    labels: Mapping[str, str]
    segs: Mapping[str, pydicom.Dataset]
    provenance: Provenance
    algorithm: hd.sr.AlgorithmIdentification
    sr_series_uid: str
    demonstration: bool
    reference_encoding: bool


@dataclass(frozen=True, eq=False)
class SrPart:
    """SR ``number`` (1-based) of the ``parts`` SRs of one CT series
    (:func:`iter_feature_srs`)."""

    sr: hd.sr.Comprehensive3DSR
    number: int
    parts: int

    @property
    def file_name(self) -> str:
        """:func:`~.layout.sr_file_name` of this part."""
        return sr_file_name(self.number, self.parts)


def iter_feature_srs(
    ct_datasets: Sequence[pydicom.Dataset],
    results: Sequence[LesionResult],
    provenance: Provenance,
    seg_datasets: Mapping[str, pydicom.Dataset] | None = None,
    max_lesions: int = MAX_SR_LESIONS,
    reference_encoding: bool = False,
    demonstration: bool = False,
    precision: Precision = Precision.FP32,
) -> Iterator[SrPart]:
    """The TID 1500 Measurement Report(s) of one CT series, built one at a time: every OK
    lesion in exactly one.

    Up to ``max_lesions`` OK lesions give one SR (:func:`build_feature_sr`). More are split,
    in their order, into SRs of ``max_lesions`` each and one with the rest (60 lesions, limit
    50: 50 + 10). The parts form one SR series (same Series Instance UID, InstanceNumber 1,
    2, ...), each with its own lesions' measurement groups and evidence (the CT series and
    the SEGs its lesions came from); each lists the other parts in its Pertinent Other
    Evidence Sequence (docs/outputs.md says why that attribute). Every part's UID is known
    before any is built, so a part is complete when it is yielded: a caller that writes
    each part and drops it holds one part in memory (50 lesions are about 50 MB), not all.

    Args:
        ct_datasets, results, provenance, seg_datasets, reference_encoding, demonstration:
            as for :func:`build_feature_sr`.
        max_lesions: largest number of lesions in one SR (at least 1).
        precision: the encoder arithmetic, recorded as the algorithm parameter
            ``precision=<fp32|bf16|fp16>`` of every measurement group.

    Raises:
        ExportError: as :func:`build_feature_sr`, or ``max_lesions`` below 1 (before the
            first part is yielded).
    """
    if max_lesions < 1:
        raise ExportError(f"the SR lesion limit must be at least 1, got {max_lesions}; pass --sr-max-lesions 1 or more")
    checked = _checked_lesions(ct_datasets, results)
    chunks = [checked.ok[i : i + max_lesions] for i in range(0, len(checked.ok), max_lesions)]
    settings = _SrSettings(
        labels={lesion_id: label.text for lesion_id, label in lesion_labels(results).items()},
        segs=dict(seg_datasets or {}),
        provenance=provenance,
        algorithm=_algorithm(provenance, demonstration, precision),
        sr_series_uid=sr_uids(checked.series_uid, checked.ok, provenance, precision)[0],
        demonstration=demonstration,
        reference_encoding=reference_encoding,
    )
    uids = [
        sr_part_uid(checked.series_uid, checked.ok, provenance, n, len(chunks), precision)
        for n in range(1, len(chunks) + 1)
    ]
    for number, (chunk, uid) in enumerate(zip(chunks, uids, strict=True), start=1):
        sr = _build_part(ct_datasets, checked, chunk, uid, number, settings)
        if len(chunks) > 1:
            others = [u for u in uids if u != uid]
            sr.PertinentOtherEvidenceSequence = [_references_to(checked.study_uid, settings.sr_series_uid, others)]
        yield SrPart(sr, number, len(chunks))
        del sr  # not held while the next part is built


def build_feature_srs(
    ct_datasets: Sequence[pydicom.Dataset],
    results: Sequence[LesionResult],
    provenance: Provenance,
    seg_datasets: Mapping[str, pydicom.Dataset] | None = None,
    max_lesions: int = MAX_SR_LESIONS,
    reference_encoding: bool = False,
    demonstration: bool = False,
    precision: Precision = Precision.FP32,
) -> tuple[hd.sr.Comprehensive3DSR, ...]:
    """Every SR of :func:`iter_feature_srs` (same arguments), all in memory; the exporter
    writes them one at a time instead (:func:`write_feature_srs`)."""
    parts = iter_feature_srs(
        ct_datasets, results, provenance, seg_datasets, max_lesions, reference_encoding, demonstration, precision
    )
    return tuple(part.sr for part in parts)


def build_feature_sr(
    ct_datasets: Sequence[pydicom.Dataset],
    results: Sequence[LesionResult],
    provenance: Provenance,
    seg_datasets: Mapping[str, pydicom.Dataset] | None = None,
    max_lesions: int = MAX_SR_LESIONS,
    reference_encoding: bool = False,
    demonstration: bool = False,
    precision: Precision = Precision.FP32,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 Measurement Report for one CT series (see the module docstring), for at
    most ``max_lesions`` OK lesions (:func:`build_feature_srs` splits more into several SRs).

    Args:
        ct_datasets: every instance of the CT series (headers suffice; pixel data unused).
        results: lesion results of this series; failed ones are left out of the SR (they
            are in ``features.csv`` and ``run.json`` with their error).
        provenance: versions and weights sha256 (:func:`mhub_fmcib.provenance.collect_provenance`).
        seg_datasets: SOPInstanceUID -> SEG dataset (headers suffice) for every SEG a
            lesion's seed came from.
        max_lesions: largest number of lesions in this SR.
        reference_encoding: build every feature's NUM item with highdicom and leave the
            encoding to pydicom item by item (about 2 s per lesion) instead of the
            byte-identical fast path of :mod:`.sr_encoding`; the tests compare the two.
        demonstration: the features come from random-initialised weights (a demonstration
            run): the series description and the algorithm parameters say so.
        precision: the encoder arithmetic (algorithm parameter ``precision=...``).

    The SR is meant to be written in Explicit VR Little Endian (its file meta says so):
    the groups' Content Sequences hold pre-encoded bytes, which pydicom decodes when they
    are read in memory and writes verbatim.

    Steps: check the lesions, build each group with its first feature, build the SR around
    them, then add the other features and the predictions to each group.

    Raises:
        ExportError: no OK lesion, more than ``max_lesions`` lesions, a lesion of another
            series, a missing SEG, non-finite values, or CT datasets that do not form one series.
    """
    checked = _checked_lesions(ct_datasets, results)
    if len(checked.ok) > max_lesions:
        raise ExportError(
            f"series {checked.series_uid}: {len(checked.ok)} lesions exceed the limit of {max_lesions} "
            "lesions in one SR; build_feature_srs writes them into several SRs"
        )
    (sr,) = build_feature_srs(
        ct_datasets, results, provenance, seg_datasets, max_lesions, reference_encoding, demonstration, precision
    )
    return sr


def _build_part(
    ct_datasets: Sequence[pydicom.Dataset],
    checked: _SeriesLesions,
    lesions: Sequence[LesionResult],
    sop_uid: str,
    instance_number: int,
    settings: _SrSettings,
) -> hd.sr.Comprehensive3DSR:
    """One SR holding ``lesions`` (some or all of the series' OK lesions)."""
    # highdicom's SR constructor deep-copies and re-parses the whole content tree, and
    # building plus encoding 4096 NUM items per lesion item by item takes about 2 s. The
    # groups are therefore built by highdicom with their first feature only; the other
    # features (and the predictions) are added to each group after the SR is built, encoded
    # by sr_encoding (byte-identical to highdicom + pydicom; ``reference_encoding`` builds
    # them the slow way, item by item). They reference no instance, so the evidence
    # highdicom collects is the same.
    values = [_feature_values(r) for r in lesions]
    groups = _first_feature_groups(checked, lesions, values, settings)
    sr = _measurement_report_sr(ct_datasets, lesions, groups, sop_uid, instance_number, settings)
    _add_remaining_measurements(sr, lesions, values, settings.reference_encoding)
    sr.CodingSchemeIdentificationSequence = [coding_scheme_identification()]
    return sr


def _references_to(study_uid: str, series_uid: str, sop_uids: Sequence[str]) -> pydicom.Dataset:
    """A Hierarchical SOP Instance Reference (PS3.3 C.17.2.1) item: the Comprehensive 3D SRs
    ``sop_uids`` of series ``series_uid`` of study ``study_uid``."""
    series = pydicom.Dataset()
    series.SeriesInstanceUID = series_uid
    refs = []
    for uid in sop_uids:
        ref = pydicom.Dataset()
        ref.ReferencedSOPClassUID = Comprehensive3DSRStorage
        ref.ReferencedSOPInstanceUID = uid
        refs.append(ref)
    series.ReferencedSOPSequence = refs
    item = pydicom.Dataset()
    item.StudyInstanceUID = study_uid
    item.ReferencedSeriesSequence = [series]
    return item


def _checked_lesions(ct_datasets: Sequence[pydicom.Dataset], results: Sequence[LesionResult]) -> _SeriesLesions:
    """The series identity and the OK lesions; raises :class:`ExportError` when there is no
    OK lesion, duplicate ids, or a lesion of another series."""
    study_uid, series_uid, for_uid = series_identity(ct_datasets)
    ok = [r for r in results if r.status is LesionStatus.OK]
    if not ok:
        raise ExportError(f"series {series_uid}: no lesion has features, so there is nothing to report")
    ids = [r.lesion.lesion_id for r in ok]
    if len(set(ids)) != len(ids):
        raise ExportError(f"series {series_uid}: lesion ids are not unique: {sorted(ids)}")
    for r in ok:
        for attr, want in (
            ("series_instance_uid", series_uid),
            ("frame_of_reference_uid", for_uid),
        ):
            have = getattr(r.lesion, attr)
            if have is not None and have != want:
                raise ExportError(
                    f"lesion {r.lesion.lesion_id!r} has {attr} {have}, but the CT series has "
                    f"{want}; pass each series' own lesions"
                )
    return _SeriesLesions(study_uid, series_uid, for_uid, tuple(ok))


def _first_feature_groups(
    checked: _SeriesLesions,
    lesions: Sequence[LesionResult],
    values: Sequence[np.ndarray],
    settings: _SrSettings,
) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    """One measurement group per lesion, holding its first feature only."""
    groups = []
    for r, feats in zip(lesions, values, strict=True):
        first = hd.sr.Measurement(name=feature_concept(0), value=float(feats[0]), unit=UNIT_NONE)
        label = settings.labels[r.lesion.lesion_id]
        groups.append(_group(r, label, checked.series_uid, checked.for_uid, settings.segs, settings.algorithm, [first]))
    return groups


def _observation_context(provenance: Provenance) -> hd.sr.ObservationContext:
    """The device observer "mhub-fmcib"."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derive_uid("device", MODEL_NAME, provenance.package_version),
        name=MODEL_NAME,
        manufacturer_name=MANUFACTURER,
        model_name=MODEL_NAME,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _evidence(
    ct_datasets: Sequence[pydicom.Dataset], ok: Sequence[LesionResult], segs: Mapping[str, pydicom.Dataset]
) -> list[pydicom.Dataset]:
    """The instances the SR references: the CT series (first one a header copy) and the SEGs
    the seeds came from."""
    used_segs = {
        str(r.lesion.seg_sop_instance_uid)
        for r in ok
        if r.lesion.seed_source is SeedSource.SEGMENT_CENTROID and r.lesion.seg_sop_instance_uid
    }
    evidence = [header_copy(ct_datasets[0]), *ct_datasets[1:]]
    return evidence + [header_copy(segs[u]) for u in sorted(used_segs)]


def _equipment(provenance: Provenance) -> hd.ContributingEquipment:
    """Contributing Equipment (IHE AIR style): mhub-fmcib as processing equipment."""
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=MODEL_NAME,
        software_versions=[
            provenance.package_version,
            f"torch {provenance.torch_version}",
            f"highdicom {provenance.highdicom_version}",
            f"pydicom {provenance.pydicom_version}",
        ],
        contribution_description=("FMCIB foundation-model features; weights sha256 " + provenance.weights_sha256)[
            :1024
        ],
    )


def _measurement_report_sr(
    ct_datasets: Sequence[pydicom.Dataset],
    lesions: Sequence[LesionResult],
    groups: Sequence[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations],
    sop_uid: str,
    instance_number: int,
    settings: _SrSettings,
) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR holding the TID 1500 report of ``groups``."""
    provenance = settings.provenance
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(provenance),
        procedure_reported=PROCEDURE_REPORTED,
        imaging_measurements=list(groups),
    )
    return hd.sr.Comprehensive3DSR(
        evidence=_evidence(ct_datasets, lesions, settings.segs),
        content=report[0],
        series_instance_uid=settings.sr_series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=DEMO_SR_SERIES_DESCRIPTION if settings.demonstration else SR_SERIES_DESCRIPTION,
        contributing_equipment=[_equipment(provenance)],
        manufacturer_model_name=MODEL_NAME,
        software_versions=provenance.package_version,
    )


def _add_remaining_measurements(
    sr: hd.sr.Comprehensive3DSR,
    ok: Sequence[LesionResult],
    values: Sequence[np.ndarray],
    reference_encoding: bool,
) -> None:
    """Append features 1..4095 and the predictions to each group of ``sr`` (in place)."""
    container = sr.ContentSequence[-1]
    sr_groups = container.ContentSequence
    if len(sr_groups) != len(ok):
        raise ExportError("internal error: the SR's measurement groups do not match the lesions")
    if reference_encoding:
        for group_item, r, feats in zip(sr_groups, ok, values, strict=True):
            group_item.ContentSequence.extend(
                hd.sr.Measurement(name=feature_concept(i), value=float(feats[i]), unit=UNIT_NONE)[0]
                for i in range(1, N_FEATURES)
            )
            group_item.ContentSequence.extend(m[0] for m in _prediction_measurements(r))
            group_item.ContentSequence.extend(m[0] for m in _seed_measurements(r))
        return
    charset = sr.get("SpecificCharacterSet") or default_encoding
    templates = feature_templates()[1:]
    for group_item, r, feats in zip(sr_groups, ok, values, strict=True):
        encoded = (
            encode_items(list(group_item.ContentSequence), charset)
            + encode_num_items(templates, feats[1:])
            + encode_items([m[0] for m in _prediction_measurements(r)], charset)
            + encode_items([m[0] for m in _seed_measurements(r)], charset)
        )
        group_item[CONTENT_SEQUENCE_TAG] = raw_content_sequence(encoded)
        declare_explicit_vr_little_endian(group_item)
    declare_explicit_vr_little_endian(container)
    declare_explicit_vr_little_endian(sr)


def write_sr(sr: pydicom.Dataset, output_root: Path, file_name: str = SR_FILE_NAME) -> Path:
    """Write ``sr`` to ``OUTPUT/dicom/<Study>/<CT series>/<file_name>`` atomically
    (default ``fmcib_features_SR.dcm``).

    The CT series is the one the SR's measurements reference (Source series for
    segmentation of its first measurement group); returns the file's path.
    """
    ct_series = _referenced_ct_series(sr)
    folder = dicom_output_dir(output_root, str(sr.StudyInstanceUID), ct_series)
    return atomic_write_dataset(sr, folder / file_name)


def write_srs(srs: Sequence[pydicom.Dataset], output_root: Path) -> list[Path]:
    """Write the SRs of one CT series (:func:`build_feature_srs`), named by
    :func:`~.layout.sr_file_name`: ``fmcib_features_SR.dcm`` for one,
    ``fmcib_features_SR_part<i>of<n>.dcm`` for several; returns their paths in order."""
    return [write_sr(sr, output_root, sr_file_name(n, len(srs))) for n, sr in enumerate(srs, start=1)]


def write_feature_srs(parts: Iterable[SrPart], output_root: Path) -> list[Path]:
    """Write each part of :func:`iter_feature_srs` as soon as it is built (named as by
    :func:`write_srs`) and drop it before the next is built; returns their paths in order.
    If building or writing a part fails, the parts already written are removed (a series
    never keeps SRs that reference a part that does not exist) and the error is raised
    (:func:`~.atomic.write_each`)."""
    return write_each(parts, lambda part: write_sr(part.sr, output_root, part.file_name))


def _referenced_ct_series(sr: pydicom.Dataset) -> str:
    for item in sr.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in item.get("ReferencedSeriesSequence", []):
            sops = series.get("ReferencedSOPSequence", [])
            if sops and all(s.ReferencedSOPClassUID != SegmentationStorage for s in sops):
                return str(series.SeriesInstanceUID)
    raise ExportError(
        "the SR does not reference a CT series in CurrentRequestedProcedureEvidenceSequence; "
        "build it with build_feature_sr"
    )
