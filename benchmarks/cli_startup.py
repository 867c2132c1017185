"""Start-up of the commands that do not run the encoder (issue 18, point 1): ``--help``, a
usage error, ``workflows``, ``index`` on the sample study and ``run`` on a missing input
(exit 3), each in a fresh process from process start to exit; with ``--compare ROOT`` the
same commands of another checkout (for example the commit before a change), interleaved
with ours, so that both see the same machine.

Each process runs from a scratch folder with ``PYTHONPATH`` set to the checkout: ``python
-c`` puts the current folder ahead of ``PYTHONPATH``, so running from a checkout would run
that checkout's code in both variants.

Run: ``.venv/bin/python benchmarks/cli_startup.py [--reps 10] [--compare /path/to/checkout]``;
writes ``benchmarks/out/cli_startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRIVER = "from mhub_fmcib.cli import console; console()"  # what the console script runs


def commands(scratch: Path) -> dict[str, list[str]]:
    """The timed commands, by name (their outputs go under ``scratch``)."""
    return {
        "--help": ["--help"],
        "usage error": ["run", "--no-such-flag"],
        "workflows": ["workflows"],
        "index sample study": ["index", str(ROOT / "sample_data" / "dicom"), str(scratch / "idx")],
        "run, missing input": ["run", str(scratch / "missing"), str(scratch / "out")],
    }


def timed(root: Path, argv: list[str], scratch: Path) -> tuple[float, int]:
    """Wall seconds and exit code of one fresh ``mhub-fmcib`` process of checkout ``root``."""
    env = os.environ | {"PYTHONPATH": str(root)}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", DRIVER, *argv], cwd=scratch, env=env, capture_output=True)
    return time.perf_counter() - t0, done.returncode


def summary(ts: list[float], code: int) -> dict[str, float]:
    """Median, least and most seconds of one command's runs, and its exit code."""
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "exit": code}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--compare", type=Path, help="another checkout, timed interleaved with this one")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "cli_startup.json")
    a = ap.parse_args()
    roots = {"this": ROOT} | ({"compare": a.compare.resolve()} if a.compare else {})
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        cmds = commands(scratch)
        times: dict[str, dict[str, list[float]]] = {n: {r: [] for r in roots} for n in cmds}
        codes: dict[str, dict[str, int]] = {n: {} for n in cmds}
        for _ in range(a.reps):
            for name, argv in cmds.items():
                for label, root in roots.items():
                    s, rc = timed(root, argv, scratch)
                    times[name][label].append(s)
                    codes[name][label] = rc
    result = {
        "reps": a.reps,
        "roots": {k: str(v) for k, v in roots.items()},
        "commands": {
            name: {label: summary(ts, codes[name][label]) for label, ts in per.items()} for name, per in times.items()
        },
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    for name, per in result["commands"].items():
        cells = "  ".join(
            f"{label} {v['median_s']:.2f} s ({v['min_s']:.2f}-{v['max_s']:.2f}, exit {v['exit']})"
            for label, v in per.items()
        )
        print(f"{name:20s} {cells}")


if __name__ == "__main__":
    main()
