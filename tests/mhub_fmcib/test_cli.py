"""Small CLI behaviours: version/provenance, workflows, exit codes for bad options."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

import pytest

from mhub_fmcib import __version__
from mhub_fmcib.cli import _other_threads_running, main
from mhub_fmcib.model.weights_file import sha256_file


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


ROOT = Path(__file__).resolve().parents[2]


def _console(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m mhub_fmcib.cli ARGS`` (the console script's function) in a fresh process,
    its standard streams pipes (so block-buffered: what is not flushed is lost)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "mhub_fmcib.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_console_exits_quickly_with_everything_written(tmp_path: Path, weights_file: Path) -> None:
    """The console script skips the interpreter's teardown (``os._exit``) only after every
    output is on disk and the streams are flushed: a real one-lesion run, its exit code, its
    complete tables, its last log line and a printed listing on a pipe."""
    img = ROOT / "sample_data" / "nrrd" / "lung1_image.nrrd"
    seeds = tmp_path / "seeds.csv"
    seeds.write_text(f"image_path,coordX,coordY,coordZ\n{img},23.664,-219.540,-724.723\n")
    out = tmp_path / "out"
    done = _console("run", str(seeds), str(out), "--seeds", "--weights", str(weights_file), "--no-sr", "--no-seg",
                    "--no-qc", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 lesion(s) measured, 0 failed" in done.stderr.splitlines()[-1]
    with open(out / "features.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and sum(k.startswith("feature_") for k in rows[0]) == 4096
    assert json.loads((out / "run.json").read_text())["summary"]["exit_code"] == 0
    listing = _console("workflows", cwd=tmp_path)
    assert listing.returncode == 0
    names = [line.split()[0] for line in listing.stdout.splitlines()]
    assert names == ["default", "from_nifti_mask", "from_rtstruct", "from_seeds"]
    missing = _console("run", str(tmp_path / "nope"), str(tmp_path / "o2"), cwd=tmp_path)
    assert missing.returncode == 3
    assert "nope" in missing.stderr


_DICOM_STACK_PROBE = """
import json
import sys
from pathlib import Path

from mhub_fmcib.cli import main
rc = main(sys.argv[2:], env={})
stack = ("pydicom", "highdicom")
after_run = [m for m in stack if m in sys.modules]
from mhub_fmcib.dicom.read import looks_like_dicom
dicom = looks_like_dicom(Path(sys.argv[1]))
after_read = [m for m in stack if m in sys.modules]
print(json.dumps({"rc": rc, "after_run": after_run, "dicom": dicom, "after_read": after_read}))
"""


def test_a_run_on_nrrd_files_never_imports_the_dicom_stack(tmp_path: Path, weights_file: Path) -> None:
    """Seeds on an NRRD image, QC pictures included, in a fresh process: pydicom (0.4 s of
    start-up) and highdicom are never imported; the first DICOM file read imports pydicom."""
    img = ROOT / "sample_data" / "nrrd" / "lung1_image.nrrd"
    seeds = tmp_path / "seeds.csv"
    seeds.write_text(f"image_path,coordX,coordY,coordZ\n{img},23.664,-219.540,-724.723\n")
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    args = [str(seeds), str(tmp_path / "out"), "--seeds", "--weights", str(weights_file)]
    ct_file = next((ROOT / "sample_data" / "dicom" / "ct").rglob("*.dcm"))
    probe = [sys.executable, "-c", _DICOM_STACK_PROBE, str(ct_file), "run", *args]
    done = subprocess.run(probe, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen == {"rc": 0, "after_run": [], "dicom": True, "after_read": ["pydicom"]}
    assert any((tmp_path / "out" / "qc").rglob("*.png"))  # the QC pictures were made without it


_TORCH_PROBE = """
import contextlib
import io
import json
import sys

from mhub_fmcib.cli import main

heavy = ("torch", "SimpleITK")
seen = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            rc = main(argv, env={})
        except SystemExit as e:  # --help and usage errors exit inside argparse
            rc = e.code
    seen.append({"argv": argv[0], "rc": rc, "loaded": [m for m in heavy if m in sys.modules]})
