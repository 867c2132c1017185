"""A device this machine lacks is a usage error (exit 2), found before any weights are read."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mhub_fmcib.cli import EXIT_USAGE, main
from mhub_fmcib.errors import ConfigError
from mhub_fmcib.model.device import resolve_device

ROOT = Path(__file__).resolve().parents[3]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:-1", "tpu:0", ""])
def test_unknown_names_are_usage_errors(name: str) -> None:
    with pytest.raises(ConfigError, match="use --device auto, cpu, cuda or cuda:N"):
        resolve_device(name)


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_without_cuda_is_a_usage_error(name: str) -> None:
    with pytest.raises(ConfigError, match=f"--device {name} was requested but this machine has no CUDA device"):
        resolve_device(name)


@no_cuda
@pytest.mark.parametrize("name", ["cuda:0", "cuda:7"])
def test_run_with_cuda_exits_2_with_a_usage_message(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="mhub_fmcib")
    missing_weights = tmp_path / "no-such-weights.torch"  # the device is refused before weights are read
    code = main(
        ["run", str(ROOT / "sample_data" / "dicom"), str(tmp_path / "out"), "--device", name,
         "--weights", str(missing_weights)],
        env={},
    )  # fmt: skip
    assert code == EXIT_USAGE == 2
    assert f"--device {name} was requested but this machine has no CUDA device; use --device cpu" in caplog.text
    assert "Traceback" not in caplog.text


@no_cuda
def test_container_with_cuda_7_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="mhub_fmcib")
    code = main(
        ["container", "--input", str(ROOT / "sample_data" / "dicom"), "--output", str(tmp_path), "--device", "cuda:7"],
        env={},
    )
    assert code == 2 and "cuda:7" in caplog.text


@no_cuda
@pytest.mark.parametrize("command", ["run", "container"])
def test_cuda_0_from_the_console_prints_one_usage_line_and_no_traceback(command: str, tmp_path: Path) -> None:
    """What a user sees: the console entry point (as the container runs it), its stderr."""
    data = str(ROOT / "sample_data" / "dicom")
    args = [data, str(tmp_path / "out")] if command == "run" else ["--input", data, "--output", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from mhub_fmcib.cli import main; sys.exit(main())",
         command, *args, "--device", "cuda:0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "AssertionError" not in proc.stderr
    assert "--device cuda:0 was requested but this machine has no CUDA device; use --device cpu" in proc.stderr
