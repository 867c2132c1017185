"""``mhub-fmcib-train evaluate|radiomics`` stay listed without the train extra and say what to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Runs the CLI with the named modules made unimportable (a meta-path finder raising
#: ModuleNotFoundError, as when the package is not installed).
BLOCKED_RUN = """
import sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
from mhub_fmcib_train.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _run(blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "training")]))
    return subprocess.run([sys.executable, "-c", BLOCKED_RUN, blocked, *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def help_without_extra() -> subprocess.CompletedProcess[str]:
    return _run("pandas,radiomics,sklearn,lifelines,matplotlib,optuna", "--help")


def test_commands_are_listed_without_the_extra(help_without_extra: subprocess.CompletedProcess[str]) -> None:
    assert help_without_extra.returncode == 0, help_without_extra.stderr
    assert "evaluate" in help_without_extra.stdout
    assert "radiomics" in help_without_extra.stdout
    assert "pip install 'mhub-fmcib[train]'" in help_without_extra.stdout


@pytest.mark.parametrize(
    ("blocked", "args", "missing"),
    [
        ("pandas,lifelines", ["evaluate", "report", "--predictions", "p.csv", "--out", "o"], "pandas, lifelines"),
        ("radiomics", ["radiomics", "--cases", "c.csv", "--out", "o.csv"], "radiomics"),
    ],
)
def test_running_one_names_the_missing_modules_and_the_install_line(
    blocked: str, args: list[str], missing: str
) -> None:
    r = _run(blocked, *args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"cannot import {missing}" in r.stderr
    assert "install it with: pip install 'mhub-fmcib[train]'" in r.stderr


def test_cli_constants_equal_the_statistics_module() -> None:
    from mhub_fmcib_train.evaluation import cli, metrics

    assert (cli.N_BOOTSTRAP, cli.N_PERMUTATIONS) == (metrics.N_BOOTSTRAP, metrics.N_PERMUTATIONS)
    assert cli.DEFAULT_RADIOMICS_PARAMS.is_file()
