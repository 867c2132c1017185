"""meta.json: valid as an MHub.ai model card (formats checked) and true to the model.

The card's rules are the project's own statement of MHub's schema
(``fmcib_testlib.mhub_card``); the validator is the draft its ``$schema`` names, with that
draft's format checker. The truthfulness checks compare the card with facts held in the
repository: the encoder's output size and parameter count (mhub_fmcib's network, built
here, and MONAI's resnet50), the package version (pyproject.toml), the licences and citation
of the published model, and the paper's numbers (``tests/data/fmcib_paper.toml``). Nothing
outside the repository is read.
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
from fmcib_testlib.mhub_card import model_card_schema, required_paths
from jsonschema.validators import validator_for

from mhub_fmcib.records import N_FEATURES

ROOT = Path(__file__).resolve().parents[1]
META_PATH = ROOT / "meta.json"
PAPER = tomllib.loads((ROOT / "tests" / "data" / "fmcib_paper.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return model_card_schema()


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
        (("id",), "10235522-a823-1418-a0eb-62ce215b7985"),  # a UUID, but version 1
        (("summary", "model", "cmpapproach"), "3d"),
        (("summary", "data", "public"), "yes"),
        (("summary", "data", "training", "vol_samples"), "11467"),
        (("details", "date", "weights"), "18 Jan 2024"),
        (("details", "zenodo"), "zenodo record 10528450"),
        (("info", "use", "title"), 1),
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


def test_schema_rejects_each_missing_required_field(validator: jsonschema.protocols.Validator, meta: dict) -> None:
    paths = required_paths(validator.schema)
    # 39 keys of objects + 8 of an input + 2 of a publication (see mhub_card's docstring)
    assert len(paths) == 49
    assert {("summary", "model", "cmpapproach"), ("info", "use", "text"), ("summary", "inputs", 0, "contrast")} <= set(
        paths
    )
    for path in paths:
        broken = copy.deepcopy(meta)
        target: Any = broken
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        assert not validator.is_valid(broken), f"a card without {'.'.join(map(str, path))} passed"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("summary", "inputs", 0, "description"), "x" * 201),
        (("summary", "inputs", 0, "contrast"), "false"),
        (("summary", "outputs", 0, "type"), "Features"),
        (("details", "publications", 0, "uri"), "doi 10.1038/s42256-024-00807-9"),
        (("info", "analyses", "tables", 0, "entries", "Task 2, lung nodule malignancy, AUC"), 0.944),
        (("info", "analyses", "references", 0, "uri"), "not a uri"),
    ],
)
def test_schema_rejects_broken_items(
    validator: jsonschema.protocols.Validator, meta: dict, path: tuple[str | int, ...], value: object
) -> None:
    broken = copy.deepcopy(meta)
    target: Any = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert not validator.is_valid(broken)


def test_id_is_uuid4(meta: dict) -> None:
    # An independent check of the pattern in the schema: the uuid module's reading.
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
    of MONAI's resnet50 in the reference configuration, and of the published model."""
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
    assert n_params == PAPER["encoder"]["parameters"]
    assert N_FEATURES == PAPER["encoder"]["features"]
    architecture = meta["summary"]["model"]["architecture"]
    assert f"{n_params:,} parameters" in architecture
    assert f"output {N_FEATURES} features" in architecture
    assert "50x50x50" in architecture
    assert tuple(out.shape) == (1, N_FEATURES)


def test_training_and_evaluation_sizes(meta: dict) -> None:
    data = meta["summary"]["data"]
    n_train = PAPER["data"]["training_lesions"]
    assert data["training"]["vol_samples"] == n_train
    assert f"{n_train:,}" in meta["summary"]["description"]
    assert f"{n_train:,}" in meta["info"]["training"]["text"]
    sets = PAPER["data"]["test_sets"]
    # Evaluation = the paper's test sets of the three tasks.
    assert data["evaluation"]["vol_samples"] == sum(sets.values())
    table = meta["info"]["evaluation"]["tables"][0]["entries"]
    assert f"n={sets['anatomical_site']:,}" in table["Anatomical site of the lesion"]
    assert f"n={sets['malignancy']:,}" in table["Lung nodule malignancy"]
    assert f"n={sets['survival_lung1']:,}" in table["2-year overall survival"]
    assert f"n={sets['survival_radio']:,}" in table["2-year overall survival"]


@pytest.mark.parametrize("headline", PAPER["headline"], ids=lambda h: h["row"].split(",")[0])
def test_headline_numbers_are_the_papers(meta: dict, headline: dict[str, Any]) -> None:
    """Each headline row of the card quotes the paper's numbers (tests/data/fmcib_paper.toml)."""
    analyses = meta["info"]["analyses"]
    entries = analyses["tables"][0]["entries"]
    assert headline["row"] in entries, f"the card's analyses table has no row {headline['row']!r}"
    quoted = entries[headline["row"]].replace(";", ",").replace(",", " ").split()
    for number in headline["numbers"]:
        assert number in quoted, f"{headline['row']}: {number} missing from {entries[headline['row']]!r}"


def test_no_headline_number_without_a_source(meta: dict) -> None:
    """The card's results table holds the paper's rows and numbers only."""
    entries = meta["info"]["analyses"]["tables"][0]["entries"]
    assert set(entries) == {h["row"] for h in PAPER["headline"]}
    for h in PAPER["headline"]:
        numbers = [w for w in entries[h["row"]].replace(";", ",").replace(",", " ").split() if w[:1].isdigit()]
        assert sorted(numbers) == sorted(h["numbers"])
    stability = next(h for h in PAPER["headline"] if h["row"].startswith("Test-retest"))
    assert all(n in analyses_text(meta) for n in stability["numbers"])


def analyses_text(meta: dict) -> str:
    return str(meta["info"]["analyses"]["text"])
