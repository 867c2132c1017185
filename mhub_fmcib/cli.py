"""Command line: ``mhub-fmcib run|version|workflows|index|container|merge``: argparse to a
:class:`~mhub_fmcib.config.RunConfig` (:meth:`RunConfig.from_args`) and the exit code; nothing else.

torch and the pipeline are imported by the commands that load the encoder (``run``,
``container``) once their arguments and paths are checked: ``--help``, a usage error,
``version``, ``workflows``, ``index`` and ``merge`` start without them.

Exit codes: 0 every lesion succeeded; 1 some lesion or case failed (results for the others
are written); 2 usage or configuration error; 3 input missing or empty; 4 output folder
not writable; 5 weights missing or invalid.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from . import __version__
from .batch.diskfull import OutputFullError, disk_full_message, is_disk_full
from .batch.lock import OutputLock
from .batch.progress import make_progress
from .config import InputKind, RunConfig, parse_precision
from .dicom.index import InstanceKind, iter_files
from .dicom.index_db import index_folder_cached
from .dicom.read import looks_like_dicom
from .errors import ConfigError, FmcibError, NothingToMeasureError, WeightsError
from .export.atomic import TMP_PREFIX, atomic_write_json
from .model.weights_file import default_cache_dir, resolve_weights, sha256_file
from .provenance import collect_provenance
from .terminal import SafeFormatter, escape_control
from .workflows import Workflow, list_workflows, load_workflow

if TYPE_CHECKING:  # imported where they run: torch is not loaded for --help, index, merge
    from .model.extractor import FeatureExtractor
    from .pipeline import StopFlag

log = logging.getLogger("mhub_fmcib")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT, EXIT_WEIGHTS = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130


def _add_settings_args(p: argparse.ArgumentParser) -> None:
    """The settings ``run`` and ``container`` share (each becomes a :class:`RunConfig` field
    in :meth:`RunConfig.from_args`, or a DICOMweb setting): a new flag is added here only."""
    p.add_argument("--mask", type=Path, help="label mask for an image-file INPUT (each non-zero label is a lesion)")
    p.add_argument(
        "--segments",
        action="append",
        default=[],
        help="measure only these SEG segments, by number or label (repeat or comma-separate)",
    )
    p.add_argument("--weights", type=Path, help="encoder weights file (else $FMCIB_WEIGHTS, else the user cache)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument(
        "--batch-size",
        default="auto",
        help="patches per forward pass, or auto (default: by free memory, at most 16 on CPU; on CUDA "
        "from the free GPU memory and a probe batch)",
    )
    p.add_argument(
        "--head", action="append", type=Path, default=[], help="linear head file from mhub-fmcib-train probe"
    )
    p.add_argument("--no-sr", action="store_true", help="do not write DICOM SR")
    p.add_argument("--no-seg", action="store_true", help="do not write the patch-region DICOM SEG")
    p.add_argument("--no-qc", action="store_true", help="do not write QC pictures")
    p.add_argument(
        "--sr-max-lesions",
        type=int,
        default=50,
        help="largest number of lesions in one SR (each adds 4096 measurements; default 50); "
        "a CT series with more lesions gets several SRs, each with at most this many",
    )
    p.add_argument(
        "--cpu-encoder",
        default="fused",
        choices=["fused", "eager"],
        help="on a CPU in fp32: fused (default: folded, pre-packed oneDNN convolutions, ~1.4x eager, "
        "~0.5 s set-up) or eager (the PyTorch network as written); the same features up to float32 rounding",
    )
    p.add_argument(
        "--optimize-cpu",
        action="store_true",
        help="obsolete and ignored: the traced encoder it chose was replaced by the fused one, the default",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="encoder arithmetic: fp32 (default, the reference's numbers), bf16 (CUDA, or a CPU with "
        "AVX-512 BF16/AMX) or fp16 (CUDA); recorded in run.json, features.csv and the SR",
    )
    p.add_argument("--channels-last", action="store_true", help="run the encoder in the channels-last-3d memory format")
    p.add_argument(
        "--prefetch",
        default="auto",
        choices=["auto", "on", "off"],
        help="prepare the next case (decoding, patches) while the encoder runs the current one "
        "(default auto: on with CUDA, off on CPU)",
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
    g.add_argument(
        "--dicomweb-timeout",
        type=float,
        metavar="SECONDS",
        help="deadline for the transfers of one study (pull, and again store); a study that takes longer "
        "fails and the run goes on (default 600, DicomWebSettings.study_timeout_s)",
    )


class SafeArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors (which echo the arguments given) escape control characters."""

    def error(self, message: str) -> NoReturn:
        super().error(escape_control(message))


