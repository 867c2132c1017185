"""Mistakes that used to exit 0 with nothing done: exit 3 ("nothing to measure") with one line
saying why and what to pass; the plan comes first, so the weights are not read for them."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from fmcib_testlib.dicom_builders import SAMPLE, copy_ct

from mhub_fmcib.cli import EXIT_INPUT, main
from mhub_fmcib.config import InputKind, infer_input_kind


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def garbage_weights(tmp_path: Path) -> Path:
    w = tmp_path / "garbage.torch"
    w.write_bytes(b"\x00not weights" * 100)
    return w


@pytest.mark.parametrize("weights", ["missing", "garbage"])
def test_ct_without_seg_exits_3_without_reading_the_weights(
    weights: str, tmp_path: Path, garbage_weights: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy_ct(tmp_path / "in" / "ct")
    w = tmp_path / "no-such.torch" if weights == "missing" else garbage_weights
    caplog.set_level(logging.ERROR, logger="mhub_fmcib")
    # with work to do, these weights exit 5; with nothing to do they are never read
    code = main(["run", str(tmp_path / "in"), str(tmp_path / "out"), "--weights", str(w)], env={})
    assert code == EXIT_INPUT == 3
    [line] = _errors(caplog)
    assert line.startswith("nothing to measure: ") and "holds 1 CT series but no SEG" in line
    assert "--seeds" in line and "\n" not in line
    assert not (tmp_path / "out" / "run.json").exists()


def test_rtstruct_only_names_the_rtstruct_workflow(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np
    from fmcib_testlib.dicom_builders import read_ct_datasets
    from fmcib_testlib.rtstruct_builders import RoiSpec, make_rtstruct

    ct = read_ct_datasets(copy_ct(tmp_path / "in" / "ct"))
    point = np.array([[-21.86, -120.54, -611.5]])
    make_rtstruct(ct, [RoiSpec("marker", [("POINT", point)], interpreted_type="MARKER")], tmp_path / "in" / "rt.dcm")
    caplog.set_level(logging.ERROR, logger="mhub_fmcib")
    assert main(["run", str(tmp_path / "in"), str(tmp_path / "out"), "--weights", str(tmp_path / "w")], env={}) == 3
    assert "--workflow from_rtstruct" in _errors(caplog)[0]


def test_folder_without_ct_exits_3_with_the_skip_reasons(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("hello\n")
    caplog.set_level(logging.ERROR, logger="mhub_fmcib")
    assert main(["run", str(tmp_path / "in"), str(tmp_path / "out"), "--weights", str(tmp_path / "w")], env={}) == 3
    [line] = _errors(caplog)
    assert "holds no CT series (1 not a DICOM file)" in line and "--mask" in line and "--seeds" in line


def test_a_csv_input_is_read_as_a_seeds_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert infer_input_kind(SAMPLE / "seeds.csv", seeds=False) is InputKind.SEEDS_CSV
    assert infer_input_kind(SAMPLE / "dicom", seeds=False) is InputKind.DICOM_FOLDER
    empty = tmp_path / "seeds.csv"
    empty.write_text("image_path,coordX,coordY,coordZ\n")
    caplog.set_level(logging.ERROR, logger="mhub_fmcib")
    assert main(["run", str(empty), str(tmp_path / "out"), "--weights", str(tmp_path / "w")], env={}) == 3
    [line] = _errors(caplog)
    assert (
        line == f"nothing to measure: seeds CSV {empty} has no rows; add rows image_path,coordX,coordY,coordZ (LPS mm)"
    )


def test_segments_matching_nothing_exit_3(tmp_path: Path, weights_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    inp = tmp_path / "in"
    shutil.copytree(SAMPLE / "dicom", inp)
    caplog.set_level(logging.ERROR, logger="mhub_fmcib")
    code = main(
        ["run", str(inp), str(tmp_path / "out"), "--segments", "Liver", "--weights", str(weights_file),
         "--no-qc", "--progress", "none"],
        env={},
    )  # fmt: skip
    assert code == 3
    line = _errors(caplog)[-1]
    assert line.startswith("nothing to measure: --segments Liver matches no segment of the 1 segmentation(s)")
    assert "drop --segments" in line
    assert any("1:Nodule" in m for m in _errors(caplog))  # the SEG's own failure lists its segments
