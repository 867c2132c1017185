"""Named workflows: small TOML files that fix how a run reads its input and what it writes.

Like MHub.ai's ``--workflow`` option, a workflow names one complete recipe. The files live
in the package (``mhub_fmcib/workflows/*.toml``); ``mhub-fmcib workflows`` lists them and
the container's entrypoint takes ``--workflow NAME``. Each file holds exactly these keys:

``name`` (str, equal to the file stem), ``description`` (str), ``input_kind`` (a
:class:`~mhub_fmcib.config.InputKind` value), ``segmentation_sources`` (list of ``"SEG"``
and/or ``"RTSTRUCT"``; empty unless ``input_kind`` is ``"dicom_folder"``), ``export_sr``,
``export_seg``, ``export_qc`` (bool). Any other key, a missing key or a value of the wrong
type is a :class:`~mhub_fmcib.errors.ConfigError` that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import InputKind, RunConfig
from ..errors import ConfigError

SEGMENTATION_SOURCES: tuple[str, ...] = ("SEG", "RTSTRUCT")
"""DICOM objects a DICOM-folder workflow can take its lesions from."""

_BOOL_KEYS: tuple[str, ...] = ("export_sr", "export_seg", "export_qc")
_KEYS: tuple[str, ...] = (
    "name",
    "description",
    "input_kind",
    "segmentation_sources",
    *_BOOL_KEYS,
)
_FIXED_BY_WORKFLOW: frozenset[str] = frozenset({"input_kind", "segmentation_sources", "workflow"})


@dataclass(frozen=True)
class Workflow:
    """One named recipe for a run; valid once constructed.

    Attributes:
        name: identifier used with ``--workflow`` (lowercase letters, digits, ``_``).
        description: one line shown by ``mhub-fmcib workflows``.
        input_kind: how the run reads its input.
        segmentation_sources: DICOM objects lesions are taken from (``"SEG"``,
            ``"RTSTRUCT"``), in order of preference; empty for non-DICOM inputs.
        export_sr: write one TID 1500 SR per CT series.
        export_seg: write one "patch region" SEG per CT series.
        export_qc: write QC pictures and ``qc/index.html``.
    """

    name: str
    description: str
    input_kind: InputKind
    segmentation_sources: tuple[str, ...]
    export_sr: bool
    export_seg: bool
    export_qc: bool

    def __post_init__(self) -> None:
        if not self.name or not all(c.islower() or c.isdigit() or c == "_" for c in self.name):
            raise ConfigError(f"workflow name {self.name!r} must be lowercase letters, digits and '_' only")
        unknown = [s for s in self.segmentation_sources if s not in SEGMENTATION_SOURCES]
        if unknown:
            raise ConfigError(
                f"workflow {self.name!r}: segmentation_sources {unknown} are not supported; "
                f"use any of {list(SEGMENTATION_SOURCES)}"
            )
        if len(set(self.segmentation_sources)) != len(self.segmentation_sources):
            raise ConfigError(
                f"workflow {self.name!r}: segmentation_sources {list(self.segmentation_sources)} lists a source twice"
            )
        is_dicom = self.input_kind is InputKind.DICOM_FOLDER
        if is_dicom and not self.segmentation_sources:
            raise ConfigError(
                f"workflow {self.name!r} reads DICOM folders: set segmentation_sources to "
                f"one or more of {list(SEGMENTATION_SOURCES)}"
            )
        if not is_dicom and self.segmentation_sources:
            raise ConfigError(
                f"workflow {self.name!r} reads {self.input_kind.value!r} input: "
                "segmentation_sources only applies to DICOM folders; set it to []"
            )
        if not is_dicom and (self.export_sr or self.export_seg):
            raise ConfigError(
                f"workflow {self.name!r} reads {self.input_kind.value!r} input, which has no "
                "DICOM CT series to reference: set export_sr and export_seg to false"
            )

    @property
    def run_settings(self) -> dict[str, Any]:
        """The :class:`RunConfig` keyword arguments this workflow fixes."""
        return {
            "input_kind": self.input_kind,
            "segmentation_sources": self.segmentation_sources,
            "export_sr": self.export_sr,
            "export_seg": self.export_seg,
            "export_qc": self.export_qc,
            "workflow": self.name,
        }


def _workflow_dir() -> Path:
    """The package folder that holds the built-in ``*.toml`` workflow files.

    Found next to this module rather than through ``importlib.resources`` by package name,
    which a same-named test package on ``sys.path`` could shadow.
    """
    return Path(__file__).resolve().parent


def parse_workflow(data: dict[str, Any], source: str) -> Workflow:
    """Build a :class:`Workflow` from a parsed TOML table.

    Args:
        data: the TOML document as a dict.
        source: where it came from (a path), used in error messages.

    Raises:
        ConfigError: on an unknown or missing key, or a value of the wrong type.
    """
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; a workflow file holds exactly {list(_KEYS)}")
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise ConfigError(f"{source}: missing key(s) {missing}; add them to the file")
    for key in ("name", "description", "input_kind"):
        if not isinstance(data[key], str):
            raise ConfigError(f"{source}: {key} must be a string, got {data[key]!r}")
    for key in _BOOL_KEYS:
        if not isinstance(data[key], bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {data[key]!r}")
    sources = data["segmentation_sources"]
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise ConfigError(f'{source}: segmentation_sources must be a list of strings such as ["SEG"], got {sources!r}')
    try:
        kind = InputKind(data["input_kind"])
    except ValueError:
        raise ConfigError(
            f"{source}: input_kind {data['input_kind']!r} is not one of {[k.value for k in InputKind]}"
        ) from None
    return Workflow(
        name=data["name"],
        description=data["description"],
        input_kind=kind,
        segmentation_sources=tuple(sources),
        export_sr=data["export_sr"],
        export_seg=data["export_seg"],
        export_qc=data["export_qc"],
    )


def load_workflow_file(path: Path) -> Workflow:
    """Read and validate one workflow TOML file.

    Raises:
        ConfigError: the file is missing, is not valid TOML, or its content is invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read workflow file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return parse_workflow(data, str(path))


