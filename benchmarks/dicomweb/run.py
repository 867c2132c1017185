"""Benchmark: pull + run + push seconds for the sample study against Orthanc.

By default the script starts its own Orthanc (with the DICOMweb plugin) in a temporary
folder, uploads ``sample_data/dicom`` through Orthanc's REST API, and runs
:func:`mhub_fmcib.dicomweb.run_dicomweb` with ``--store``. Orthanc 1.10 binds every
interface, so run it in a private network namespace::

    scripts/netns-run.sh .venv/bin/python benchmarks/dicomweb/run.py --repeats 3

The folder step is the real pipeline (:func:`mhub_fmcib.pipeline.run`, with ``--weights``
or a random-initialised weights file written once to the temporary folder). Results
(seconds per stage and repeat, instances, bytes) are printed and written as JSON to
``benchmarks/dicomweb/results.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from mhub_fmcib.dicomweb import DicomWebSettings, run_dicomweb

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
USER, PASSWORD = "bench", "bench-password"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def start_orthanc(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start Orthanc on a free loopback port; return the process and its base URL."""
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        sys.exit(
            f"refusing to start Orthanc: interfaces {names}; run inside a private network "
            "namespace: scripts/netns-run.sh .venv/bin/python benchmarks/dicomweb/run.py"
        )
    port = _free_port()
    config = {
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": _free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "Plugins": [PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (workdir / "orthanc.json").write_text(json.dumps(config))
    log = (workdir / "orthanc.log").open("wb")
    process = subprocess.Popen(["Orthanc", str(workdir / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            _rest(base, "GET", "/system")
            return process, base
        except OSError:
            time.sleep(0.1)
    process.kill()
    sys.exit(f"Orthanc did not start; see {workdir / 'orthanc.log'}")


def _rest(base: str, method: str, path: str, body: bytes | None = None) -> bytes:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(base + path, data=body, method=method, headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        data: bytes = response.read()
    return data


def pipeline_process(weights: Path | None, workdir: Path) -> Callable[[Path, Path], list[Path]]:
    """``process_folder`` backed by :func:`mhub_fmcib.pipeline.run` (model loaded once)."""
    from mhub_fmcib.config import RunConfig
    from mhub_fmcib.model.extractor import FeatureExtractor
    from mhub_fmcib.model.weights import read_weights, write_random_weights
    from mhub_fmcib.pipeline import run

    if weights is None:
        weights = write_random_weights(workdir / "random_weights.torch", seed=0)
    extractor = FeatureExtractor(read_weights(weights), device="cpu", batch_size=8)

    def process(input_folder: Path, output_folder: Path) -> list[Path]:
        config = RunConfig(input=input_folder, output=output_folder, weights=weights, export_qc=False)
        run(config, {}, extractor=extractor)
        return sorted(output_folder.rglob("*.dcm"))

    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="existing DICOMweb root (default: start Orthanc)")
    parser.add_argument("--study", help="StudyInstanceUID (default: the sample study)")
    parser.add_argument("--weights", type=Path, help="encoder weights (default: random)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-store", action="store_true", help="skip the STOW-RS push")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args()

    import pydicom

    sample = sorted((ROOT / "sample_data" / "dicom").rglob("*.dcm"))
    study = args.study or str(pydicom.dcmread(sample[0], stop_before_pixels=True).StudyInstanceUID)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        process = None
        if args.url is None:
            process, base = start_orthanc(workdir)
            for path in sample:
                _rest(base, "POST", "/instances", path.read_bytes())
            url, user, password = f"{base}/dicom-web", USER, PASSWORD
        else:
            url = args.url
            user = os.environ.get("DICOMWEB_USERNAME")
            password = os.environ.get("DICOMWEB_PASSWORD")
        try:
            folder_step = pipeline_process(args.weights, workdir)
            runs = []
            for repeat in range(args.repeats):
                settings = DicomWebSettings(url, user, password, cache_dir=workdir / f"cache{repeat}")
                started = time.perf_counter()
                report = run_dicomweb(settings, [study], workdir / f"out{repeat}", folder_step, not args.no_store)
                outcome = report.studies[0]
                if not report.ok:
                    sys.exit(f"study failed: {outcome.error}")
                runs.append(
                    {
                        **{f"{k}_s": round(v, 3) for k, v in outcome.seconds.items()},
                        "total_s": round(time.perf_counter() - started, 3),
                        "instances_pulled": outcome.pulled_instances,
                        "bytes_pulled": outcome.pulled_bytes,
                        "instances_stored": 0 if outcome.store is None else len(outcome.store.stored),
                    }
                )
                if not outcome.outputs:
                    print(
                        "warning: the pipeline wrote no DICOM file, so the push measured "
                        "nothing; wire the SR/SEG export hooks into pipeline_process()",
                        file=sys.stderr,
                    )
                print(json.dumps(runs[-1]))
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    result = {
        "benchmark": "dicomweb pull+run+push, sample study",
        "server": "Orthanc (local, loopback)" if args.url is None else "external",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
