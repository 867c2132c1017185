"""A tiny synthetic cohort and its patch cache, shared by the training tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from mhub_fmcib_train.config import DataConfig, SyntheticConfig
from mhub_fmcib_train.data.cache import PatchCache, build_cache
from mhub_fmcib_train.synthetic import SyntheticCohort, generate_cohort


@dataclass(frozen=True)
class TinyCohort:
    cohort: SyntheticCohort
    data: DataConfig
    cache: PatchCache
    root: Path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyCohort:
    root = tmp_path_factory.mktemp("cohort")
    cohort = generate_cohort(SyntheticConfig(output_dir=root / "synthetic", n_scans=16, seed=3))
    data = DataConfig(seeds_csv=cohort.seeds_csv, cache_dir=root / "cache", background_per_scan=3)
    return TinyCohort(cohort, data, build_cache(data), root)


@pytest.fixture(scope="session")
def two_process_losses() -> dict[str, tuple[float, list[object]]]:
    """Every 2-process loss scenario of ``_ntxent_dist_worker`` (one gloo process group,
    spawned once per session): ``"<loss>/<gather|no_gather|broken_*>" -> (mean loss over
    processes, DDP-averaged gradients of the linear layer)``."""
    import socket
    import sys

    import torch.multiprocessing as mp

    # the worker lives in a plain module so that spawned children can import it by name
    # (pytest's importlib mode makes test modules unimportable there)
    sys.path.insert(0, str(Path(__file__).parent))
    from _ntxent_dist_worker import _worker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = q.get(timeout=300)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results  # type: ignore[no-any-return]
