"""Command line: ``mhub-fmcib run|version|workflows``.

Exit codes: 0 every lesion succeeded; 1 some lesion or case failed (results for the others
are written); 2 usage or configuration error; 3 input missing or empty; 4 output folder
not writable; 5 weights missing or invalid.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import __version__
from .cases import infer_input_kind
from .config import RunConfig
from .errors import ConfigError, WeightsError

log = logging.getLogger("mhub_fmcib")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT, EXIT_WEIGHTS = 0, 1, 2, 3, 4, 5


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="DICOM folder, image file (with --mask) or seeds CSV (with --seeds)")
    p.add_argument("output", type=Path, help="output folder (created if needed)")
    p.add_argument("--mask", type=Path, help="label mask for an image-file INPUT (each non-zero label is a lesion)")
    p.add_argument(
        "--seeds",
        action="store_true",
        help="INPUT is a seeds CSV: image_path,coordX,coordY,coordZ in LPS mm (+ passthrough columns)",
    )
    p.add_argument(
        "--segments",
        action="append",
        default=[],
        help="measure only these SEG segments, by number or label (repeat or comma-separate)",
    )
    p.add_argument("--weights", type=Path, help="encoder weights file (else $FMCIB_WEIGHTS, else the user cache)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=4, help="patches per forward pass (default 4)")
    p.add_argument(
        "--head", action="append", type=Path, default=[], help="linear head file from mhub-fmcib-train probe"
    )
    p.add_argument("--workflow", help="named workflow (see `mhub-fmcib workflows`)")
    p.add_argument("--no-sr", action="store_true", help="do not write DICOM SR")
    p.add_argument("--no-seg", action="store_true", help="do not write the patch-region DICOM SEG")
    p.add_argument("--no-qc", action="store_true", help="do not write QC pictures")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mhub-fmcib", description="FMCIB foundation-model features from DICOM CT and segmentations."
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="measure every lesion of INPUT into OUTPUT")
    _add_run_args(run_p)
    ver = sub.add_parser("version", help="print versions of the software and the weights' sha256")
    ver.add_argument("--weights", type=Path)
    sub.add_parser("workflows", help="list the named workflows")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's one configuration object, from parsed arguments (and a workflow file)."""
    segments = tuple(s.strip() for item in args.segments for s in item.split(",") if s.strip())
    kind = infer_input_kind(args.input, args.seeds)
    common: dict[str, object] = dict(
        mask=args.mask,
        segments=segments,
        weights=args.weights,
        device=args.device,
        batch_size=args.batch_size,
        heads=tuple(args.head),
    )
    if args.workflow:
        from .workflows import load_workflow, make_run_config

        wf = load_workflow(args.workflow)
        if wf.input_kind is not kind:
            raise ConfigError(
                f"workflow {wf.name} reads {wf.input_kind.value} input, but {args.input} is "
                f"{kind.value}; pick the matching workflow (`mhub-fmcib workflows`)"
            )
        for flag, key in ((args.no_sr, "export_sr"), (args.no_seg, "export_seg"), (args.no_qc, "export_qc")):
            if flag:
                common[key] = False
        return make_run_config(wf, args.input, args.output, **common)
    return RunConfig(
        input=args.input,
        output=args.output,
        input_kind=kind,
        export_sr=not args.no_sr,
        export_seg=not args.no_seg,
        export_qc=not args.no_qc,
        **common,  # type: ignore[arg-type]
    )


def check_paths(config: RunConfig) -> int:
    """Exit code for a missing/empty input or unwritable output, else 0 (message logged)."""
    if not config.input.exists():
        log.error("input %s does not exist", config.input)
        return EXIT_INPUT
    if config.input.is_dir() and not any(config.input.iterdir()):
        log.error("input folder %s is empty: nothing to process", config.input)
        return EXIT_INPUT
    try:
        config.output.mkdir(parents=True, exist_ok=True)
        probe = config.output / ".mhub-fmcib-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        log.error("output folder %s is not writable (%s); mount or choose a writable folder", config.output, e)
        return EXIT_OUTPUT
    return EXIT_OK


def cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .pipeline import run

    config = config_from_args(args)
    code = check_paths(config)
    if code:
        return code
    report = run(config, env)
    log.info(
        "%d lesion(s) measured, %d failed; results in %s",
        report.n_ok,
        report.n_failed,
        config.output / "features.csv",
    )
    return report.exit_code


def cmd_version(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .encoder import sha256_file
    from .provenance import collect_provenance
    from .weights import resolve_weights

    try:
        loc = resolve_weights(args.weights, env, allow_download=False)
    except WeightsError as e:
        print(f"mhub-fmcib {__version__}\nweights    not found ({e})")
        return EXIT_OK
    print(collect_provenance(sha256_file(loc.path), loc.path.name).as_text())
    return EXIT_OK


def cmd_workflows(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .workflows import list_workflows

    for wf in list_workflows():
        print(f"{wf.name:18s} {wf.description}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point of the ``mhub-fmcib`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    env = dict(os.environ) if env is None else env
    commands = {"run": cmd_run, "version": cmd_version, "workflows": cmd_workflows}
    try:
        return commands[args.command](args, env)
    except WeightsError as e:
        log.error("%s", e)
        return EXIT_WEIGHTS
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
