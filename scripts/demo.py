"""``make demo``: run the DICOM workflow on ``sample_data/`` and say where the results are.

Weights are resolved as for every run (``--weights``, ``FMCIB_WEIGHTS``, the user cache,
else the published file is downloaded). When that fails (offline, no weights), the demo
says so and, so that the chain can still be seen, runs with a random-initialised encoder
whose features are meaningless; ``run.json`` records that weights file's sha256.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mhub_fmcib.cli import main as cli_main
from mhub_fmcib.errors import WeightsError
from mhub_fmcib.model.weights import write_random_weights
from mhub_fmcib.model.weights_file import resolve_weights

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--output", type=Path, default=ROOT / "demo_output")
    ap.add_argument("--weights", type=Path)
    args = ap.parse_args()
    weights = args.weights
    try:
        weights = resolve_weights(weights, dict(os.environ)).path
    except WeightsError as e:
        print(f"\n*** {e}\n", file=sys.stderr)
        # a new name: a cached file of an older version lacks the demonstration mark
        weights = ROOT / ".cache" / "demo-random-weights-marked.torch"
        if not weights.is_file():
            write_random_weights(weights, seed=0)
        print(
            f"*** DEMO ONLY: using random-initialised weights {weights}: the features are "
            "NOT FMCIB features. Pass --weights to use the published model.\n",
            file=sys.stderr,
        )
    code = cli_main(["run", str(ROOT / "sample_data" / "dicom"), str(args.output), "--weights", str(weights)])
    print(
        f"\nResults: {args.output}/features.csv, {args.output}/run.json, "
        f"{args.output}/dicom/ (SR, SEG), {args.output}/qc/index.html  (exit code {code})"
    )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
