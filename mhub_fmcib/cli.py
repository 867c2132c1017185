"""Command line: ``mhub-fmcib run|version|workflows``.

Exit codes: 0 every lesion succeeded; 1 some lesion or case failed (results for the others
are written); 2 usage or configuration error; 3 input missing or empty; 4 output folder
not writable; 5 weights missing or invalid.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import __version__
from .config import InputKind, RunConfig
from .errors import ConfigError, FmcibError, WeightsError
from .pipeline import StopFlag
from .plan import infer_input_kind

log = logging.getLogger("mhub_fmcib")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT, EXIT_WEIGHTS = 0, 1, 2, 3, 4, 5


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="DICOM folder, image file (with --mask) or seeds CSV (with --seeds)")
    p.add_argument("output", type=Path, nargs="?", help="output folder (created if needed)")
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
    p.add_argument("--batch-size", type=int, default=8, help="patches per forward pass (default 8)")
    p.add_argument(
        "--head", action="append", type=Path, default=[], help="linear head file from mhub-fmcib-train probe"
    )
    p.add_argument("--workflow", help="named workflow (see `mhub-fmcib workflows`)")
    p.add_argument("--no-sr", action="store_true", help="do not write DICOM SR")
    p.add_argument("--no-seg", action="store_true", help="do not write the patch-region DICOM SEG")
    p.add_argument("--no-qc", action="store_true", help="do not write QC pictures")
    p.add_argument(
        "--sr-max-lesions",
        type=int,
        default=50,
        help="largest number of lesions in one SR (each adds 4096 measurements; default 50)",
    )
    p.add_argument(
        "--optimize-cpu",
        action="store_true",
        help="trace and freeze the encoder on CPU (~10-15%% faster for many lesions, ~1.6 GB more memory)",
    )
    p.add_argument("--shard", help="i/N: process only shard i (0-based) of N, split by series UID hash")
    p.add_argument("--no-resume", action="store_true", help="re-run cases already finished in OUTPUT")
    p.add_argument("--workers", type=int, default=1, help="processes for reading DICOM headers (default 1)")
    p.add_argument(
        "--progress",
        default="auto",
        choices=["auto", "bar", "json", "none"],
        help="progress display: bar on a terminal (auto), JSON lines on stdout, or none",
    )
    g = p.add_argument_group("DICOMweb (INPUT is then not used: pass the output folder only)")
    g.add_argument("--dicomweb", metavar="URL", help="DICOMweb base URL of the research PACS")
    g.add_argument("--study", action="append", default=[], help="StudyInstanceUID to process (repeatable)")
    g.add_argument("--studies", type=Path, help="file with one StudyInstanceUID per line")
    g.add_argument("--query", action="append", default=[], help="QIDO-RS filter KEY=VALUE (repeatable)")
    g.add_argument("--store", action="store_true", help="STOW-RS the SR and SEG back to the server")
    g.add_argument("--credentials", type=Path, help="file with one line user:password (basic auth)")
    g.add_argument("--token-file", type=Path, help="file holding a bearer token")
    g.add_argument("--ca-bundle", type=Path, help="CA bundle to verify the server's TLS certificate")
    g.add_argument("--cache-limit-mb", type=int, default=20_000, help="size limit of the pull cache (MB)")


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
    idx = sub.add_parser("index", help="index a DICOM folder (kept in OUTPUT/index.sqlite) and print a summary")
    idx.add_argument("input", type=Path)
    idx.add_argument("output", type=Path)
    idx.add_argument("--workers", type=int, default=1)
    ct = sub.add_parser("container", help="the container entrypoint: MHub paths, banner, checked mounts")
    ct.add_argument("--workflow", default="default", help="named workflow (default: default)")
    ct.add_argument("--input", type=Path, default=Path("/app/data/input_data"))
    ct.add_argument("--output", type=Path, default=Path("/app/data/output_data"))
    ct.add_argument("--mask", type=Path)
    ct.add_argument("--segments", action="append", default=[])
    ct.add_argument("--weights", type=Path)
    ct.add_argument("--device", default="auto")
    ct.add_argument("--batch-size", type=int, default=8)
    ct.add_argument("--head", action="append", type=Path, default=[])
    ct.add_argument("--no-qc", action="store_true")
    ct.add_argument("--progress", default="auto", choices=["auto", "bar", "json", "none"])
    for flag, kw in (
        ("--dicomweb", {}),
        ("--studies", {"type": Path}),
        ("--credentials", {"type": Path}),
        ("--token-file", {"type": Path}),
        ("--ca-bundle", {"type": Path}),
    ):
        ct.add_argument(flag, **kw)  # type: ignore[arg-type]
    ct.add_argument("--shard", help="i/N: process only shard i of N")
    ct.add_argument("--sr-max-lesions", type=int, default=50)
    ct.add_argument("--optimize-cpu", action="store_true")
    ct.add_argument("--no-resume", action="store_true")
    ct.add_argument("--workers", type=int, default=1)
    ct.add_argument("--study", action="append", default=[])
    ct.add_argument("--query", action="append", default=[])
    ct.add_argument("--store", action="store_true")
    ct.add_argument("--cache-limit-mb", type=int, default=20_000)
    mg = sub.add_parser("merge", help="join the outputs of shards into one features.csv and run.json")
    mg.add_argument("shards", type=Path, nargs="+", help="output folders of the shards")
    mg.add_argument("--output", type=Path, required=True, help="merged output folder")
    return parser


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/N"`` -> (i, N)."""
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as e:
        raise ConfigError(f"--shard must look like 0/4 (shard index / number of shards), got {text!r}") from e
    return i, n


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's one configuration object, from parsed arguments (and a workflow file)."""
    segments = tuple(s.strip() for item in args.segments for s in item.split(",") if s.strip())
    if args.output is None:
        raise ConfigError("missing OUTPUT folder: mhub-fmcib run INPUT OUTPUT")
    kind = infer_input_kind(args.input, args.seeds)
    common: dict[str, object] = dict(
        mask=args.mask,
        segments=segments,
        weights=args.weights,
        device=args.device,
        batch_size=args.batch_size,
        heads=tuple(args.head),
        shard=parse_shard(args.shard),
        resume=not args.no_resume,
        index_workers=args.workers,
        sr_max_lesions=args.sr_max_lesions,
        optimize_cpu=getattr(args, "optimize_cpu", False),
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


def unwritable(folder: Path) -> OSError | None:
    """Create ``folder`` if needed and write/remove a probe file; the error, or ``None``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".mhub-fmcib-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return e
    return None


def check_paths(config: RunConfig) -> int:
    """Exit code for a missing/empty input or unwritable output, else 0 (message logged)."""
    if not config.input.exists():
        log.error("input %s does not exist", config.input)
        return EXIT_INPUT
    if config.input.is_dir() and not any(config.input.iterdir()):
        log.error("input folder %s is empty: nothing to process", config.input)
        return EXIT_INPUT
    problem = unwritable(config.output)
    if problem is not None:
        log.error("output folder %s is not writable (%s); mount or choose a writable folder", config.output, problem)
        return EXIT_OUTPUT
    return EXIT_OK


def install_stop_handlers(stop: StopFlag) -> None:
    """SIGINT/SIGTERM finish the case in flight, write the outputs, and exit 130."""

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.requested:  # second signal: stop now
            raise KeyboardInterrupt
        log.warning("%s received: finishing the case in flight, then writing outputs (again to abort)", name)
        stop.request(name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .batch.progress import make_progress
    from .pipeline import StopFlag, run

    if args.dicomweb:
        return cmd_run_dicomweb(args, env)
    config = config_from_args(args)
    code = check_paths(config)
    if code:
        return code
    stop = StopFlag()
    install_stop_handlers(stop)
    report = run(config, env, progress=make_progress(args.progress, sys.stderr.isatty()), stop=stop)
    log.info(
        "%d lesion(s) measured, %d failed; results in %s",
        report.n_ok,
        report.n_failed,
        config.output / "features.csv",
    )
    return report.exit_code


def cmd_version(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .model.weights import resolve_weights, sha256_file
    from .provenance import collect_provenance

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
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    commands = {
        "container": cmd_container,
        "run": cmd_run,
        "version": cmd_version,
        "workflows": cmd_workflows,
        "index": cmd_index,
        "merge": cmd_merge,
    }
    try:
        return commands[args.command](args, env)
    except WeightsError as e:
        log.error("%s", e)
        return EXIT_WEIGHTS
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_USAGE
    except FmcibError as e:
        log.error("%s", e)
        return EXIT_FAILURES
    except KeyboardInterrupt:
        log.error("aborted")
        return 130


BANNER = (
    "mhub-fmcib {version} — FMCIB (Pai et al., Nature Machine Intelligence 2024, "
    "doi:10.1038/s42256-024-00807-9). Research use only; weights CC BY-NC 4.0."
)


def _has_file_for(path: Path, kind: InputKind) -> bool:
    from .dicom.index import iter_files

    if kind is InputKind.DICOM_FOLDER:
        for p in iter_files(path):
            try:
                with open(p, "rb") as f:
                    head = f.read(132)
            except OSError:
                continue
            if head[128:132] == b"DICM":
                return True
        return False
    if kind is InputKind.SEEDS_CSV:
        return path.is_file() and path.suffix.lower() == ".csv"
    return path.is_file()


def cmd_container(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """The image's entrypoint (see docs/container.md): banner, mount checks before the model
    is loaded (exit 3 input, 4 output, 5 weights), then the workflow's run."""
    from .batch.progress import make_progress
    from .model.extractor import FeatureExtractor
    from .model.weights import read_weights, resolve_weights
    from .pipeline import StopFlag, run
    from .workflows import load_workflow

    print(BANNER.format(version=__version__), file=sys.stderr)
    wf = load_workflow(args.workflow)
    inp: Path = args.input
    if args.dicomweb is None:
        if wf.input_kind is InputKind.SEEDS_CSV and inp.is_dir():
            csvs = sorted(inp.glob("*.csv"))
            inp = csvs[0] if len(csvs) == 1 else inp
        if not inp.exists() or (inp.is_dir() and not any(inp.iterdir())) or not _has_file_for(inp, wf.input_kind):
            what = {
                InputKind.DICOM_FOLDER: "no DICOM file",
                InputKind.SEEDS_CSV: "no seeds CSV",
                InputKind.IMAGE_FILE: "no image file (pass --input IMAGE --mask MASK)",
            }[wf.input_kind]
            log.error(
                "input %s: missing, empty or %s for workflow %s. Mount your data with "
                "-v /path/to/data:/app/data/input_data:ro",
                inp,
                what,
                wf.name,
            )
            return EXIT_INPUT
    e = unwritable(args.output)
    if e is not None:
        log.error(
            "output %s is not writable by uid %d gid %d (%s). Mount a writable folder at "
            '/app/data/output_data and run with --user "$(id -u):$(id -g)"',
            args.output,
            os.getuid(),
            os.getgid(),
            e,
        )
        return EXIT_OUTPUT
    try:
        loc = resolve_weights(args.weights, env, allow_download=False)
        weights = read_weights(loc.path)
    except WeightsError as e:
        log.error("%s. Pass another weights file with -v FILE:/weights/w.torch:ro -e FMCIB_WEIGHTS=/weights/w.torch", e)
        return EXIT_WEIGHTS
    print(f"workflow {wf.name}; device {args.device}; weights {loc.path} sha256 {weights.sha256}", file=sys.stderr)
    run_args = argparse.Namespace(
        input=inp,
        output=args.output,
        mask=args.mask,
        seeds=wf.input_kind is InputKind.SEEDS_CSV,
        segments=args.segments,
        weights=loc.path,
        device=args.device,
        batch_size=args.batch_size,
        head=args.head,
        workflow=wf.name,
        no_sr=False,
        no_seg=False,
        no_qc=args.no_qc,
        shard=args.shard,
        no_resume=args.no_resume,
        sr_max_lesions=args.sr_max_lesions,
        optimize_cpu=args.optimize_cpu,
        workers=args.workers,
        progress=args.progress,
        dicomweb=args.dicomweb,
        study=args.study,
        studies=args.studies,
        query=args.query,
        store=args.store,
        credentials=args.credentials,
        token_file=args.token_file,
        ca_bundle=args.ca_bundle,
        cache_limit_mb=args.cache_limit_mb,
    )
    if args.dicomweb:
        run_args.input, run_args.output = args.output, None
        return cmd_run_dicomweb(run_args, env)
    config = config_from_args(run_args)
    stop = StopFlag()
    install_stop_handlers(stop)
    extractor = FeatureExtractor(
        weights, device=config.device, batch_size=config.batch_size, optimize=config.optimize_cpu
    )
    report = run(
        config, env, extractor=extractor, progress=make_progress(args.progress, sys.stderr.isatty()), stop=stop
    )
    log.info("%d lesion(s) measured, %d failed; results in %s", report.n_ok, report.n_failed, config.output)
    return report.exit_code


def cmd_index(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .dicom.index import InstanceKind
    from .dicom.index_db import index_folder_cached

    if not args.input.exists():
        log.error("input %s does not exist", args.input)
        return EXIT_INPUT
    args.output.mkdir(parents=True, exist_ok=True)
    idx, stats = index_folder_cached(args.input, args.output / "index.sqlite", workers=args.workers)
    studies = {r.study_instance_uid for r in idx.instances}
    reasons: dict[str, int] = {}
    for s in idx.skipped:
        reasons[s.reason.value] = reasons.get(s.reason.value, 0) + 1
    rows = [
        ("studies", len(studies)),
        ("CT series", len(idx.by_series(InstanceKind.CT))),
        ("SEG instances", len(idx.of_kind(InstanceKind.SEG))),
        ("RTSTRUCT instances", len(idx.of_kind(InstanceKind.RTSTRUCT))),
        ("files read", stats.read),
        ("files reused from index", stats.reused),
    ]
    rows += [(f"skipped: {k}", v) for k, v in sorted(reasons.items())]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v:>8}" for k, v in rows))
    return EXIT_OK


def cmd_merge(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .batch.merge import merge_outputs

    report = merge_outputs(args.shards, args.output)
    print(f"merged {len(args.shards)} output(s): {report.n_ok} lesion(s) in {args.output / 'features.csv'}")
    return report.exit_code


def cmd_run_dicomweb(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``run --dicomweb URL --study UID OUTPUT``: INPUT is absent, the positional is OUTPUT."""
    from .dicomweb.run import run_dicomweb
    from .dicomweb.settings import DicomWebSettings, credentials_from

    output = args.output or args.input
    if args.output is not None:
        raise ConfigError("with --dicomweb give only OUTPUT (the studies come from the server)")
    creds = credentials_from(env, args.credentials, args.token_file)
    settings = DicomWebSettings.with_credentials(
        args.dicomweb,
        creds,
        ca_bundle=args.ca_bundle,
        cache_dir=output / ".dicomweb-cache",
        cache_limit_bytes=args.cache_limit_mb * 1_000_000,
    )
    extractor_holder: list[object] = []

    def process_folder(folder: Path, out: Path) -> list[Path]:
        from .pipeline import load_extractor, run

        args_copy = argparse.Namespace(**{**vars(args), "input": folder, "output": out, "dicomweb": None})
        config = config_from_args(args_copy)
        if not extractor_holder:
            extractor_holder.append(load_extractor(config, env))
        report = run(config, env, extractor=extractor_holder[0])  # type: ignore[arg-type]
        if report.n_failed:
            log.warning("study folder %s: %d failure(s), see %s", folder, report.n_failed, out / "run.json")
        return [Path(p) for p in report.outputs if p.endswith(".dcm")]

    output.mkdir(parents=True, exist_ok=True)
    rep = run_dicomweb(
        settings,
        args.study,
        output,
        process_folder,
        args.store,
        studies_file=args.studies,
        queries=args.query,
        include_unsegmented=args.seeds,
    )
    from .export.tables import write_json

    write_json(output / "dicomweb.json", rep.to_json())
    for st in rep.studies:
        print(f"{st.study_uid}: {st.status.value}{(' (' + str(st.error) + ')') if st.error else ''}")
    return 0 if rep.ok else EXIT_FAILURES


if __name__ == "__main__":
    raise SystemExit(main())
