"""torchrun pre-training on the synthetic cohort: the loss falls, a killed run resumes to
the same state, and the exported encoder loads."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mhub_fmcib_train.models import load_trunk

from .conftest import TinyCohort

REPO = Path(__file__).resolve().parents[2]


def _config(tiny: TinyCohort, out: Path, steps: int, every: int) -> Path:
    p = out.with_suffix(".toml")
    p.write_text(
        f'output_dir = "{out}"\nbatch_size = 5\nbackground_per_lesion = 1\nmax_steps = {steps}\n'
        f"warmup_steps = 3\nlr = 0.1\ntrust_coefficient = 0.02\ncheckpoint_every = {every}\n"
        'projection_hidden = 128\nprojection_dim = 64\ndevice = "cpu"\nseed = 0\n'
        f'[data]\nseeds_csv = "{tiny.data.seeds_csv}"\ncache_dir = "{tiny.data.cache_dir}"\n'
        f"background_per_scan = {tiny.data.background_per_scan}\n"
        "[encoder]\nwiden_factor = 0.125\nlayers = [1, 1, 1, 1]\n"
    )
    return p


def _torchrun(cfg: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'training'}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mhub_fmcib_train.cli", "pretrain", "--config", str(cfg)]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _losses(out: Path) -> list[float]:
    with open(out / "log.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_pretrain_loss_falls_resume_is_exact_and_export_loads(tiny: TinyCohort, tmp_path: Path) -> None:
    steps = 30
    full = tmp_path / "full"
    p = _torchrun(_config(tiny, full, steps, every=10))
    log, _ = p.communicate(timeout=300)
    assert p.returncode == 0, log.decode()[-3000:]
    assert b"first loss" in log
    losses = _losses(full)
    assert len(losses) == steps
    assert sum(losses[-5:]) / 5 < losses[0] - 0.05, losses

    # kill -9 a second identical run once it has checkpointed, then relaunch it
    killed = tmp_path / "killed"
    cfg = _config(tiny, killed, steps, every=10)
    p = _torchrun(cfg)
    ckpt = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    for pid in [*_children(p.pid), p.pid]:  # the workers first: torchrun gives them their own sessions
        os.kill(pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.5)
    assert not (killed / "encoder.pt").exists()
    stopped_at = int(torch.load(ckpt, weights_only=True)["step"])
    assert 0 < stopped_at < steps
    p = _torchrun(cfg)
    log, _ = p.communicate(timeout=300)
    assert p.returncode == 0, log.decode()[-3000:]
    assert f"steps {stopped_at} -> {steps}".encode() in log
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    assert a["step"] == b["step"] == steps
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == steps
    assert _losses(killed) == losses

    _, enc = load_trunk(killed / "encoder.pt")
    assert enc.n_features == 256
    sd = torch.load(killed / "encoder.pt", weights_only=True)["trunk_state_dict"]
    for k, v in a["model"].items():
        if k.startswith("trunk."):
            assert torch.equal(sd[k[len("trunk.") :]], v)
