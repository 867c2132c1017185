"""Checks of `make container-test` (scripts/container-test.sh) on what the image wrote.

    container_check.py compare NATIVE CONTAINER --input-root HOST=MOUNT
        features.csv, the DICOM SR and SEG files: identical to the native run's, except
        the attributes that record when a file was made (and highdicom's random
        DimensionOrganizationUID) and the SR's parameters that describe the machine
        (Python version, platform, MONAI if installed); paths under the input are compared
        after mapping the host folder to the mount point.
    container_check.py run-json OUT --torch VERSION --weights-sha256 HEX
    container_check.py permissions OUT --uid N --gid N
        every file owned by the image's user and readable by others (directories also
        searchable), so a user who ran the container can read the results.
    container_check.py archive IMAGE.tar --image NAME --user U --base-image B --weights-sha256 HEX
        the config inside a `docker save` archive: entrypoint, command, user, weights
        path, labels (what `apptainer build` carries over).

Exit 0 when every check holds; 1 with one line per difference otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import stat
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

# Attributes that record the moment a file was written; they differ between any two runs.
TIME_OF_WRITING = frozenset(
    {
        "InstanceCreationDate",
        "InstanceCreationTime",
        "ContentDate",
        "ContentTime",
        "ContributionDateTime",
        # highdicom draws a fresh UID for the SEG's dimension organisation on every write.
        "DimensionOrganizationUID",
    }
)
# SR algorithm parameters (TID 4019, "key=value") that describe the machine, not the
# computation: the image's Python is Debian's, the native run's venv may hold MONAI (the
# runtime does not need it). Reported, not compared. torch and every library the features
# depend on are compared.
ENVIRONMENT_PARAMETERS = ("python_version=", "platform=", "monai_version=")
PATH_COLUMNS = ("image_path", "mask_path")
ENTRYPOINT = ["mhub-fmcib", "container"]
CMD = ["--workflow", "default", "--input", "/app/data/input_data", "--output", "/app/data/output_data"]


class CheckFailed(Exception):
    """One or more differences; the message lists them, one per line."""


def _fail_if(problems: list[str]) -> None:
    if problems:
        raise CheckFailed("\n".join(problems))


# --------------------------------------------------------------------------- compare


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def compare_features(native: Path, container: Path, host_root: str, mount: str) -> list[str]:
    """Differences between two features.csv files; feature values compared as written."""
    header_n, rows_n = _rows(native / "features.csv")
    header_c, rows_c = _rows(container / "features.csv")
    if header_n != header_c:
        return [f"features.csv: columns differ ({len(header_n)} native, {len(header_c)} container)"]
    if len(rows_n) != len(rows_c):
        return [f"features.csv: {len(rows_n)} rows native, {len(rows_c)} in the container"]
    problems = []
    for number, (rn, rc) in enumerate(zip(rows_n, rows_c, strict=True), start=1):
        for column in header_n:
            want = rn[column]
            if column in PATH_COLUMNS and want.startswith(host_root):
                want = mount + want[len(host_root) :]
            if rc[column] != want:
                problems.append(f"features.csv row {number} {column}: native {want!r}, container {rc[column]!r}")
    n_features = sum(c.startswith("feature_") for c in header_n)
    if not problems:
        print(f"ok: features.csv identical ({len(rows_n)} rows x {n_features} features)")
    return problems[:20]


def _environment_parameter(a: str, b: str) -> bool:
    return any(a.startswith(p) and b.startswith(p) for p in ENVIRONMENT_PARAMETERS)


def _walk(a: Dataset, b: Dataset, where: str) -> Iterator[str]:
    tags_a = {e.tag for e in a}
    tags_b = {e.tag for e in b}
    for tag in sorted(tags_a ^ tags_b):
        yield f"{where}: {tag} present on one side only"
    for tag in sorted(tags_a & tags_b):
        ea, eb = a[tag], b[tag]
        if ea.keyword in TIME_OF_WRITING:
            continue
        if ea.VR == "SQ":
            if len(ea.value) != len(eb.value):
                yield f"{where}/{ea.keyword}: {len(ea.value)} items vs {len(eb.value)}"
                continue
            for i, (ia, ib) in enumerate(zip(ea.value, eb.value, strict=True)):
                yield from _walk(ia, ib, f"{where}/{ea.keyword}[{i}]")
        elif ea.value != eb.value:
            if ea.keyword == "TextValue" and _environment_parameter(str(ea.value), str(eb.value)):
                print(f"note: environment differs, not compared: native {ea.value!r}, container {eb.value!r}")
                continue
            yield f"{where}/{ea.keyword or tag}: {str(ea.value)[:60]!r} vs {str(eb.value)[:60]!r}"


def compare_dicom(native: Path, container: Path) -> list[str]:
    """Differences between the SR and SEG files of two output folders (same relative paths)."""
    files_n = sorted(p.relative_to(native) for p in (native / "dicom").rglob("*.dcm"))
    files_c = sorted(p.relative_to(container) for p in (container / "dicom").rglob("*.dcm"))
    if files_n != files_c:
        return [f"DICOM files differ: native {[str(p) for p in files_n]}, container {[str(p) for p in files_c]}"]
    problems = []
    for rel in files_n:
        a = pydicom.dcmread(native / rel)
        b = pydicom.dcmread(container / rel)
        found = [*_walk(a.file_meta, b.file_meta, f"{rel.name} meta"), *_walk(a, b, rel.name)]
        problems += found[:10]
        if not found:
            print(f"ok: {rel.name} identical ({a.Modality}, SOPInstanceUID {a.SOPInstanceUID})")
    return problems


def cmd_compare(args: argparse.Namespace) -> None:
    host_root, sep, mount = args.input_root.partition("=")
    if not sep:
        raise CheckFailed("--input-root must be HOST=MOUNT")
    problems = compare_features(args.native, args.container, host_root.rstrip("/"), mount.rstrip("/"))
    if args.dicom:
        problems += compare_dicom(args.native, args.container)
    _fail_if(problems)


# --------------------------------------------------------------------------- run.json


def cmd_run_json(args: argparse.Namespace) -> None:
    doc = json.loads((args.out / "run.json").read_text())
    software = doc["software"]
    problems = []
    if software["torch_version"] != args.torch:
        problems.append(f"run.json torch_version {software['torch_version']!r}, the image has {args.torch!r}")
    if software["weights_sha256"] != args.weights_sha256:
        problems.append(f"run.json weights_sha256 {software['weights_sha256']}, built with {args.weights_sha256}")
    if doc["summary"]["exit_code"] != 0:
        problems.append(f"run.json exit_code {doc['summary']['exit_code']}")
    _fail_if(problems)
    print(
        f"ok: {args.out.name}/run.json: torch {software['torch_version']}, python "
        f"{software['python_version']}, weights sha256 {software['weights_sha256'][:16]}..."
    )


# --------------------------------------------------------------------------- modes


def cmd_permissions(args: argparse.Namespace) -> None:
    problems = []
    paths = [args.out, *sorted(args.out.rglob("*"))]
    for path in paths:
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if (st.st_uid, st.st_gid) != (args.uid, args.gid):
            problems.append(f"{path}: owner {st.st_uid}:{st.st_gid}, expected {args.uid}:{args.gid}")
        need = 0o005 if stat.S_ISDIR(st.st_mode) else 0o004
        if mode & need != need:
            problems.append(f"{path}: mode {mode:04o}, not readable by others")
    _fail_if(problems)
    print(f"ok: {len(paths)} paths in {args.out.name} owned by {args.uid}:{args.gid}, readable by others")


# --------------------------------------------------------------------------- archive


def _archive_config(tar_path: Path, image: str) -> dict[str, Any]:
    with tarfile.open(tar_path) as tar:
        manifest_file = tar.extractfile("manifest.json")
        if manifest_file is None:
            raise CheckFailed(f"{tar_path}: no manifest.json")
        manifest = json.load(manifest_file)
        entry = next((m for m in manifest if image in (m.get("RepoTags") or [])), None)
        if entry is None:
            raise CheckFailed(f"{tar_path}: no image tagged {image} in manifest.json")
        config_file = tar.extractfile(entry["Config"])
        if config_file is None:
            raise CheckFailed(f"{tar_path}: config {entry['Config']} missing")
        config: dict[str, Any] = json.load(config_file)["config"]
        return config


def cmd_archive(args: argparse.Namespace) -> None:
    config = _archive_config(args.archive, args.image)
    labels: dict[str, str] = config.get("Labels") or {}
    env = dict(str(e).split("=", 1) for e in config.get("Env") or [])
    expected_labels = {
        "org.opencontainers.image.title": "mhub-fmcib",
        "org.opencontainers.image.licenses": "MIT",
        "org.opencontainers.image.base.name": args.base_image,
        "mhub-fmcib.weights.sha256": args.weights_sha256,
        "mhub-fmcib.weights.license": "CC-BY-NC-4.0",
    }
    problems = [
        f"label {k}: {labels.get(k)!r}, expected {v!r}" for k, v in expected_labels.items() if labels.get(k) != v
    ]
    if "10.1038/s42256-024-00807-9" not in str(labels.get("mhub-fmcib.citation")):
        problems.append("label mhub-fmcib.citation lacks the DOI")
    for key, want in (("Entrypoint", ENTRYPOINT), ("Cmd", CMD), ("User", args.user)):
        if config.get(key) != want:
            problems.append(f"{key}: {config.get(key)!r}, expected {want!r}")
    if env.get("FMCIB_WEIGHTS") != "/opt/fmcib/model_weights.torch":
        problems.append(f"FMCIB_WEIGHTS: {env.get('FMCIB_WEIGHTS')!r}")
    _fail_if(problems)
    print(
        f"ok: archive config: entrypoint {config['Entrypoint']}, user {config['User']}, "
        f"{len(labels)} labels (base {labels['org.opencontainers.image.base.name']})"
    )


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help="features, SR and SEG against a native run")
    p.add_argument("native", type=Path, help="output folder of the native run")
    p.add_argument("container", type=Path, help="output folder of the container run")
    p.add_argument("--input-root", required=True, help="HOST=MOUNT: the input folder on the host and in the container")
    p.add_argument("--no-dicom", dest="dicom", action="store_false", help="compare features.csv only")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("run-json", help="run.json names the image's torch and the weights' sha256")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--torch", required=True, help="torch.__version__ inside the image")
    p.add_argument("--weights-sha256", required=True, help="sha256 of the weights the image was built with")
    p.set_defaults(func=cmd_run_json)
    p = sub.add_parser("permissions", help="owner and modes of every output file")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--uid", type=int, required=True, help="the image user's uid")
    p.add_argument("--gid", type=int, required=True, help="the image user's gid")
    p.set_defaults(func=cmd_permissions)
    p = sub.add_parser("archive", help="config inside a docker save archive")
    p.add_argument("archive", type=Path, help="the docker save archive (tar)")
    p.add_argument("--image", required=True, help="the image's name:tag inside the archive")
    p.add_argument("--user", required=True, help="expected USER")
    p.add_argument("--base-image", required=True, help="expected org.opencontainers.image.base.name")
    p.add_argument("--weights-sha256", required=True, help="expected mhub-fmcib.weights.sha256")
    p.set_defaults(func=cmd_archive)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CheckFailed as e:
        print(f"container check {args.command} FAILED:\n{e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