def list_workflows() -> list[Workflow]:
    """Every built-in workflow, sorted by name (``default`` first).

    Raises:
        ConfigError: a packaged workflow file is invalid, or its ``name`` differs from its
            file name.
    """
    found: list[Workflow] = []
    for path in sorted(_workflow_dir().glob("*.toml")):
        workflow = load_workflow_file(path)
        if workflow.name != path.stem:
            raise ConfigError(
                f"{path}: name {workflow.name!r} differs from the file name; "
                f"rename the file to {workflow.name}.toml or fix the name"
            )
        found.append(workflow)
    found.sort(key=lambda w: (w.name != "default", w.name))
    return found


def load_workflow(name: str) -> Workflow:
    """The built-in workflow called ``name``.

    Raises:
        ConfigError: no such workflow; the message lists the available names.
    """
    workflows = list_workflows()
    for workflow in workflows:
        if workflow.name == name:
            return workflow
    names = ", ".join(w.name for w in workflows)
    raise ConfigError(
        f"unknown workflow {name!r}; available workflows: {names} (`mhub-fmcib workflows` describes them)"
    )


def make_run_config(workflow: Workflow, input: Path, output: Path, **overrides: Any) -> RunConfig:
    """The :class:`RunConfig` for running ``workflow`` on ``input`` into ``output``.

    Args:
        workflow: the recipe; fixes ``input_kind``, ``segmentation_sources`` and the
            export defaults.
        input: input folder or file.
        output: output folder.
        **overrides: further :class:`RunConfig` fields (``mask``, ``weights``, ``device``,
            ``batch_size``, ``export_qc``, ...). ``input_kind``, ``segmentation_sources``
            and ``workflow`` belong to the workflow and cannot be overridden.

    Raises:
        ConfigError: an override names no :class:`RunConfig` field or one the workflow
            fixes, or the resulting settings are inconsistent (e.g. an image-file workflow
            without ``mask``).
    """
    field_names = {f.name for f in dataclasses.fields(RunConfig)}
    fixed = sorted(set(overrides) & _FIXED_BY_WORKFLOW)
    if fixed:
        raise ConfigError(
            f"{fixed} are fixed by workflow {workflow.name!r}; choose another workflow "
            "(`mhub-fmcib workflows` lists them) instead of overriding"
        )
    unknown = sorted(set(overrides) - field_names)
    if unknown:
        raise ConfigError(
            f"unknown run setting(s) {unknown}; valid settings: "
            f"{sorted(field_names - _FIXED_BY_WORKFLOW - {'input', 'output'})}"
        )
    if not workflow.export_sr and overrides.get("export_sr"):
        raise ConfigError(f"workflow {workflow.name!r} cannot write a DICOM SR (no DICOM input)")
    if not workflow.export_seg and overrides.get("export_seg"):
        raise ConfigError(f"workflow {workflow.name!r} cannot write a DICOM SEG (no DICOM input)")
    settings = workflow.run_settings
    settings.update(overrides)
    return RunConfig(input=input, output=output, **settings)
