"""meta.json: valid against MHub.ai's schema (formats checked) and true to the model.

The schema is MHub's own (``../shared/mhub/meta.schema.json``); the validator class is the
one its ``$schema`` names, with that draft's format checker. The truthfulness checks compare
the card with facts held elsewhere: the encoder's output size and parameter count
(mhub_fmcib.encoder, built here), the package version (pyproject.toml) and the licences and
citation of the published model.
"""

from __future__ import annotations

import copy
import json
import tomllib
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from jsonschema.validators import validator_for

from mhub_fmcib.records import N_FEATURES

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT.parent / "shared" / "mhub" / "meta.schema.json"
META_PATH = ROOT / "meta.json"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    if not SCHEMA_PATH.is_file():
        pytest.fail(f"MHub's schema is expected at {SCHEMA_PATH} (the project's shared/ folder)")
    return json.loads(SCHEMA_PATH.read_text())


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    return json.loads(META_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = validator_for(schema)
    assert cls is jsonschema.Draft7Validator  # what the schema's $schema declares
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_formats_used_by_the_schema_are_really_checked(
    validator: jsonschema.protocols.Validator,
) -> None:
    # Without jsonschema's [format] extra, "uri" would pass silently.
    checker = validator.format_checker
    assert checker is not None
    assert {"uri", "date"} <= set(checker.checkers)
    assert not checker.conforms("not a uri", "uri")
    assert not checker.conforms("18.01.2024", "date")


def test_meta_json_is_valid(validator: jsonschema.protocols.Validator, meta: dict) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(meta)]
    assert errors == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("details", "github"), "github.com/no-scheme"),
        (("details", "date", "pub"), "2024"),
        (("name",), "mhub-fmcib"),
        (("summary", "model", "training"), "self-supervised"),
        (("details", "version"), "v0.1"),
    ],
)
def test_schema_rejects_broken_copies(
    validator: jsonschema.protocols.Validator, meta: dict, path: tuple[str, ...], value: str
) -> None:
    broken = copy.deepcopy(meta)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert not validator.is_valid(broken)


def test_id_is_uuid4(meta: dict) -> None:
    # Draft 7 has no "uuid" format, so the checker above skips it; check it here.
    parsed = uuid.UUID(meta["id"])
    assert parsed.version == 4
    assert str(parsed) == meta["id"]


def test_licences(meta: dict) -> None:
    assert meta["details"]["license"] == {"code": "MIT", "weights": "CC BY-NC 4.0"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == meta["details"]["license"]["code"]
    assert "no commercial use" in meta["info"]["use"]["text"]
    assert "Research only" in meta["info"]["use"]["text"]


def test_citation_and_sources(meta: dict) -> None:
    details = meta["details"]
    assert "10.1038/s42256-024-00807-9" in details["cite"]
    assert "Nature Machine Intelligence" in details["cite"]
    assert "2024" in details["cite"]
    assert [p["uri"] for p in details["publications"]] == ["https://doi.org/10.1038/s42256-024-00807-9"]
    assert details["zenodo"] == "https://zenodo.org/records/10528450"
    assert details["github"] == "https://github.com/AIM-Harvard/foundation-cancer-image-biomarker"


def test_version_matches_package(meta: dict) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["details"]["version"] == project["version"]


def test_inputs_are_ct_and_dicom_seg(meta: dict) -> None:
    inputs = meta["summary"]["inputs"]
    assert [(i["format"], i["modality"]) for i in inputs] == [("DICOM", "CT"), ("DICOMSEG", "SEG")]
    assert all(len(i["description"]) <= 200 for i in inputs)


def test_outputs_name_the_feature_vector_size(meta: dict) -> None:
    outputs = meta["summary"]["outputs"]
    features = [o for o in outputs if o["valueType"] == "Feature vector"]
    assert len(features) == 1
    assert f"{N_FEATURES} " in features[0]["description"]
    assert any("TID 1500" in o["valueType"] for o in outputs)


def test_architecture_matches_the_encoder(meta: dict) -> None:
    """The card's parameter count and feature size are those of the encoder we build,
    of MONAI's resnet50 in the reference configuration, and of the reference notes."""
    from monai.networks.nets import resnet50

    from mhub_fmcib.model.network import FmcibResNet

    # On the meta device: shapes and counts without allocating or computing anything.
    with torch.device("meta"):
        model = FmcibResNet().eval()
        oracle = resnet50(
            spatial_dims=3,
            n_input_channels=1,
            widen_factor=2,
            conv1_t_stride=2,
            feed_forward=False,
            bias_downsample=True,
        )
        out = model(torch.zeros(1, 1, 50, 50, 50))
    n_params = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in oracle.parameters()) == n_params
    reference = (ROOT.parent / "shared" / "fmcib-reference.md").read_text()
    assert f"{n_params:,} parameters" in reference
    architecture = meta["summary"]["model"]["architecture"]
    assert f"{n_params:,} parameters" in architecture
    assert f"output {N_FEATURES} features" in architecture
    assert "50x50x50" in architecture
    assert tuple(out.shape) == (1, N_FEATURES)


def test_training_and_evaluation_sizes(meta: dict) -> None:
    data = meta["summary"]["data"]
    assert data["training"]["vol_samples"] == 11467
    assert "11,467" in meta["summary"]["description"]
    assert "11,467" in meta["info"]["training"]["text"]
    # Evaluation = the paper's test sets: 1,221 + 170 + 420 + 133.
    assert data["evaluation"]["vol_samples"] == 1221 + 170 + 420 + 133
    table = meta["info"]["evaluation"]["tables"][0]["entries"]
    assert "n=1,221" in table["Anatomical site of the lesion"]
    assert "n=170" in table["Lung nodule malignancy"]
    assert "n=420" in table["2-year overall survival"]
    assert "n=133" in table["2-year overall survival"]


def test_headline_numbers_match_the_reference(meta: dict) -> None:
    """Numbers quoted on the card are the paper's, as recorded in shared/fmcib-reference.md."""
    reference = (ROOT.parent / "shared" / "fmcib-reference.md").read_text()
    entries = meta["info"]["analyses"]["tables"][0]["entries"]
    quoted = " ".join(entries.values()) + " " + meta["info"]["analyses"]["text"]
    for number in ("0.779", "0.804", "0.72", "0.944", "0.857", "0.637", "0.566", "0.98", "0.97"):
        assert number in quoted
        assert number in reference
