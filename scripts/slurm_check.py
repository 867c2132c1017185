"""Helpers of scripts/slurm-test.sh: build the test export, and compare a merged output
folder with a single run's.

  slurm_check.py make-data DEST --shards 3   export (DEST/export) + random weights (DEST/weights.torch)
  slurm_check.py same SINGLE MERGED           exit 0 when MERGED's results equal SINGLE's, else 1
                                              (features.csv and failures.csv byte for byte, run.json
                                              but for per-execution keys, DICOM/QC file names)
  slurm_check.py resumed SHARD                exit 0 when SHARD's run.json reused finished cases

The export is made with the test suite's builders (tests/lib/fmcib_testlib): studies are
picked so that shard 1 of 3 (the one the test cancels) holds three cases, the others two;
one study misses a slice (a failed case, so failures.csv has a row) and one file is not
DICOM (a skipped file in run.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lib"))

# run.json keys that describe one execution, not its results (they differ between any two runs)
PER_EXECUTION = {"started", "finished", "timings_s", "case_seconds", "outputs", "notes", "merged_from"}
PER_EXECUTION_SUMMARY = {"cases_reused_from_earlier_run"}
PER_EXECUTION_INPUTS = {"shard", "output"}
CASES_PER_SHARD = (2, 3, 2)


def make_data(dest: Path, n_shards: int) -> None:
    from fmcib_testlib.export_builder import make_study
    from pydicom.uid import generate_uid

    from mhub_fmcib.batch.store import shard_of
    from mhub_fmcib.model.weights import write_random_weights

    export = dest / "export"
    wanted = list(CASES_PER_SHARD) if n_shards == 3 else [2] * n_shards
    n = 0
    picked: list[tuple[int, int]] = []
    while any(wanted):
        # make_study derives its series UID from this entropy: the case id whose hash picks the shard
        shard = shard_of(generate_uid(entropy_srcs=[f"export-{n}-series"]), n_shards)
        if wanted[shard]:
            wanted[shard] -= 1
            make_study(export, n, slices=slice(14, 34), extra_lesion=n % 2 == 1)
            picked.append((n, shard))
        n += 1
    broken = next(n for n, s in picked if s == 0)
    sorted((export / f"study{broken}").glob("IM*"))[10].unlink()  # a missing slice: that case fails
    (export / "README.txt").write_text("not a DICOM file\n", encoding="utf-8")
    write_random_weights(dest / "weights.torch", seed=0)
    for n, s in picked:
        print(f"study{n}: shard {s}/{n_shards}" + (" (one slice removed: fails)" if n == broken else ""))


def _results(folder: Path) -> tuple[bytes, bytes, dict[str, Any]]:
    doc = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    for key in PER_EXECUTION:
        doc.pop(key, None)
    for key in PER_EXECUTION_SUMMARY:
        doc["summary"].pop(key, None)
    for key in PER_EXECUTION_INPUTS:
        doc["inputs"].pop(key, None)
    return (folder / "features.csv").read_bytes(), (folder / "failures.csv").read_bytes(), doc


def _files(folder: Path) -> list[str]:
    """Relative paths of the DICOM outputs and QC pictures (their UIDs and times differ per run)."""
    return sorted(
        str(p.relative_to(folder)) for sub in ("dicom", "qc") for p in (folder / sub).rglob("*") if p.is_file()
    )


def same(single: Path, merged: Path) -> int:
    a, b = _results(single), _results(merged)
    names = ("features.csv", "failures.csv", "run.json")
    diffs = [name for name, x, y in zip(names, a, b, strict=True) if x != y]
    if _files(single) != _files(merged):
        diffs.append("dicom/ and qc/ file names")
    if "run.json" in diffs:
        for key in sorted(set(a[2]) | set(b[2])):
            if a[2].get(key) != b[2].get(key):
                print(f"run.json[{key!r}]: single {a[2].get(key)!r}\n    merged {b[2].get(key)!r}", file=sys.stderr)
    if diffs:
        print(f"merged differs from single run in: {', '.join(diffs)}", file=sys.stderr)
        return 1
    n_rows = len(a[0].splitlines()) - 1
    n_fail = len(a[1].splitlines()) - 1
    print(
        f"merged = single run ({n_rows} feature rows, {n_fail} failure row(s), run.json results and "
        f"{len(_files(single))} DICOM/QC file names equal)"
    )
    return 0


def resumed(shard: Path) -> int:
    doc = json.loads((shard / "run.json").read_text(encoding="utf-8"))
    reused = doc["summary"]["cases_reused_from_earlier_run"]
    note = next((n for n in doc["notes"] if n.startswith("shard ")), "")
    print(f"{shard.name}: {reused} finished case(s) skipped on resubmission ({note})")
    return 0 if reused >= 1 and not doc["summary"]["interrupted"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make-data")
    mk.add_argument("dest", type=Path)
    mk.add_argument("--shards", type=int, default=3)
    sm = sub.add_parser("same")
    sm.add_argument("single", type=Path)
    sm.add_argument("merged", type=Path)
    rs = sub.add_parser("resumed")
    rs.add_argument("shard", type=Path)
    args = p.parse_args(argv)
    if args.command == "make-data":
        make_data(args.dest, args.shards)
        return 0
    if args.command == "same":
        return same(args.single, args.merged)
    return resumed(args.shard)


if __name__ == "__main__":
    sys.exit(main())
