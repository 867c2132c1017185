"""The container's entrypoint command run natively, with no network (a fresh network
namespace with not even loopback up), in an MHub-like /app/data layout on the sample study:
refusals, the options it shares with `mhub-fmcib run`, their help texts. The image itself is
built and run by `make container-test` (scripts/container-test.sh, docs/container.md)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _no_network_prefix() -> list[str]:
    ok = shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    if ok:
        return ["unshare", "-n"]
    if os.environ.get("CI") == "true":
        pytest.fail("CI must be able to create a network namespace (run as root)")
    pytest.skip("cannot create a network namespace here (needs root)")


def entrypoint(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [*_no_network_prefix(), sys.executable, "-m", "mhub_fmcib.cli", "container", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    data = tmp_path / "app" / "data"
    shutil.copytree(ROOT / "sample_data" / "dicom", data / "input_data")
    (data / "output_data").mkdir()
    return data


def _env(tmp_path: Path, weights: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMCIB_")}
    env["FMCIB_CACHE_DIR"] = str(tmp_path / "empty-cache")
    if weights is not None:
        env["FMCIB_WEIGHTS"] = str(weights)
    return env


def test_default_workflow_on_sample_study(app: Path, tmp_path: Path, weights_file: Path) -> None:
    res = entrypoint(
        ["--input", str(app / "input_data"), "--output", str(app / "output_data"), "--progress", "none"],
        _env(tmp_path, weights_file),
    )
    assert res.returncode == 0, res.stderr
    assert "doi:10.1038/s42256-024-00807-9" in res.stderr.splitlines()[0]
    assert "Traceback" not in res.stderr
    out = app / "output_data"
    doc = json.loads((out / "run.json").read_text())
    assert doc["summary"]["lesions_ok"] == 1 and doc["inputs"]["workflow"] == "default"
    assert len((out / "features.csv").read_text().splitlines()) == 2
    names = sorted(p.name for p in (out / "dicom").rglob("*.dcm"))
    assert names == ["fmcib_features_SR.dcm", "fmcib_patch_region_SEG.dcm"]
    assert (out / "qc" / "index.html").is_file()


def test_refusals(app: Path, tmp_path: Path, weights_file: Path) -> None:
    env = _env(tmp_path, weights_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    res = entrypoint(["--input", str(empty), "--output", str(app / "output_data")], env)
    assert res.returncode == 3 and "/app/data/input_data" in res.stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("no dicom here")
    res = entrypoint(["--input", str(tmp_path / "junk"), "--output", str(app / "output_data")], env)
    assert res.returncode == 3 and "no DICOM file" in res.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = entrypoint(["--input", str(app / "input_data"), "--output", str(blocker / "out")], env)
    assert res.returncode == 4 and "not writable" in res.stderr
    res = entrypoint(["--input", str(app / "input_data"), "--output", str(app / "output_data")], _env(tmp_path, None))
    assert res.returncode == 5 and "FMCIB_WEIGHTS" in res.stderr
    res = entrypoint(["--workflow", "nonsense", "--input", str(app / "input_data")], env)
    assert res.returncode == 2 and "default" in res.stderr
    assert not any((app / "output_data").iterdir())  # refusals write nothing


# --------------------------------------------------------------------------- options


def _options_in_help(text: str) -> set[str]:
    """Long options listed in an argparse --help text (usage line and option list)."""
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))


def _help(command: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "mhub_fmcib.cli", command, "--help"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_container_accepts_what_run_accepts() -> None:
    """Every option of `mhub-fmcib run` is an option of the entrypoint too; the entrypoint
    takes INPUT and OUTPUT as --input/--output with the MHub paths as defaults."""
    run_options = _options_in_help(_help("run"))
    container_help = _help("container")
    container_options = _options_in_help(container_help)
    assert run_options - container_options == set()
    assert {"--input", "--output"} <= container_options
    for wanted in (
        "--no-sr",
        "--no-seg",
        "--no-qc",
        "--seeds",
        "--segments",
        "--head",
        "--shard",
        "--progress",
        "--batch-size",
        "--device",
    ):
        assert wanted in container_options
    assert "/app/data/input_data" in container_help and "/app/data/output_data" in container_help


def _subparser(name: str) -> argparse.ArgumentParser:
    from mhub_fmcib.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_every_entrypoint_option_has_help_text() -> None:
    parser = _subparser("container")
    missing = [a.option_strings for a in parser._actions if a.option_strings and not (a.help and a.help.strip())]
    assert missing == []


def test_run_options_reach_the_container_run(app: Path, tmp_path: Path, weights_file: Path) -> None:
    out = app / "output_data"
    res = entrypoint(
        [
            "--input",
            str(app / "input_data"),
            "--output",
            str(out),
            "--no-sr",
            "--no-seg",
            "--no-qc",
            "--segments",
            "1",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--shard",
            "0/1",
            "--progress",
            "json",
        ],
        _env(tmp_path, weights_file),
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads((out / "run.json").read_text())
    assert doc["inputs"]["device"] == "cpu" and doc["inputs"]["batch_size"] == 2
    assert doc["inputs"]["segments"] == ["1"] and doc["inputs"]["shard"] == [0, 1]
    assert doc["summary"]["lesions_ok"] == 1
    assert not (out / "dicom").exists() and not (out / "qc").exists()
    events = [json.loads(line)["event"] for line in res.stdout.splitlines() if line.startswith("{")]
    assert events[0] == "start" and events[-1] == "end" and "case" in events


def test_seeds_option_reads_a_seeds_csv(tmp_path: Path, weights_file: Path) -> None:
    out = tmp_path / "out"
    env = _env(tmp_path, weights_file)
    res = entrypoint(
        [
            "--seeds",
            "--input",
            str(ROOT / "sample_data" / "seeds.csv"),
            "--output",
            str(out),
            "--no-qc",
            "--progress",
            "none",
        ],
        env,
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads((out / "run.json").read_text())
    assert doc["inputs"]["workflow"] == "from_seeds" and doc["summary"]["lesions_ok"] == 2
    res = entrypoint(
        [
            "--seeds",
            "--workflow",
            "default",
            "--input",
            str(ROOT / "sample_data" / "seeds.csv"),
            "--output",
            str(tmp_path / "out2"),
        ],
        env,
    )
    assert res.returncode == 2 and "from_seeds" in res.stderr