CONTAINER_DESCRIPTION = """\
Measure every lesion of the mounted input with FMCIB (the image's ENTRYPOINT).

Defaults are MHub's layout: mount your data read-only at /app/data/input_data and a
writable folder at /app/data/output_data, e.g.
  docker run --rm --network none --user "$(id -u):$(id -g)" \\
    -v /data/study:/app/data/input_data:ro -v /data/results:/app/data/output_data IMAGE
Options after the image name replace its default command (--workflow default --input
/app/data/input_data --output /app/data/output_data). The mounts and the weights are
checked before the model is loaded.

Exit codes: 0 all measured; 1 some lesions or series failed (see run.json); 2 usage;
3 input missing or empty; 4 output not writable; 5 weights missing or invalid."""


def build_parser() -> argparse.ArgumentParser:
    parser = SafeArgumentParser(
        prog="mhub-fmcib", description="FMCIB foundation-model features from DICOM CT and segmentations."
    )
    parser.add_argument("--version", action="version", version=f"mhub-fmcib {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="measure every lesion of INPUT into OUTPUT")
    run_p.add_argument("input", type=Path, help="DICOM folder, image file (with --mask) or seeds CSV (with --seeds)")
    run_p.add_argument("output", type=Path, nargs="?", help="output folder (created if needed)")
    run_p.add_argument(
        "--seeds",
        action="store_true",
        help="INPUT is a seeds CSV: image_path,coordX,coordY,coordZ in LPS mm (+ passthrough columns)",
    )
    run_p.add_argument("--workflow", help="named workflow (see `mhub-fmcib workflows`)")
    _add_settings_args(run_p)
    ver = sub.add_parser("version", help="print versions of the software and the weights' sha256")
    ver.add_argument("--weights", type=Path)
    sub.add_parser("workflows", help="list the named workflows")
    idx = sub.add_parser("index", help="index a DICOM folder (kept in OUTPUT/index.sqlite) and print a summary")
    idx.add_argument("input", type=Path)
    idx.add_argument("output", type=Path)
    idx.add_argument("--workers", type=int, default=1)
    ct = sub.add_parser(
        "container",
        help="the container entrypoint: MHub paths, banner, checked mounts",
        description=CONTAINER_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ct.add_argument(
        "--workflow",
        help="named workflow: default, from_rtstruct, from_nifti_mask, from_seeds "
        "(default: default, or from_seeds with --seeds)",
    )
    ct.add_argument(
        "--input",
        type=Path,
        default=Path("/app/data/input_data"),
        help="the mounted input: DICOM folder, image file (with --mask), seeds CSV or a folder "
        "holding one CSV (default /app/data/input_data)",
    )
    ct.add_argument(
        "--output",
        type=Path,
        default=Path("/app/data/output_data"),
        help="the mounted output folder, writable by the container's user (default /app/data/output_data)",
    )
    ct.add_argument(
        "--seeds",
        action="store_true",
        help="the input is a seeds CSV (image_path,coordX,coordY,coordZ in LPS mm): the from_seeds workflow",
    )
    _add_settings_args(ct)
    mg = sub.add_parser("merge", help="join the outputs of shards into one features.csv and run.json")
    mg.add_argument("shards", type=Path, nargs="+", help="output folders of the shards")
    mg.add_argument("--output", type=Path, required=True, help="merged output folder")
    return parser


def unwritable(folder: Path) -> OSError | None:
    """Create ``folder`` if needed and write/remove a probe file; the error, or ``None``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f"{TMP_PREFIX}write-test"
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


def _run_reported(config: RunConfig, env: Mapping[str, str], progress: str, extractor: FeatureExtractor | None) -> int:
    """Run with stop handlers and the chosen progress display; log the summary."""
    from .pipeline import StopFlag, run

    stop = StopFlag()
    install_stop_handlers(stop)
    with OutputLock(config.output):  # one run per OUTPUT (a second one exits 2)
        report = run(config, env, extractor=extractor, progress=make_progress(progress, sys.stderr.isatty()), stop=stop)
        if report.nothing_to_measure:
            log.error("%s", report.nothing_to_measure)
    log.info(
        "%d lesion(s) measured, %d failed; results in %s",
        report.n_ok,
        report.n_failed,
        config.output / "features.csv",
    )
    return report.exit_code


def cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.dicomweb:  # the positional is then OUTPUT
        if args.output is not None:
            raise ConfigError("with --dicomweb give only OUTPUT (the studies come from the server)")
        return run_dicomweb_studies(RunConfig.from_args(args, output=args.input), args, env)
    config = RunConfig.from_args(args)
    code = check_paths(config)
    if code:
        return code
    return _run_reported(config, env, args.progress, None)


def cmd_version(args: argparse.Namespace, env: Mapping[str, str]) -> int:

    try:
        loc = resolve_weights(args.weights, env, allow_download=False)
    except WeightsError as e:
        print(f"mhub-fmcib {__version__}\nweights    not found ({escape_control(str(e))})")
        return EXIT_OK
    text = collect_provenance(sha256_file(loc.path), loc.path.name).as_text()
    print("\n".join(escape_control(line) for line in text.splitlines()))
    return EXIT_OK


def cmd_workflows(args: argparse.Namespace, env: Mapping[str, str]) -> int:

    for wf in list_workflows():
        print(f"{wf.name:18s} {wf.description}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point of the ``mhub-fmcib`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    # every log line with its control characters escaped (input text cannot drive the terminal)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    logging.captureWarnings(True)  # warnings of libraries (pydicom) through the same formatter
    env = dict(os.environ) if env is None else env
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    if getattr(args, "optimize_cpu", False):
        log.warning(
            "--optimize-cpu is obsolete and ignored: the fused CPU encoder (--cpu-encoder fused) is the default"
        )
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
    except NothingToMeasureError as e:
        log.error("%s", e)
        return EXIT_INPUT
    except WeightsError as e:
        log.error("%s", e)
        return EXIT_WEIGHTS
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_USAGE
    except FmcibError as e:
        log.error("%s", e)
        return EXIT_FAILURES
    except OutputFullError as e:
        log.error("%s", e)
        return EXIT_OUTPUT
    except (OSError, sqlite3.OperationalError) as e:
        if not is_disk_full(e):
            raise
        log.error("%s", disk_full_message(Path(getattr(args, "output", None) or "."), e, 0, 0, 0))
        return EXIT_OUTPUT
    except KeyboardInterrupt:
        log.error("aborted")
        return EXIT_INTERRUPTED


BANNER = (
    "mhub-fmcib {version} — FMCIB (Pai et al., Nature Machine Intelligence 2024, "
    "doi:10.1038/s42256-024-00807-9). Research use only; weights CC BY-NC 4.0."
)


def _has_file_for(path: Path, kind: InputKind) -> bool:

    if kind is InputKind.DICOM_FOLDER:
        for p in iter_files(path):
            try:
                with open(p, "rb") as f:
                    head = f.read(132)
            except OSError:
                continue
            if head[128:132] == b"DICM" or looks_like_dicom(p):  # also files without the preamble
                return True
        return False
    if kind is InputKind.SEEDS_CSV:
        return path.is_file() and path.suffix.lower() == ".csv"
    return path.is_file()


def container_input(inp: Path, kind: InputKind) -> Path:
    """The mounted input: for a seeds workflow, the one CSV of a mounted folder."""
    if kind is InputKind.SEEDS_CSV and inp.is_dir():
        csvs = sorted(inp.glob("*.csv"))
        return csvs[0] if len(csvs) == 1 else inp
    return inp


def check_mounts(inp: Path | None, output: Path, wf: Workflow) -> int:
    """Exit code 3 (input) or 4 (output) with a message on how to mount, else 0.
    ``inp`` is ``None`` for DICOMweb runs (no input mount)."""
    if inp is not None and (
        not inp.exists() or (inp.is_dir() and not any(inp.iterdir())) or not _has_file_for(inp, wf.input_kind)
    ):
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
    e = unwritable(output)
    if e is not None:
        log.error(
            "output %s is not writable by uid %d gid %d (%s). Mount a writable folder at "
            '/app/data/output_data and run with --user "$(id -u):$(id -g)"',
            output,
            os.getuid(),
            os.getgid(),
            e,
        )
        return EXIT_OUTPUT
    return EXIT_OK


def container_workflow(args: argparse.Namespace) -> Workflow:
    """The entrypoint's workflow: ``--workflow``, else ``from_seeds`` with ``--seeds``, else
    ``default``.

    Raises:
        ConfigError: ``--seeds`` with a workflow that does not read a seeds CSV.
    """
    wf = load_workflow(args.workflow or ("from_seeds" if args.seeds else "default"))
    if args.seeds and wf.input_kind is not InputKind.SEEDS_CSV:
        raise ConfigError(
            f"--seeds reads a seeds CSV, but workflow {wf.name} reads {wf.input_kind.value} input; "
            "use --workflow from_seeds or leave --workflow out"
        )
    return wf


def cmd_container(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """The image's entrypoint (see docs/container.md): banner, mount checks before the model
    is loaded (exit 3 input, 4 output, 2 device, 5 weights), then the workflow's run."""
    print(BANNER.format(version=__version__), file=sys.stderr)
    wf = container_workflow(args)
    args = argparse.Namespace(**{**vars(args), "workflow": wf.name})
    inp = None if args.dicomweb else container_input(args.input, wf.input_kind)
    code = check_mounts(inp, args.output, wf)
    if code:
        return code
    from .model.device import check_precision, resolve_device
    from .model.extractor import extractor_for
    from .model.weights import read_weights

    check_precision(parse_precision(args.precision), resolve_device(args.device))
    try:
        loc = resolve_weights(args.weights, env, allow_download=False)
        weights = read_weights(loc.path, hash_cache_dir=default_cache_dir(env))
    except WeightsError as e:
        fix = "Pass another weights file with -v FILE:/weights/w.torch:ro -e FMCIB_WEIGHTS=/weights/w.torch"
        log.error("%s. %s", str(e).rstrip("."), fix)
        return EXIT_WEIGHTS
    print(
        escape_control(f"workflow {wf.name}; device {args.device}; weights {loc.path} sha256 {weights.sha256}"),
        file=sys.stderr,
    )
    seeds = wf.input_kind is InputKind.SEEDS_CSV
    if inp is None:
        base = RunConfig.from_args(args, input=args.output, seeds=seeds)
        del weights  # read for the banner's checksum; the studies' run loads its own
        return run_dicomweb_studies(replace(base, weights=loc.path), args, env)
    config = replace(RunConfig.from_args(args, input=inp, seeds=seeds), weights=loc.path)
    extractor = extractor_for(config, weights)
    del weights  # the fused encoder keeps only its packed copy: release the mapped file
    return _run_reported(config, env, args.progress, extractor)


def cmd_index(args: argparse.Namespace, env: Mapping[str, str]) -> int:

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
    print("\n".join(escape_control(f"{k:<{width}}  {v:>8}") for k, v in rows))
    return EXIT_OK


def cmd_merge(args: argparse.Namespace, env: Mapping[str, str]) -> int:

    from .batch.merge import merge_outputs

    existed = args.output.exists()
    try:
        with OutputLock(args.output):
            report = merge_outputs(args.shards, args.output)
    except FmcibError:
        if not existed:  # a refused merge leaves nothing behind, not even the lock's folder
            (args.output / ".mhub-fmcib.lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                args.output.rmdir()
        raise
    print(
        escape_control(
            f"merged {len(args.shards)} output(s): {report.n_ok} lesion(s) in {args.output / 'features.csv'}"
        )
    )
    return report.exit_code


class StudyRunner:
    """``process_folder`` of :func:`mhub_fmcib.dicomweb.run.run_dicomweb`: the pipeline on one
    pulled study folder, with ``base`` re-targeted by :func:`dataclasses.replace`; the model
    is loaded once, for the first study. ``stop`` (SIGINT/SIGTERM) ends a study's run after
    the case in flight, as in ``run``."""

    def __init__(self, base: RunConfig, env: Mapping[str, str], stop: StopFlag) -> None:
        self.base = base
        self.env = env
        self.stop = stop
        self.extractor: FeatureExtractor | None = None

    def __call__(self, folder: Path, out: Path) -> list[Path]:
        from .pipeline import load_extractor, run

        config = replace(self.base, input=folder, output=out)
        if self.extractor is None:
            self.extractor = load_extractor(config, self.env)
        try:
            report = run(config, self.env, extractor=self.extractor, stop=self.stop)
        except NothingToMeasureError as e:
            log.warning("study folder %s: %s", folder, e)
            return []
        if report.n_failed:
            log.warning("study folder %s: %d failure(s), see %s", folder, report.n_failed, out / "run.json")
        return [Path(p) for p in report.outputs if p.endswith(".dcm")]


#: The install line for the DICOMweb client (the ranges of pyproject.toml's base dependencies).
DICOMWEB_PIP_LINE = "pip install 'dicomweb-client>=0.59' 'requests>=2.28'"


def run_dicomweb_studies(base: RunConfig, args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``--dicomweb URL``: pull each study into ``base.output``, run on it, optionally store."""
    # imported here (start-up time); dicomweb-client and requests are base dependencies, but an
    # install made with --no-deps may lack them
    try:
        from .dicomweb.run import run_dicomweb
        from .dicomweb.settings import DicomWebSettings, credentials_from
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"--dicomweb needs the Python package {e.name!r}, which is not installed; install it with: "
            f"{DICOMWEB_PIP_LINE}"
        ) from e

    output = base.output
    creds = credentials_from(env, args.credentials, args.token_file)
    settings = DicomWebSettings.with_credentials(
        args.dicomweb,
        creds,
        ca_bundle=args.ca_bundle,
        cache_dir=output / ".dicomweb-cache",
        cache_limit_bytes=args.cache_limit_mb * 1_000_000,
        **({} if args.dicomweb_timeout is None else {"study_timeout_s": args.dicomweb_timeout}),
    )
    from .pipeline import StopFlag

    output.mkdir(parents=True, exist_ok=True)
    stop = StopFlag()
    install_stop_handlers(stop)
    with OutputLock(output):
        rep = run_dicomweb(
            settings,
            args.study,
            output,
            StudyRunner(base, env, stop),
            args.store,
            studies_file=args.studies,
            queries=args.query,
            include_unsegmented=base.input_kind is InputKind.SEEDS_CSV,
            should_stop=lambda: stop.requested,
        )
        atomic_write_json(output / "dicomweb.json", rep.to_json())
    for st in rep.studies:
        print(escape_control(f"{st.study_uid}: {st.status.value}{(' (' + str(st.error) + ')') if st.error else ''}"))
    if rep.interrupted:
        log.warning(
            "%s: stopped; %d studies not started, listed in %s",
            stop.signal_name or "stop requested",
            len(rep.not_started),
            output / "dicomweb.json",
        )
        return EXIT_INTERRUPTED
    return 0 if rep.ok else EXIT_FAILURES


def _other_threads_running() -> bool:
    """Whether a thread other than the main one, not a daemon, is still running."""
    main_thread = threading.main_thread()
    return any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate())


def console() -> NoReturn:
    """The ``mhub-fmcib`` console script (and ``python -m mhub_fmcib.cli``): :func:`main`,
    then a quick exit with its code.

    When :func:`main` returns, every output is written and closed (one atomic writer). The
    interpreter's own teardown after that (freeing torch's modules and libraries) took
    0.5-0.7 s of every run, measured on a 2-core machine: a seventh of a 5-lesion run. So
    the exit handlers run, the log and the standard streams are flushed, and the process
    ends with ``os._exit``. If a thread other than the main one is still running (none of
    ours is: every pool is joined inside :func:`main`), the normal exit waits for it.
    """
    code = main()
    if _other_threads_running():
        raise SystemExit(code)
    atexit._run_exitfuncs()  # what the interpreter would run first on its way out
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe: nothing to flush to
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console()
