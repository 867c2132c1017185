"""RunConfig: the one settings object; from the command line, and round trip through run.json."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import pytest

from mhub_fmcib.cli import build_parser, container_workflow
from mhub_fmcib.config import CpuEncoder, InputKind, RunConfig
from mhub_fmcib.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_round_trips_through_json(tmp_path: Path) -> None:
    mask = tmp_path / "m.nrrd"
    cfg = RunConfig(
        input=tmp_path / "img.nrrd", output=tmp_path / "out", input_kind=InputKind.IMAGE_FILE, mask=mask,
        segments=("1", "Nodule"), weights=tmp_path / "w.torch", device="cpu", batch_size=3,
        cpu_encoder=CpuEncoder.EAGER, export_sr=False, export_seg=False, export_qc=False, heads=(tmp_path / "h.json",),
        segmentation_sources=("RTSTRUCT", "SEG"), workflow="from_nifti_mask", sr_max_lesions=7, shard=(1, 4),
        resume=False, index_workers=2, prefetch=True,
    )  # fmt: skip
    doc = json.loads(json.dumps(cfg.to_dict()))
    assert set(doc) == {f.name for f in fields(RunConfig)}
    assert RunConfig.from_dict(doc) == cfg
    assert RunConfig.from_dict({"input": "a", "output": "b"}) == RunConfig(input=Path("a"), output=Path("b"))
    with pytest.raises(ConfigError, match="unknown run setting"):
        RunConfig.from_dict({**doc, "colour": "red"})
    # run.json of versions with the traced encoder: its switch is accepted and ignored
    assert RunConfig.from_dict({**doc, "optimize_cpu": True}) == cfg
    with pytest.raises(ConfigError, match="--cpu-encoder must be fused or eager, got 'traced'"):
        RunConfig.from_dict({**doc, "cpu_encoder": "traced"})
    with pytest.raises(ConfigError, match="--sr-max-lesions must be at least 1, got 0"):
        RunConfig.from_dict({**doc, "sr_max_lesions": 0})


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_from_args_run_and_container_give_the_same_config(tmp_path: Path) -> None:
    dicom = ROOT / "sample_data" / "dicom"
    out = tmp_path / "out"
    flags = ("--segments", "1,2", "--device", "cpu", "--batch-size", "3", "--shard", "1/2", "--no-qc", "--workers", "2")
    run_cfg = RunConfig.from_args(_args("run", str(dicom), str(out), "--workflow", "default", *flags))
    ct_args = _args("container", "--input", str(dicom), "--output", str(out), *flags)
    ct_args.workflow = container_workflow(ct_args).name  # as cmd_container does: no --workflow is default
    ct_cfg = RunConfig.from_args(ct_args)
    assert run_cfg == ct_cfg
    assert run_cfg.segments == ("1", "2") and run_cfg.shard == (1, 2) and not run_cfg.export_qc
    assert run_cfg.workflow == "default" and run_cfg.index_workers == 2
    with pytest.raises(ConfigError, match="missing OUTPUT"):
        RunConfig.from_args(_args("run", str(dicom)))
    with pytest.raises(ConfigError, match="--shard must look like"):
        RunConfig.from_args(_args("run", str(dicom), str(out), "--shard", "half"))
