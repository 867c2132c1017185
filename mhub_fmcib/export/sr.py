"""The TID 1500 Measurement Report (Comprehensive 3D SR) holding the FMCIB features.

One SR per CT series. Its content tree, built with highdicom::

    Imaging Measurement Report (TID 1500)
      Observation context: device observer "mhub-fmcib"
      Procedure reported: (25045-6, LN, "CT unspecified body region")
      Imaging Measurements
        Measurement Group (TID 1411), one per lesion with features:
          Tracking Identifier      lesion_id
          Tracking Unique Id.      derive_uid("tracking", CT series UID, lesion_id)
          ROI  (exactly one, as TID 1411 requires)
            - Referenced Segment + Source series for segmentation (seed came from a SEG), or
            - Volume Surface: SCOORD3D POINT = the seed (every other seed source)
          Seed point               SCOORD3D POINT (DCM 128139) in the CT's Frame of
                                   Reference; only in groups whose ROI is a segment
                                   (see docs/outputs.md: an extension of TID 1411)
          Finding / Finding site   from the SEG segment, when it has them
          Algorithm (TID 4019)     "mhub-fmcib FMCIB encoder", package version,
                                   parameters = provenance key=value strings
          4096 x NUM               (feature_<n>, 99FMCIB, "FMCIB feature <n>"), unit (1, UCUM)
          k x NUM                  linear-head predictions, (pred-<hash>, 99FMCIB, ...)

Every numeric value is written twice by highdicom: Numeric Value (DS, at most 16
characters) and Floating Point Value (FD, the exact float64 of the float32 feature), so a
reader recovers the features bit-exactly from FD and to >= 10 significant digits from DS.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.charset import default_encoding
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import SegmentationStorage

from ..provenance import Provenance
from ..records import N_FEATURES, CodeTuple, LesionResult, LesionStatus, SeedSource
from .layout import (
    SR_FILE_NAME,
    ExportError,
    atomic_write_dataset,
    check_uid,
    derive_uid,
    dicom_output_dir,
)
from .sr_encoding import (
    NumItemTemplate,
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
UNIT_NONE = hd.sr.CodedConcept("1", "UCUM", "no units")
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

_FEATURE_CONCEPTS: list[hd.sr.CodedConcept] = []


def feature_concept(index: int) -> hd.sr.CodedConcept:
    """Concept name of feature ``index`` (0-based): ``(feature_<index>, 99FMCIB, ...)``."""
    if not _FEATURE_CONCEPTS:
        _FEATURE_CONCEPTS.extend(
            hd.sr.CodedConcept(f"feature_{i}", FMCIB_SCHEME, f"FMCIB feature {i}") for i in range(N_FEATURES)
        )
    return _FEATURE_CONCEPTS[index]


@functools.cache
def feature_templates() -> tuple[NumItemTemplate, ...]:
    """The value-independent encoded parts of every feature's NUM item, built once per process.

    highdicom's ``Measurement`` (the call each group's first feature goes through) builds the
    item of feature 0; the item of feature ``i`` is that item with the Concept Name Code
    Sequence of :func:`feature_concept` ``(i)``. (The tests compare whole SRs with the
    reference encoding, in which highdicom builds every item.)
    """
    item = hd.sr.Measurement(name=feature_concept(0), value=0.0, unit=UNIT_NONE)[0]
    first = template_from_item(item)  # checks the layout; every feature has the same unit
    out = [first]
    for i in range(1, N_FEATURES):
        item.ConceptNameCodeSequence = [feature_concept(i)]
        out.append(NumItemTemplate(head=num_item_head(item), units=first.units))
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


def sr_uids(series_uid: str, results: Sequence[LesionResult], provenance: Provenance) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the SR for this CT series.

    Deterministic in: CT series UID, weights sha256, package version and the lesions
    (ids and seeds), so re-running the same input gives the same UIDs.
    """
    lesions = ";".join(
        f"{r.lesion.lesion_id}@{r.lesion.seed.x!r},{r.lesion.seed.y!r},{r.lesion.seed.z!r}"
        for r in sorted(results, key=lambda r: r.lesion.lesion_id)
    )
    key = (series_uid, provenance.weights_sha256, provenance.package_version, lesions)
    return derive_uid("sr-series", *key), derive_uid("sr-instance", *key)


