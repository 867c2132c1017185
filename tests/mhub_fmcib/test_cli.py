"""Small CLI behaviours: version/provenance, workflows, exit codes for bad options."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from mhub_fmcib import __version__
from mhub_fmcib.cli import main
from mhub_fmcib.model.weights import sha256_file


def test_version_prints_provenance(weights_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version", "--weights", str(weights_file)], env={}) == 0
    out = capsys.readouterr().out
    assert f"mhub-fmcib {__version__}" in out
    assert sha256_file(weights_file) in out
    for dist in ("torch", "highdicom", "pydicom"):
        assert metadata.version(dist) in out


def test_version_without_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"], env={"FMCIB_CACHE_DIR": str(tmp_path)}) == 0
    assert "weights    not found" in capsys.readouterr().out


def test_workflows_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workflows"], env={}) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["default", "from_nifti_mask", "from_rtstruct", "from_seeds"]


def test_exit_codes(tmp_path: Path, weights_file: Path) -> None:
    assert main(["run", str(tmp_path / "nope"), str(tmp_path / "out"), "--weights", str(weights_file)], env={}) == 3
    (tmp_path / "empty").mkdir()
    assert main(["run", str(tmp_path / "empty"), str(tmp_path / "out")], env={}) == 3
    img = Path(__file__).resolve().parents[2] / "sample_data" / "nrrd" / "lung1_image.nrrd"
    assert main(["run", str(img), str(tmp_path / "out")], env={}) == 2  # image without --mask
    assert (
        main(["run", str(img), str(tmp_path / "out"), "--mask", str(img), "--weights", str(tmp_path / "w")], env={})
        == 5
    )
    assert main(["run", str(img), str(tmp_path / "out"), "--batch-size", "0", "--mask", str(img)], env={}) == 2