import mhub_fmcib.pipeline  # what a run imports: the probe sees torch once it is there
seen.append({"argv": "import pipeline", "rc": 0, "loaded": [m for m in heavy if m in sys.modules]})
print(json.dumps(seen))
"""


def test_commands_that_do_not_run_the_encoder_never_import_torch(tmp_path: Path, weights_file: Path) -> None:
    """In one fresh process: ``--help``, a usage error, ``workflows``, ``version``, ``index``,
    a refused ``merge`` and a ``run`` on a missing input (exit 3) load neither torch (2-3 s
    of start-up) nor SimpleITK; importing the pipeline then loads torch."""
    dicom = ROOT / "sample_data" / "dicom"
    commands = [
        ["--help"],
        ["run", "--no-such-flag"],
        ["workflows"],
        ["version", "--weights", str(weights_file)],
        ["index", str(dicom), str(tmp_path / "idx")],
        ["merge", str(tmp_path / "no-shard"), "--output", str(tmp_path / "merged")],
        ["run", str(tmp_path / "nope"), str(tmp_path / "out")],
    ]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    probe = [sys.executable, "-c", _TORCH_PROBE, json.dumps(commands)]
    done = subprocess.run(probe, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert [(s["argv"], s["rc"]) for s in seen] == [
        ("--help", 0), ("run", 2), ("workflows", 0), ("version", 0), ("index", 0), ("merge", 2), ("run", 3),
        ("import pipeline", 0),
    ]  # fmt: skip
    assert [s["loaded"] for s in seen[:-1]] == [[]] * len(commands)
    assert "torch" in seen[-1]["loaded"]
    assert (tmp_path / "idx" / "index.sqlite").is_file()


def test_a_running_thread_keeps_the_normal_exit() -> None:
    """The check the console script makes before ``os._exit``: it sees a running thread that
    is not a daemon (then the normal exit waits for it), and none once that thread ended."""
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    try:
        assert _other_threads_running()
    finally:
        release.set()
        worker.join()
    assert not _other_threads_running()


def test_dash_dash_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"], env={})
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mhub-fmcib {__version__}"


def _third_party_imports(package: Path) -> set[str]:
    """Top-level modules that ``package``'s source imports (absolute imports only)."""
    import ast
    import sys

    names: set[str] = set()
    for py in package.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "mhub_fmcib"}


def test_every_module_the_package_imports_is_a_base_dependency() -> None:
    """A base install (``pip install mhub-fmcib``) can run every command, ``run --dicomweb``
    included: each third-party module imported by mhub_fmcib/ comes from a distribution that
    pyproject's ``dependencies`` (not an extra) names, or from one of their requirements."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    root = Path(__file__).resolve().parents[2]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    base = {canonicalize_name(Requirement(d).name) for d in deps}
    assert {"dicomweb-client", "requests"} <= base
    closure, todo = set(base), list(base)
    while todo:  # the base dependencies' own requirements (no extras) come with them
        for r in metadata.requires(todo.pop()) or []:
            req = Requirement(r)
            name = canonicalize_name(req.name)
            if name not in closure and (req.marker is None or req.marker.evaluate({"extra": ""})):
                closure.add(name)
                todo.append(name)
    providers = metadata.packages_distributions()
    imported = _third_party_imports(root / "mhub_fmcib")
    assert {"requests", "dicomweb_client"} <= imported
    missing = {
        m: providers.get(m) for m in imported if not {canonicalize_name(d) for d in providers.get(m, [])} & closure
    }
    assert not missing, f"imported by mhub_fmcib but not installed with the base package: {missing}"


def test_dicomweb_without_its_client_names_the_pip_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install made with --no-deps: the missing client is a usage error with the install line."""
    import logging
    import sys

    from mhub_fmcib.cli import DICOMWEB_PIP_LINE

    for mod in [m for m in sys.modules if m == "requests" or m.startswith(("requests.", "mhub_fmcib.dicomweb"))]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "requests", None)  # what Python does for a module not installed
    caplog.set_level(logging.ERROR, logger="mhub_fmcib")
    code = main(["run", "--dicomweb", "http://127.0.0.1:9", "--study", "1.2.3", str(tmp_path / "out")], env={})
    assert code == 2
    assert DICOMWEB_PIP_LINE in caplog.text and "'requests'" in caplog.text