def _algorithm(provenance: Provenance) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=ALGORITHM_NAME,
        version=provenance.package_version,
        parameters=provenance.as_parameters(),
    )


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


def _group(
    result: LesionResult,
    series_uid: str,
    for_uid: str,
    seg_datasets: Mapping[str, pydicom.Dataset],
    algorithm: hd.sr.AlgorithmIdentification,
    measurements: Sequence[hd.sr.Measurement],
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    lesion = result.lesion
    tracking = hd.sr.TrackingIdentifier(
        uid=lesion_tracking_uid(series_uid, lesion.lesion_id), identifier=lesion.lesion_id[:64]
    )
    source_series = hd.sr.SourceSeriesForSegmentation(series_uid)
    from_seg = (
        lesion.seed_source is SeedSource.SEGMENT_CENTROID
        and lesion.seg_sop_instance_uid is not None
        and lesion.segment_number is not None
    )
    roi: dict[str, object]
    if from_seg:
        seg_uid = str(lesion.seg_sop_instance_uid)
        seg = seg_datasets.get(seg_uid)
        if seg is None:
            raise ExportError(
                f"lesion {lesion.lesion_id!r} comes from SEG {seg_uid} segment "
                f"{lesion.segment_number}, but that SEG was not passed in seg_datasets; pass "
                "every SEG the lesions came from (SOPInstanceUID -> dataset)"
            )
        roi = {
            "referenced_segment": hd.sr.ReferencedSegment(
                sop_class_uid=str(seg.get("SOPClassUID", SegmentationStorage)),
                sop_instance_uid=seg_uid,
                segment_number=int(lesion.segment_number or 0),
                source_series=source_series,
            )
        }
    else:
        roi = {
            "referenced_volume_surface": hd.sr.VolumeSurface(
                graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                graphic_data=lesion.seed.as_array().reshape(1, 3),
                frame_of_reference_uid=for_uid,
                source_series=source_series,
            )
        }
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
#: (about 1 MB of SR, and about 50 ms to build and write on a 2-core machine).
MAX_SR_LESIONS = 50


def build_feature_sr(
    ct_datasets: Sequence[pydicom.Dataset],
    results: Sequence[LesionResult],
    provenance: Provenance,
    seg_datasets: Mapping[str, pydicom.Dataset] | None = None,
    max_lesions: int = MAX_SR_LESIONS,
    reference_encoding: bool = False,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 Measurement Report for one CT series (see the module docstring).

    Args:
        ct_datasets: every instance of the CT series (headers suffice; pixel data unused).
        results: lesion results of this series; failed ones are left out of the SR (they
            are in ``features.csv`` and ``run.json`` with their error).
        provenance: versions and weights sha256 (:func:`mhub_fmcib.provenance.collect_provenance`).
        seg_datasets: SOPInstanceUID -> SEG dataset (headers suffice) for every SEG a
            lesion's seed came from.
        max_lesions: largest number of lesions in one SR.
        reference_encoding: build every feature's NUM item with highdicom and leave the
            encoding to pydicom item by item (about 2 s per lesion) instead of the
            byte-identical fast path of :mod:`.sr_encoding`; the tests compare the two.

    The SR is meant to be written in Explicit VR Little Endian (its file meta says so):
    the groups' Content Sequences hold pre-encoded bytes, which pydicom decodes when they
    are read in memory and writes verbatim.

    Raises:
        ExportError: no OK lesion, more than ``max_lesions`` lesions, a lesion of another
            series, a missing SEG, non-finite values, or CT datasets that do not form one series.
    """
    _study_uid, series_uid, for_uid = series_identity(ct_datasets)
    ok = [r for r in results if r.status is LesionStatus.OK]
    if not ok:
        raise ExportError(f"series {series_uid}: no lesion has features, so there is nothing to report")
    if len(ok) > max_lesions:
        raise ExportError(
            f"series {series_uid}: {len(ok)} lesions exceed the SR limit of {max_lesions} (each lesion adds "
            "4096 measurements, about 1 MB): the SR was not written. The features of every "
            "lesion are in features.csv; pass --sr-max-lesions to write a larger SR."
        )
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
    segs = dict(seg_datasets or {})
    algorithm = _algorithm(provenance)
    # highdicom's SR constructor deep-copies and re-parses the whole content tree, and
    # building plus encoding 4096 NUM items per lesion item by item takes about 2 s. The
    # groups are therefore built by highdicom with their first feature only; the other
    # features (and the predictions) are added to each group after the SR is built, encoded
    # by sr_encoding (byte-identical to highdicom + pydicom; ``reference_encoding`` builds
    # them the slow way, item by item). They reference no instance, so the evidence
    # highdicom collects is the same.
    groups: list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations] = []
    values: list[np.ndarray] = []
    for r in ok:
        feats = _feature_values(r)
        first = hd.sr.Measurement(name=feature_concept(0), value=float(feats[0]), unit=UNIT_NONE)
        groups.append(_group(r, series_uid, for_uid, segs, algorithm, [first]))
        values.append(feats)

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derive_uid("device", MODEL_NAME, provenance.package_version),
        name=MODEL_NAME,
        manufacturer_name=MANUFACTURER,
        model_name=MODEL_NAME,
    )
    observation_context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=PROCEDURE_REPORTED,
        imaging_measurements=groups,
    )
    used_segs = {
        str(r.lesion.seg_sop_instance_uid)
        for r in ok
        if r.lesion.seed_source is SeedSource.SEGMENT_CENTROID and r.lesion.seg_sop_instance_uid
    }
    evidence = [header_copy(ct_datasets[0]), *ct_datasets[1:]]
    evidence += [header_copy(segs[u]) for u in sorted(used_segs)]
    sr_series_uid, sr_sop_uid = sr_uids(series_uid, ok, provenance)
    equipment = hd.ContributingEquipment(
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
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=sr_series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sr_sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SR_SERIES_DESCRIPTION,
        contributing_equipment=[equipment],
        manufacturer_model_name=MODEL_NAME,
        software_versions=provenance.package_version,
    )
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
    else:
        charset = sr.get("SpecificCharacterSet") or default_encoding
        templates = feature_templates()[1:]
        for group_item, r, feats in zip(sr_groups, ok, values, strict=True):
            encoded = (
                encode_items(list(group_item.ContentSequence), charset)
                + encode_num_items(templates, feats[1:])
                + encode_items([m[0] for m in _prediction_measurements(r)], charset)
            )
            group_item[CONTENT_SEQUENCE_TAG] = raw_content_sequence(encoded)
            declare_explicit_vr_little_endian(group_item)
        declare_explicit_vr_little_endian(container)
        declare_explicit_vr_little_endian(sr)
    sr.CodingSchemeIdentificationSequence = [coding_scheme_identification()]
    return sr


def write_sr(sr: pydicom.Dataset, output_root: Path) -> Path:
    """Write ``sr`` to ``OUTPUT/dicom/<Study>/<CT series>/fmcib_features_SR.dcm`` atomically.

    The CT series is the one the SR's measurements reference (Source series for
    segmentation of its first measurement group); returns the file's path.
    """
    ct_series = _referenced_ct_series(sr)
    folder = dicom_output_dir(output_root, str(sr.StudyInstanceUID), ct_series)
    return atomic_write_dataset(sr, folder / SR_FILE_NAME)


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
