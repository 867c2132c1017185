"""Start-up (issue 18, point 1): from a fresh process to an encoder that has run its first
forward pass, each variant in its own fresh process, interleaved repeats, medians; wall and
CPU seconds (the machine is shared: CPU seconds are the steadier measure).

Variants: ``before`` (the path before issue 18: the network built twice with full
initialisation, ``torch.load`` into memory, a copying ``load_state_dict``, sha256 of the
file); ``meta`` (network built on the meta device, weights assigned); ``now_cold`` and
``now_cached`` (``read_weights`` + ``FeatureExtractor`` as the CLI runs them: skip-init,
mmap + assign, dtype/finite checks, the fused CPU encoder packed, sha256 computed resp.
taken from the cache); ``now_eager`` (as ``now_cached`` with ``--cpu-encoder eager``).

Run: ``nice -n 10 .venv/bin/python benchmarks/startup.py [--reps 3]``; writes
``benchmarks/out/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    r"""
    import json, sys, time, contextlib, resource
    t0 = time.perf_counter()
    import torch
    from torch import nn
    sys.path.insert(0, ROOT)
    from mhub_fmcib.model.network import FmcibResNet
    from mhub_fmcib.model.weights import check_state_dict, read_weights
    from mhub_fmcib.model.weights_file import sha256_file
    from mhub_fmcib.model.extractor import FeatureExtractor
    from mhub_fmcib.config import CpuEncoder
    t_imp = time.perf_counter() - t0
    variant, path, cache = sys.argv[1], sys.argv[2], sys.argv[3]
    T = {"import_s": t_imp}

    @contextlib.contextmanager
    def skip_init():
        # every reset_parameters and nn.init function a no-op while the network is built
        names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
        saved = {n: getattr(nn.init, n) for n in names}
        saved_rp = {}
        for cls in (nn.Conv3d, nn.BatchNorm3d, nn.Linear):
            saved_rp[cls] = cls.reset_parameters
            cls.reset_parameters = lambda self: None
        for n in names:
            setattr(nn.init, n, lambda t, *a, **k: t)
        try:
            yield
        finally:
            for n, f in saved.items():
                setattr(nn.init, n, f)
            for cls, f in saved_rp.items():
                cls.reset_parameters = f

    t = time.perf_counter()
    if variant.startswith("now"):
        w = read_weights(path, hash_cache_dir=None if variant == "now_cold" else cache)
        T["load_s"] = time.perf_counter() - t; t = time.perf_counter()
        encoder = CpuEncoder.EAGER if variant == "now_eager" else CpuEncoder.FUSED
        ex = FeatureExtractor(w, device="cpu", batch_size=2, cpu_encoder=encoder)
        del w
        m = lambda x: ex.extract(x.numpy())
        T["build_s"] = time.perf_counter() - t
    elif variant == "before":
        sd = torch.load(path, map_location="cpu", weights_only=True)["trunk_state_dict"]
        T["load_s"] = time.perf_counter() - t; t = time.perf_counter()
        check_state_dict(FmcibResNet(), sd, path)
        m = FmcibResNet(); m.load_state_dict(sd, strict=True); m.eval()
        T["build_s"] = time.perf_counter() - t; t = time.perf_counter()
        h = sha256_file(path); T["hash_s"] = time.perf_counter() - t
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        sd = obj["trunk_state_dict"]
        T["load_s"] = time.perf_counter() - t; t = time.perf_counter()
        if variant == "meta":
            with torch.device("meta"):
                m = FmcibResNet()
        else:
            with skip_init():
                m = FmcibResNet()
        T["construct_s"] = time.perf_counter() - t; t = time.perf_counter()
        exp = m.state_dict()
        bad = [k for k in exp if k not in sd or sd[k].shape != exp[k].shape or sd[k].dtype != exp[k].dtype]
        m.load_state_dict(sd, strict=True, assign=True); m.eval()
        del sd, obj
        T["assign_s"] = time.perf_counter() - t; t = time.perf_counter()
        ok = all(bool(torch.isfinite(torch.aminmax(p)[0])) and bool(torch.isfinite(torch.aminmax(p)[1]))
                 for p in m.state_dict().values() if p.is_floating_point())
        T["finite_check_s"] = time.perf_counter() - t; t = time.perf_counter()
        T["build_s"] = T["construct_s"] + T["assign_s"]
    t = time.perf_counter()
    with torch.inference_mode():
        y = m(torch.zeros(2, 1, 50, 50, 50))
    T["first_forward_s"] = time.perf_counter() - t
    T["total_s"] = time.perf_counter() - t0
    T["to_ready_s"] = T["total_s"] - T["first_forward_s"]
    ru = resource.getrusage(resource.RUSAGE_SELF)
    T["cpu_s"] = ru.ru_utime + ru.ru_stime
    T["maxrss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps(T))
    """
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--variants", default="before,meta,now_cold,now_cached,now_eager")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        w = a.weights
        if w is None:
            sys.path.insert(0, str(ROOT))
            from mhub_fmcib.model.weights import write_random_weights

            w = write_random_weights(Path(tmp) / "w.torch")
            old = time.time() - 10  # a file written seconds ago is never remembered
            os.utime(w, (old, old))
        code = f"ROOT = {str(ROOT)!r}\n" + CHILD
        cache = Path(tmp) / "cache"
        subprocess.run([sys.executable, "-c", code, "now_cached", str(w), str(cache)], capture_output=True, check=True)
        res: dict[str, list[dict[str, float]]] = {}
        for _ in range(a.reps):
            for v in a.variants.split(","):
                out = subprocess.run(
                    [sys.executable, "-c", code, v, str(w), str(cache)], capture_output=True, text=True
                )
                if out.returncode:
                    raise SystemExit(out.stderr)
                res.setdefault(v, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in res.items()}
    doc = {"load_average": os.getloadavg(), "reps": a.reps, "median": med, "all": res}
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "startup.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps(med, indent=1))
    for v, m in med.items():
        print(
            f"| {v} | {m['import_s']:.2f} | {m['load_s']:.2f} | {m['build_s']:.2f} | {m['to_ready_s']:.2f} | "
            f"{m['first_forward_s']:.2f} | {m['cpu_s']:.1f} | {m['maxrss_gb']:.2f} |"
        )


if __name__ == "__main__":
    main()
