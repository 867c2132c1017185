"""Workflow files: every packaged workflow loads, errors name what is wrong and the fix."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from mhub_fmcib.config import InputKind, RunConfig
from mhub_fmcib.errors import ConfigError
from mhub_fmcib.workflows import (
    Workflow,
    list_workflows,
    load_workflow,
    load_workflow_file,
    make_run_config,
)

WORKFLOW_DIR = Path(__file__).resolve().parents[3] / "mhub_fmcib" / "workflows"
EXPECTED = {
    # name: (input kind, segmentation sources, SR, SEG)
    "default": (InputKind.DICOM_FOLDER, ("SEG",), True, True),
    "from_rtstruct": (InputKind.DICOM_FOLDER, ("RTSTRUCT",), True, True),
    "from_nifti_mask": (InputKind.IMAGE_FILE, (), False, False),
    "from_seeds": (InputKind.SEEDS_CSV, (), False, False),
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wf.toml"
    path.write_text(text)
    return path


GOOD = """
name = "wf"
description = "a test workflow"
input_kind = "dicom_folder"
segmentation_sources = ["SEG"]
export_sr = true
export_seg = false
export_qc = false
"""


def test_packaged_workflows() -> None:
    workflows = list_workflows()
    assert [w.name for w in workflows] == [
        "default",
        "from_nifti_mask",
        "from_rtstruct",
        "from_seeds",
    ]
    for workflow in workflows:
        kind, sources, sr, seg = EXPECTED[workflow.name]
        assert (workflow.input_kind, workflow.segmentation_sources) == (kind, sources)
        assert (workflow.export_sr, workflow.export_seg) == (sr, seg)
        # QC pictures are drawn with Pillow (a runtime dependency): on everywhere.
        assert workflow.export_qc is True
        assert workflow.description
        # The object equals an independent read of its file with tomllib.
        raw = tomllib.loads((WORKFLOW_DIR / f"{workflow.name}.toml").read_text())
        assert raw["input_kind"] == workflow.input_kind.value
        assert raw["segmentation_sources"] == list(workflow.segmentation_sources)
        assert load_workflow(workflow.name) == workflow


def test_unknown_workflow_lists_names() -> None:
    with pytest.raises(ConfigError) as info:
        load_workflow("from_pet")
    message = str(info.value)
    assert "'from_pet'" in message
    for name in EXPECTED:
        assert name in message


def test_unknown_key(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD + "export_sr_typo = true\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['export_sr_typo'\]") as info:
        load_workflow_file(path)
    assert str(path) in str(info.value)


def test_missing_key(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("export_qc = false\n", ""))
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['export_qc'\]"):
        load_workflow_file(path)


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        ("export_sr = true", 'export_sr = "yes"', "export_sr must be true or false"),
        ('input_kind = "dicom_folder"', 'input_kind = "dicom"', "input_kind 'dicom' is not one of"),
        ('["SEG"]', '"SEG"', "segmentation_sources must be a list"),
        ('["SEG"]', '["SEG", "PET"]', r"\['PET'\] are not supported"),
        ('["SEG"]', '["SEG", "SEG"]', "lists a source twice"),
        ('["SEG"]', "[]", "set segmentation_sources to one or more"),
        ('name = "wf"', 'name = "Wf-1"', "lowercase letters"),
    ],
)
def test_invalid_values(tmp_path: Path, old: str, new: str, pattern: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError, match=pattern):
        load_workflow_file(_write(tmp_path, GOOD.replace(old, new)))


def test_non_dicom_workflow_cannot_write_dicom(tmp_path: Path) -> None:
    text = GOOD.replace('"dicom_folder"', '"image_file"').replace('["SEG"]', "[]")
    with pytest.raises(ConfigError, match="set export_sr and export_seg to false"):
        load_workflow_file(_write(tmp_path, text))


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_workflow_file(_write(tmp_path, "name = \n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read workflow file"):
        load_workflow_file(tmp_path / "absent.toml")


def test_make_run_config_default(tmp_path: Path) -> None:
    config = make_run_config(load_workflow("default"), tmp_path / "in", tmp_path / "out", batch_size=2)
    assert isinstance(config, RunConfig)
    assert config.input == tmp_path / "in"
    assert config.output == tmp_path / "out"
    assert config.input_kind is InputKind.DICOM_FOLDER
    assert (config.export_sr, config.export_seg, config.export_qc) == (True, True, True)
    assert config.workflow == "default"
    assert config.batch_size == 2
    assert config.segmentation_sources == ("SEG",)


def test_make_run_config_image_file_needs_mask(tmp_path: Path) -> None:
    workflow = load_workflow("from_nifti_mask")
    with pytest.raises(ConfigError, match="--mask"):
        make_run_config(workflow, tmp_path / "ct.nii.gz", tmp_path / "out")
    config = make_run_config(workflow, tmp_path / "ct.nii.gz", tmp_path / "out", mask=tmp_path / "m.nii.gz")
    assert config.input_kind is InputKind.IMAGE_FILE
    assert config.mask == tmp_path / "m.nii.gz"
    assert (config.export_sr, config.export_seg) == (False, False)


def test_make_run_config_rtstruct(tmp_path: Path) -> None:
    workflow = load_workflow("from_rtstruct")
    config = make_run_config(workflow, tmp_path, tmp_path / "out")
    assert config.segmentation_sources == ("RTSTRUCT",)


def test_make_run_config_rejects_bad_overrides(tmp_path: Path) -> None:
    workflow = load_workflow("default")
    with pytest.raises(ConfigError, match="fixed by workflow 'default'"):
        make_run_config(workflow, tmp_path, tmp_path, input_kind=InputKind.SEEDS_CSV)
    with pytest.raises(ConfigError, match=r"unknown run setting\(s\) \['batchsize'\]"):
        make_run_config(workflow, tmp_path, tmp_path, batchsize=3)
    with pytest.raises(ConfigError, match="cannot write a DICOM SR"):
        make_run_config(load_workflow("from_seeds"), tmp_path, tmp_path, export_sr=True)
    # Overriding an export flag the workflow allows works.
    config = make_run_config(workflow, tmp_path, tmp_path, export_qc=False, export_seg=False)
    assert (config.export_qc, config.export_seg) == (False, False)


def test_workflow_is_frozen() -> None:
    workflow = load_workflow("default")
    with pytest.raises(dataclasses.FrozenInstanceError):
        workflow.name = "other"  # type: ignore[misc]
    assert isinstance(workflow, Workflow)
