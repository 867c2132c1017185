"""Static checks of the container build: Dockerfiles, lock files, the container test.

The image is built and run for real by `make container-test` (scripts/container-test.sh);
these tests read the Dockerfiles with a small parser (instructions, line continuations,
comments, exec and shell forms, stages and their build arguments) and check what every
build does: pinned default bases behind the BASE_IMAGE argument, pip's offline settings in
scope of every pip install, the weights checksum build argument, pip installs that take
only the locked requirements, a non-root user, the exec-form entrypoint and the labels.
The lock files are checked against pyproject.toml's ranges (packaging's specifiers) and, for
the CPU lock, against the requirements that the installed distributions declare.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {
    "gpu": ROOT / "dockerfiles" / "Dockerfile",
    "cpu": ROOT / "dockerfiles" / "Dockerfile.cpu",
}
LOCKS = {
    "gpu": ROOT / "requirements" / "lock-gpu.txt",
    "cpu": ROOT / "requirements" / "lock-cpu.txt",
}
WEIGHTS_PATH = "/opt/fmcib/model_weights.torch"

# The target platform of both images: CPython 3.11 on linux x86_64.
TARGET_ENV: dict[str, str] = {
    **default_environment(),
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "python_version": "3.11",
    "python_full_version": "3.11.15",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


# --------------------------------------------------------------------------- parser


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: upper-case keyword, raw argument text, 1-based line."""

    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"line {self.line}: exec form must be a JSON array of strings")
        return value


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions.

    Handles ``\\`` line continuations, full-line comments (also between continued lines, as
    BuildKit does), blank lines and parser directives (``# syntax=``), which are comments.
    """
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not parts):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        logical = " ".join(p for p in parts if p)
        parts = []
        keyword, _, args = logical.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    if parts:
        raise ValueError("Dockerfile ends inside a line continuation")
    return instructions


@dataclass(frozen=True)
class Stage:
    """One build stage: its FROM (image or earlier stage), its name, its instructions."""

    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def arg_names(self) -> list[str]:
        """Build arguments declared in this stage (in scope from their ARG onwards)."""
        return [i.args.split("=", 1)[0] for i in self.instructions if i.keyword == "ARG"]


def global_args(instructions: list[Instruction]) -> dict[str, str | None]:
    """ARGs before the first FROM (only FROM lines can use them): name -> default."""
    found: dict[str, str | None] = {}
    for i in instructions:
        if i.keyword == "FROM":
            break
        if i.keyword == "ARG":
            name, sep, value = i.args.partition("=")
            found[name] = value if sep else None
    return found


def stages(instructions: list[Instruction]) -> list[Stage]:
    """The build stages in order; ``FROM ${ARG}`` resolved with the global ARG defaults."""
    defaults = global_args(instructions)
    result: list[Stage] = []
    current: list[Instruction] = []
    head: Instruction | None = None
    for i in [*instructions, Instruction("FROM", "", 0)]:
        if i.keyword != "FROM":
            if head is not None:
                current.append(i)
            continue
        if head is not None:
            words = head.args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m[1]) or m[0], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(base, name, tuple(current)))
        head, current = i, []
    return result


def parse_key_values(args: str) -> dict[str, str]:
    """``KEY=VALUE`` pairs of a LABEL or ENV instruction (quoted values allowed)."""
    pairs: dict[str, str] = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {token!r}")
        pairs[key] = value
    return pairs


def shell_commands(instruction: Instruction) -> list[list[str]]:
    """The simple commands of a shell-form RUN, split at ``&&``, ``||``, ``;`` and ``|``."""
    tokens = shlex.split(instruction.args, posix=True)
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token in {"&&", "||", ";", "|"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def pip_installs(instruction: Instruction) -> list[list[str]]:
    """The argument lists of every ``pip install`` (or ``python -m pip install``) in a RUN."""
    found = []
    for command in shell_commands(instruction):
        words = command
        if words[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
            words = ["pip", *words[3:]]
        if len(words) >= 2 and words[0] in {"pip", "pip3"} and words[1] == "install":
            found.append(words[2:])
    return found


def read_lock(path: Path) -> dict[str, Version]:
    """Pins of a lock file: canonical name -> exact version. Options lines are skipped."""
    pins: dict[str, Version] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            raise ValueError(f"{path.name}:{number}: {line!r} is not an exact == pin")
        name = canonicalize_name(req.name)
        if name in pins:
            raise ValueError(f"{path.name}:{number}: {name} is pinned twice")
        pins[name] = Version(specs[0].version)
    return pins


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def runtime_requirements() -> list[Requirement]:
    """pyproject's runtime dependencies plus the dicomweb extra (the image has both)."""
    project = pyproject()["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["dicomweb"]]
    return [Requirement(r) for r in reqs]


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def instructions(variant: str) -> list[Instruction]:
    return parse_dockerfile(DOCKERFILES[variant].read_text())


# --------------------------------------------------------------------------- parser tests


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "FROM python:3.11.15-slim-bookworm AS base\n"
        "\n"
        "RUN a \\\n"
        "    # a comment inside a continuation\n"
        "    && b \\\n"
        "    && c\n"
        'ENTRYPOINT ["x", "y"]\n'
        "CMD echo hi\n"
    )
    parsed = parse_dockerfile(text)
    assert [(i.keyword, i.args, i.line) for i in parsed] == [
        ("FROM", "python:3.11.15-slim-bookworm AS base", 2),
        ("RUN", "a && b && c", 4),
        ("ENTRYPOINT", '["x", "y"]', 8),
        ("CMD", "echo hi", 9),
    ]
    assert parsed[2].exec_form() == ["x", "y"]
    assert parsed[3].exec_form() is None
    assert shell_commands(parsed[1]) == [["a"], ["b"], ["c"]]


def test_parser_rejects_dangling_continuation() -> None:
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile("FROM x:1.0\nRUN a \\\n")


def test_read_lock_rejects_loose_pins(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy>=1.26\n")
    with pytest.raises(ValueError, match="not an exact == pin"):
        read_lock(lock)
    lock.write_text("numpy==2.*\n")
    with pytest.raises(ValueError, match="not an exact == pin"):
        read_lock(lock)


# --------------------------------------------------------------------------- Dockerfiles

_EXACT_TAG = re.compile(r"^(?P<repo>[a-z0-9./_-]+):(?P<tag>[A-Za-z0-9._-]+)(@sha256:[0-9a-f]{64})?$")


def test_base_image_pinned_to_full_version(variant: str, instructions: list[Instruction]) -> None:
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert froms[0].args.split()[0] == "${BASE_IMAGE}", "the base must be the BASE_IMAGE build argument"
    image = global_args(instructions)["BASE_IMAGE"]
    assert image is not None, "ARG BASE_IMAGE needs a default (today's pinned base)"
    match = _EXACT_TAG.match(image)
    assert match is not None, f"{image!r} has no explicit tag"
    tag = match["tag"]
    assert "latest" not in tag
    version = re.match(r"^(\d+)\.(\d+)\.(\d+)", tag)
    assert version is not None, f"tag {tag!r} is not a full x.y.z version"
    if variant == "cpu":
        assert match["repo"] == "docker.io/library/python"
        assert tag.startswith("3.11.")
        assert tag.endswith("-slim-bookworm")
    else:
        assert match["repo"] == "docker.io/nvidia/cuda"
        assert tag.startswith("13.0.")  # the CUDA of torch 2.13.0's wheel (lock-gpu.txt)
        assert "runtime" in tag
        assert "ubuntu22.04" in tag


def test_stages(variant: str, instructions: list[Instruction]) -> None:
    """CPU: one stage. GPU: `base` (everything before the CUDA wheels, which
    `make container-test` builds with --target base) and the image built on it."""
    found = stages(instructions)
    if variant == "cpu":
        assert len(found) == 1
        return
    assert [(s.base, s.name) for s in found] == [(global_args(instructions)["BASE_IMAGE"], "base"), ("base", None)]
    base, image = found
    assert not [args for i in base.instructions if i.keyword == "RUN" for args in pip_installs(i)]
    assert any("sha256sum -c" in i.args for i in base.instructions if i.keyword == "RUN")
    assert ["requirements/lock-gpu.txt", "requirements/lock-gpu.txt"] in [
        i.args.split() for i in base.instructions if i.keyword == "COPY"
    ]
    first_run = next(i for i in image.instructions if i.keyword == "RUN")
    assert pip_installs(first_run) == [["--no-deps", "-r", "requirements/lock-gpu.txt"]]


def test_gpu_python_step_skips_apt_on_a_base_with_python() -> None:
    """apt only when the base lacks Python 3.11 + venv or the CA bundle (the CUDA base);
    a base that has them (the container test's Debian base) builds without a network."""
    instructions = parse_dockerfile(DOCKERFILES["gpu"].read_text())
    run = next(i for i in instructions if i.keyword == "RUN" and "venv /opt/venv" in i.args)
    assert run.args.startswith('if ! { python3.11 -c "import ensurepip, venv" 2> /dev/null')
    assert "test -f /etc/ssl/certs/ca-certificates.crt; }; then apt-get update" in run.args
    assert run.args.index("apt-get update") < run.args.index("; fi &&") < run.args.index("python3.11 -m venv /opt/venv")


PIP_SETTINGS = ("PIP_INDEX_URL", "PIP_NO_INDEX", "PIP_FIND_LINKS")


def test_pip_settings_are_build_args_of_every_installing_stage(instructions: list[Instruction]) -> None:
    """Build arguments are per stage: each stage that runs pip must declare pip's settings
    (empty defaults: pip's own behaviour) before its first install."""
    installing = [s for s in stages(instructions) if any(pip_installs(i) for i in s.instructions if i.keyword == "RUN")]
    assert installing
    for stage in installing:
        declared = {}
        for n, i in enumerate(stage.instructions):
            if i.keyword == "ARG":
                name, _, value = i.args.partition("=")
                declared[name] = (n, value)
        first_install = next(n for n, i in enumerate(stage.instructions) if i.keyword == "RUN" and pip_installs(i))
        for name in PIP_SETTINGS:
            assert name in declared, f"stage FROM {stage.base}: ARG {name} missing"
            index, value = declared[name]
            assert index < first_install and value == '""', f"ARG {name} must default to empty before the install"


def test_base_image_name_label_follows_the_argument(instructions: list[Instruction]) -> None:
    first = stages(instructions)[0]
    assert "BASE_IMAGE" in first.arg_names(), "the stage must re-declare ARG BASE_IMAGE to use it"
    labels: dict[str, str] = {}
    for i in first.instructions:
        if i.keyword == "LABEL":
            labels.update(parse_key_values(i.args))
    assert labels["org.opencontainers.image.base.name"] == "${BASE_IMAGE}"


def test_weights_sha256_is_a_required_build_arg(instructions: list[Instruction]) -> None:
    args = [i.args for i in instructions if i.keyword == "ARG"]
    assert "FMCIB_WEIGHTS_SHA256" in args, "ARG FMCIB_WEIGHTS_SHA256 must have no default"
    assert not any(a.startswith("FMCIB_WEIGHTS_SHA256=") for a in args)
    url_args = [a for a in args if a.startswith("FMCIB_WEIGHTS_URL=")]
    assert url_args == ["FMCIB_WEIGHTS_URL=https://zenodo.org/records/10528450/files/model_weights.torch"]

    runs = [i for i in instructions if i.keyword == "RUN"]
    checked = [r for r in runs if "sha256sum -c" in r.args]
    assert len(checked) == 1
    commands = shell_commands(checked[0])
    # The empty-argument guard comes first, the download before the check.
    assert commands[0] == ["test", "-n", "${FMCIB_WEIGHTS_SHA256}"]
    echo = next(c for c in commands if c[0] == "echo" and "FMCIB_WEIGHTS_SHA256" in c[1])
    assert echo == ["echo", f"${{FMCIB_WEIGHTS_SHA256}}  {WEIGHTS_PATH}"]
    index_download = next(i for i, c in enumerate(commands) if "${FMCIB_WEIGHTS_URL}" in c)
    index_check = commands.index(["sha256sum", "-c", "-"])
    assert index_download < index_check
    assert WEIGHTS_PATH in commands[index_download]


def test_runtime_environment_is_offline_and_points_to_weights(
    instructions: list[Instruction],
) -> None:
    env: dict[str, str] = {}
    for i in instructions:
        if i.keyword == "ENV":
            env.update(parse_key_values(i.args))
    assert env["FMCIB_WEIGHTS"] == WEIGHTS_PATH
    # Nothing in the run-time layers fetches from the network: only the one weights RUN
    # and the pip installs (before USER) touch it.
    user_index = max(n for n, i in enumerate(instructions) if i.keyword == "USER")
    assert not [i for i in instructions[user_index:] if i.keyword in {"RUN", "ADD"}]


def test_non_root_user_after_installs(instructions: list[Instruction]) -> None:
    users = [(n, i) for n, i in enumerate(instructions) if i.keyword == "USER"]
    assert len(users) == 1
    index, user = users[0]
    assert user.args not in {"root", "0", "0:0"}
    assert not user.args.startswith(("root:", "0:"))
    created = [i for i in instructions[:index] if i.keyword == "RUN" and "useradd" in i.args]
    assert created
    assert user.args in shell_commands(created[0])[0]
    last_run = max(n for n, i in enumerate(instructions) if i.keyword == "RUN")
    assert last_run < index, "every RUN (installs included) must come before USER"


def test_entrypoint_exec_form_with_mhub_paths(instructions: list[Instruction]) -> None:
    entrypoints = [i for i in instructions if i.keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    assert entrypoints[0].exec_form() == ["mhub-fmcib", "container"]
    cmds = [i for i in instructions if i.keyword == "CMD"]
    assert len(cmds) == 1
    cmd = cmds[0].exec_form()
    assert cmd is not None
    options = dict(zip(cmd[::2], cmd[1::2], strict=True))
    assert options == {
        "--workflow": "default",
        "--input": "/app/data/input_data",
        "--output": "/app/data/output_data",
    }
    # The console script the entrypoint names is the one pyproject installs.
    assert pyproject()["project"]["scripts"]["mhub-fmcib"] == "mhub_fmcib.cli:console"


def test_labels(variant: str, instructions: list[Instruction]) -> None:
    labels: dict[str, str] = {}
    for i in instructions:
        if i.keyword == "LABEL":
            labels.update(parse_key_values(i.args))
    for key in ("title", "description", "version", "licenses", "source", "authors"):
        assert f"org.opencontainers.image.{key}" in labels
    assert labels["org.opencontainers.image.version"] == pyproject()["project"]["version"]
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["mhub-fmcib.weights.license"] == "CC-BY-NC-4.0"
    assert labels["mhub-fmcib.weights.source"] == "https://zenodo.org/records/10528450"
    assert labels["mhub-fmcib.weights.sha256"] == "${FMCIB_WEIGHTS_SHA256}"
    assert "10.1038/s42256-024-00807-9" in labels["mhub-fmcib.citation"]


def test_pip_installs_only_the_lock(variant: str, instructions: list[Instruction]) -> None:
    lock = f"requirements/{LOCKS[variant].name}"
    installs = [args for i in instructions if i.keyword == "RUN" for args in pip_installs(i)]
    assert installs == [
        ["--no-deps", "-r", lock],
        ["--no-deps", "--no-build-isolation", "."],
    ]
    copies = [i.args.split() for i in instructions if i.keyword == "COPY"]
    assert [lock, lock] in copies
    # The lock is copied (and installed) before the project's source, so editing code does
    # not invalidate the dependency layer; `pip check` verifies the installed set.
    install_runs = [n for n, i in enumerate(instructions) if i.keyword == "RUN" and pip_installs(i)]
    source_copy = next(n for n, i in enumerate(instructions) if i.keyword == "COPY" and i.args.startswith("mhub_fmcib"))
    assert install_runs[0] < source_copy < install_runs[1]
    assert ["pip", "check"] in shell_commands(instructions[install_runs[1]])


def test_copied_paths_exist(instructions: list[Instruction]) -> None:
    for i in instructions:
        if i.keyword != "COPY":
            continue
        sources = i.args.split()[:-1]
        for source in sources:
            if source == "README.md":
                continue  # written by the lead in the same change; pyproject names it
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"


# --------------------------------------------------------------------------- lock files


@pytest.fixture(scope="module")
def cpu_lock() -> dict[str, Version]:
    return read_lock(LOCKS["cpu"])


@pytest.fixture(scope="module")
def gpu_lock() -> dict[str, Version]:
    return read_lock(LOCKS["gpu"])


def test_cpu_lock_pins_cpu_torch(cpu_lock: dict[str, Version]) -> None:
    torch = cpu_lock["torch"]
    assert torch.public == "2.13.0"
    assert torch.local == "cpu"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in LOCKS["cpu"].read_text()


def test_gpu_lock_pins_cuda_torch(gpu_lock: dict[str, Version]) -> None:
    assert gpu_lock["torch"] == Version("2.13.0")  # the default index's CUDA 13.0 build
    assert gpu_lock["cuda-toolkit"] == Version("13.0.3")
    assert gpu_lock["nvidia-cudnn-cu13"] == Version("9.20.0.48")
    assert "extra-index-url" not in LOCKS["gpu"].read_text()


def test_gpu_lock_equals_cpu_lock_outside_torch_and_cuda(
    cpu_lock: dict[str, Version], gpu_lock: dict[str, Version]
) -> None:
    shared = {k: v for k, v in cpu_lock.items() if k != "torch"}
    assert {k: gpu_lock[k] for k in shared if k in gpu_lock} == shared
    extra = sorted(set(gpu_lock) - set(cpu_lock))
    assert all(n.startswith(("nvidia-", "cuda-")) or n == "triton" for n in extra), (
        f"GPU-only pins that are not part of torch's CUDA runtime: {extra}"
    )


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_lock_satisfies_pyproject_ranges(name: str) -> None:
    pins = read_lock(LOCKS[name])
    for req in runtime_requirements():
        key = canonicalize_name(req.name)
        assert key in pins, f"{req.name} (pyproject) is missing from {LOCKS[name].name}"
        assert req.specifier.contains(pins[key], prereleases=True), (
            f"{LOCKS[name].name} pins {key}=={pins[key]}, outside pyproject's {req}"
        )


def _requirements_of(name: str) -> list[Requirement]:
    """Requirements the installed distribution declares that apply on the target platform."""
    declared = importlib.metadata.requires(name) or []
    reqs = [Requirement(r) for r in declared]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({**TARGET_ENV, "extra": ""})]


def test_cpu_lock_matches_the_tested_environment_and_is_closed(
    cpu_lock: dict[str, Version],
) -> None:
    """Every pin is the version our tests run with, and the lock holds every requirement.

    With ``--no-deps`` a requirement missing from the lock would be missing from the
    image; the installed distributions' metadata is the independent source of truth.
    """
    for key, version in cpu_lock.items():
        installed = Version(importlib.metadata.version(key))
        assert installed.public == version.public, (
            f"lock-cpu.txt pins {key}=={version}, the tested environment has {installed}"
        )
        for req in _requirements_of(key):
            dep = canonicalize_name(req.name)
            assert dep in cpu_lock, f"{key} requires {req}, which lock-cpu.txt lacks"
            assert req.specifier.contains(cpu_lock[dep], prereleases=True), (
                f"{key} requires {req}; lock-cpu.txt pins {dep}=={cpu_lock[dep]}"
            )


def test_gpu_lock_is_closed_for_torch_cuda_runtime(gpu_lock: dict[str, Version]) -> None:
    """torch 2.13.0's CUDA wheel requirements (from its published metadata) are all pinned."""
    torch_cuda_requirements = [
        "filelock",
        "typing-extensions>=4.10.0",
        "setuptools>=77.0.3",
        "sympy>=1.13.3",
        "networkx>=2.5.1",
        "jinja2",
        "fsspec>=0.8.5",
        "cuda-toolkit==13.0.3",
        "cuda-bindings<14,>=13.0.3",
        "nvidia-cudnn-cu13==9.20.0.48",
        "nvidia-cusparselt-cu13==0.8.1",
        "nvidia-nccl-cu13==2.29.7",
        "nvidia-nvshmem-cu13==3.4.5",
        "triton==3.7.1",
        # cuda-toolkit 13.0.3's extras cublas,cudart,cufft,cufile,cupti,curand,cusolver,
        # cusparse,nvjitlink,nvrtc,nvtx:
        "nvidia-cublas==13.1.1.3.*",
        "nvidia-cuda-runtime==13.0.96.*",
        "nvidia-cufft==12.0.0.61.*",
        "nvidia-cufile==1.15.1.6.*",
        "nvidia-cuda-cupti==13.0.85.*",
        "nvidia-curand==10.4.0.35.*",
        "nvidia-cusolver==12.0.4.66.*",
        "nvidia-cusparse==12.6.3.3.*",
        "nvidia-nvjitlink<14,>=13.0.88",
        "nvidia-cuda-nvrtc==13.0.88.*",
        "nvidia-nvtx==13.0.85.*",
        # cuda-bindings 13.5.0:
        "cuda-pathfinder>=1.4.2",
    ]
    for text in torch_cuda_requirements:
        req = Requirement(text)
        key = canonicalize_name(req.name)
        assert key in gpu_lock, f"lock-gpu.txt lacks {req}"
        assert req.specifier.contains(gpu_lock[key], prereleases=True), (
            f"lock-gpu.txt pins {key}=={gpu_lock[key]}, torch's CUDA runtime needs {req}"
        )


# --------------------------------------------------------------------------- build context


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_dockerignore_keeps_what_the_dockerfiles_copy(instructions: list[Instruction]) -> None:
    """The context leaves out the venv and .git (GBs) but never a path a COPY needs."""
    patterns = _dockerignore_patterns()
    assert {".venv", ".git"} <= set(patterns)
    assert not [p for p in patterns if p.startswith("!")], "negations are not modelled here"
    for i in instructions:
        if i.keyword != "COPY":
            continue
        for source in i.args.split()[:-1]:
            hit = [p for p in patterns if fnmatch.fnmatch(source, p) or source.startswith(p.rstrip("/") + "/")]
            assert not hit, f"COPY {source} is excluded from the build context by .dockerignore {hit}"


# --------------------------------------------------------------------------- container test

SCRIPT = ROOT / "scripts" / "container-test.sh"


def _script_commands() -> list[str]:
    """The container test's shell lines, continuations joined, comments dropped."""
    joined: list[str] = []
    part = ""
    for raw in SCRIPT.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            part += line[:-1] + " "
            continue
        joined.append(part + line)
        part = ""
    return joined


def test_container_test_keeps_everything_on_loopback() -> None:
    """Every container runs with --network none, every build with the classic builder and
    the daemon's (loopback-only) network; the daemon starts inside its own namespace; the
    only URLs are loopback ones."""
    lines = _script_commands()
    runs = [ln for ln in lines if re.search(r"\bdocker run\b", ln)]
    builds = [ln for ln in lines if re.search(r"\bdocker build\b", ln)]
    assert len(runs) >= 6 and len(builds) == 2
    assert all("--network none" in ln for ln in runs), [ln for ln in runs if "--network none" not in ln]
    assert all(ln.startswith("DOCKER_BUILDKIT=0 docker build --network host") for ln in builds)
    dockerd = next(ln for ln in lines if "dockerd --bridge=none" in ln)
    assert dockerd.startswith("unshare --net -- sh -c 'ip link set lo up && exec")
    for flag in ("--iptables=false", "--ip6tables=false", "--ip-masq=false", "--data-root", "--exec-root", "--pidfile"):
        assert flag in dockerd
    urls = re.findall(r"[a-z]+://\S*", SCRIPT.read_text())
    assert urls and all(u.startswith(("http://127.0.0.1:", "unix://")) for u in urls), urls
    server = next(ln for ln in lines if "http.server" in ln)
    assert server.startswith('nsenter --net="/proc/$DOCKERD_PID/ns/net" -- python3 -m http.server --bind 127.0.0.1')
    assert "trap on_exit EXIT" in lines


def test_make_installs_the_tested_environment_under_the_cpu_lock(
    tmp_path: Path, cpu_lock: dict[str, Version]
) -> None:
    """`make test` installs every package under the CPU lock's pins (as pip constraints).

    Without them a fresh machine would test whatever the index released since the lock
    was written, and the image would ship versions the suite never ran with. Runs the
    Makefile's own recipe for the constraints file and reads the commands it would run.
    """
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(Path(sys.executable))
    make = ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={venv}"]
    subprocess.run([*make, f"{venv}/constraints.txt"], check=True, capture_output=True)
    constraints = read_lock(venv / "constraints.txt")
    assert constraints == {k: v for k, v in cpu_lock.items() if k != "torch"}
    dry = subprocess.run(
        [*make, "-n", "-W", "pyproject.toml", f"{venv}/.installed-test"],
        check=True, capture_output=True, text=True,
    ).stdout
    installs = [ln for ln in dry.splitlines() if " install " in ln and "pip" in ln]
    assert len(installs) == 3, dry  # torch, the package, the test extras
    for line in installs:
        assert f"-c {venv}/constraints.txt" in line, line
