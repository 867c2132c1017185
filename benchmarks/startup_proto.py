"""Prototype (issue 18, point 1): ways to get from a weights file to a ready encoder, each in
a fresh process, interleaved, medians. Phase times are measured inside the child after
``import torch`` (imports are the same for all variants and reported separately).

Run: ``nice -n 10 .venv/bin/python benchmarks/startup_proto.py [--reps 5]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    r"""
    import json, sys, time, contextlib, resource
    t0 = time.perf_counter()
    import torch
    from torch import nn
    sys.path.insert(0, ROOT)
    from mhub_fmcib.encoder import FmcibResNet, load_state_dict_file, check_state_dict, sha256_file
    t_imp = time.perf_counter() - t0
    variant, path = sys.argv[1], sys.argv[2]
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
    if variant == "today":
        sd = load_state_dict_file(path); T["load_s"] = time.perf_counter() - t; t = time.perf_counter()
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
        y = m(torch.zeros(1, 1, 50, 50, 50))
    T["first_forward_s"] = time.perf_counter() - t
    T["total_s"] = time.perf_counter() - t0
    T["maxrss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps(T))
    """
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--weights", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        w = a.weights
        if w is None:
            sys.path.insert(0, str(ROOT))
            from mhub_fmcib.encoder import write_random_weights

            w = write_random_weights(Path(tmp) / "w.torch")
        code = f"ROOT = {str(ROOT)!r}\n" + CHILD
        res: dict[str, list[dict[str, float]]] = {}
        for _ in range(a.reps):
            for v in ("today", "meta", "skipinit"):
                out = subprocess.run([sys.executable, "-c", code, v, str(w)], capture_output=True, text=True, check=True)
                res.setdefault(v, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in res.items()}
    print(json.dumps(med, indent=1))


if __name__ == "__main__":
    main()
