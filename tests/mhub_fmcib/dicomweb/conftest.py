"""A real Orthanc server with the DICOMweb plugin, for the DICOMweb tests.

Orthanc 1.10 listens on every network interface whatever its configuration says, so the
fixture refuses to start it unless the test process runs in a private network namespace
whose only interface is loopback (``scripts/netns-run.sh .venv/bin/pytest ...``). Outside
one the tests are skipped with the reason, and fail when ``CI=true``.

Test data are uploaded through Orthanc's own REST API (``POST /instances``), not through
our STOW-RS code, so the code under test is checked against an independent upload path.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ORTHANC_BINARY = "Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USERNAME = "fmcib-test"
#: A distinctive password so that a leak is easy to grep for.
PASSWORD = "S3cret-Pa55-xyzzy-7319"
REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE_DICOM = REPO_ROOT / "sample_data" / "dicom"


def _in_private_netns() -> tuple[bool, str]:
    """Whether this process's network namespace holds only the loopback interface."""
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        return False, f"network interfaces {names}; expected only ['lo']"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
    except OSError as exc:
        return False, f"loopback is not usable ({exc}); run `ip link set lo up`"
    return True, ""


def _refuse(reason: str) -> None:
    message = (
        f"Orthanc not started: {reason}. Orthanc 1.10 binds every interface, so the "
        "DICOMweb tests only run inside a private network namespace: "
        "scripts/netns-run.sh .venv/bin/pytest tests/mhub_fmcib/dicomweb"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the test process dies, so no Orthanc outlives it."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class OrthancServer:
    """One Orthanc process; ``url`` is its DICOMweb root."""

    workdir: Path
    http_port: int
    process: subprocess.Popen[bytes] | None = None
    username: str = USERNAME
    password: str = PASSWORD

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"{self.base}/dicom-web"

    def _auth_header(self) -> dict[str, str]:
        token = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def rest(self, method: str, path: str, body: bytes | None = None) -> object:
        """Call Orthanc's native REST API (independent of the code under test)."""
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=self._auth_header())
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
        return json.loads(data) if data else None

    def start(self) -> None:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "mhub-fmcib-test",
            "HttpPort": self.http_port,
            "DicomPort": _free_loopback_port(),
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USERNAME: PASSWORD},
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "HttpThreadsCount": 8,
        }
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        log = (self.workdir / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [ORTHANC_BINARY, str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start:\n{self.log_tail()}")
            try:
                self.rest("GET", "/dicom-web/studies")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        raise RuntimeError(f"Orthanc not ready after 30 s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        path = self.workdir / "orthanc.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)

    def upload(self, path: Path) -> None:
        self.rest("POST", "/instances", path.read_bytes())

    def count_instances(self, study_uid: str) -> int:
        """Instances of a study, counted with Orthanc's native find (not QIDO)."""
        found = self.rest(
            "POST",
            "/tools/find",
            json.dumps({"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}).encode(),
        )
        if not isinstance(found, list):
            raise TypeError(f"unexpected /tools/find answer {found!r}")
        return len(found)


def _start_server(workdir: Path) -> OrthancServer:
    ok, reason = _in_private_netns()
    if not ok:
        _refuse(reason)
    if shutil.which(ORTHANC_BINARY) is None or not DICOMWEB_PLUGIN.is_file():
        _refuse(f"{ORTHANC_BINARY} or {DICOMWEB_PLUGIN} not installed (apt-get install orthanc orthanc-dicomweb)")
    server = OrthancServer(workdir=workdir, http_port=_free_loopback_port())
    server.start()
    return server


@dataclass(frozen=True)
class SampleStudy:
    """The sample study's files and UIDs, read from the files (independently of the server)."""

    ct_files: list[Path]
    seg_file: Path
    study_uid: str
    series_uid: str
    sop_uids: list[str]
    seg_uid: str


def sample_files() -> tuple[list[Path], Path]:
    """The sample CT slices (JPEG-LS) and the SEG of its nodule."""
    ct = sorted((SAMPLE_DICOM / "ct").glob("*.dcm"))
    seg = SAMPLE_DICOM / "seg" / "SEG_lung1_nodule.dcm"
    if not ct or not seg.is_file():
        pytest.skip(f"sample data missing under {SAMPLE_DICOM}; run scripts/make_sample_data.py")
    return ct, seg


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A session-wide Orthanc holding the sample study (CT + SEG) and pydicom's CT_small."""
    from pydicom.data import get_testdata_file

    server = _start_server(tmp_path_factory.mktemp("orthanc"))
    try:
        ct, seg = sample_files()
        for path in [*ct, seg, Path(str(get_testdata_file("CT_small.dcm")))]:
            server.upload(path)
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    """An Orthanc of its own for one test (the test may kill it); holds the sample study."""
    server = _start_server(tmp_path / "orthanc")
    try:
        ct, seg = sample_files()
        for path in [*ct, seg]:
            server.upload(path)
        yield server
    finally:
        server.stop()


def derived_uid(*parts: str) -> str:
    """A deterministic UID from ``parts`` (same input, same UID), as our exports make them."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["mhub-fmcib-dicomweb-test", *parts]))


def process_folder_seg_sr(input_folder: Path, output_folder: Path) -> list[Path]:
    """A small but real folder pipeline: pulled CT + SEG in, a derived SEG and an SR out.

    Reads the pulled CT (decoding its compressed pixel data) and the pulled SEG, writes a
    new SEG of the same nodule (made with highdicom, referencing the CT) and a
    Comprehensive 3D SR with the nodule's mean HU that references the new SEG and the CT.
    UIDs derive from the input's UIDs, so a rerun writes the same instances.
    """
    import highdicom as hd
    import numpy as np
    import pydicom
    from pydicom.sr.codedict import codes

    datasets = [pydicom.dcmread(p) for p in sorted(input_folder.rglob("*.dcm"))]
    ct = sorted((d for d in datasets if d.Modality == "CT"), key=lambda d: float(d.ImagePositionPatient[2]))
    seg_in = hd.seg.Segmentation.from_dataset(next(d for d in datasets if d.Modality == "SEG"))
    ct_uids = [str(d.SOPInstanceUID) for d in ct]
    mask = seg_in.get_pixels_by_source_instance(ct_uids, segment_numbers=[1])[..., 0] > 0
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in ct])
    mean_hu = float(hu[mask].mean())
    series_uid = str(ct[0].SeriesInstanceUID)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="dicomweb-test", version="1", family=codes.cid7162.ArtificialIntelligence
    )
    seg = hd.seg.Segmentation(
        source_images=ct,
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="Nodule",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Nodule,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        ],
        series_instance_uid=derived_uid(series_uid, "seg-series"),
        series_number=901,
        sop_instance_uid=derived_uid(series_uid, "seg"),
        instance_number=1,
        manufacturer="mhub-fmcib tests",
        manufacturer_model_name="dicomweb-test",
        software_versions="1",
        device_serial_number="1",
    )
    measurement_group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(series_uid, "tracking"), identifier="Nodule 1"),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=1,
            source_series=hd.sr.SourceSeriesForSegmentation(series_uid),
        ),
        measurements=[
            hd.sr.Measurement(
                name=codes.SCT.Mean,
                value=round(mean_hu, 3),
                unit=codes.UCUM.HounsfieldUnit,
            )
        ],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device,
                observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=derived_uid("device")),
            )
        ),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[measurement_group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*ct, seg],
        content=report,
        series_instance_uid=derived_uid(series_uid, "sr-series"),
        series_number=902,
        sop_instance_uid=derived_uid(series_uid, "sr"),
        instance_number=1,
        manufacturer="mhub-fmcib tests",
    )
    output_folder.mkdir(parents=True, exist_ok=True)
    paths = [output_folder / "seg.dcm", output_folder / "sr.dcm"]
    seg.save_as(paths[0])
    sr.save_as(paths[1])
    return paths


@pytest.fixture(scope="session")
def sample_study() -> SampleStudy:
    """UIDs of the sample study as read from its files with pydicom."""
    import pydicom

    ct, seg = sample_files()
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in ct]
    return SampleStudy(
        ct_files=ct,
        seg_file=seg,
        study_uid=str(headers[0].StudyInstanceUID),
        series_uid=str(headers[0].SeriesInstanceUID),
        sop_uids=sorted(str(h.SOPInstanceUID) for h in headers),
        seg_uid=str(pydicom.dcmread(seg, stop_before_pixels=True).SOPInstanceUID),
    )


@pytest.fixture
def process_folder() -> Callable[[Path, Path], list[Path]]:
    """The test folder pipeline (:func:`process_folder_seg_sr`)."""
    return process_folder_seg_sr


def require_private_netns() -> None:
    """Skip (fail under CI) outside a private network namespace, as for Orthanc."""
    ok, reason = _in_private_netns()
    if not ok:
        _refuse(reason)


@pytest.fixture
def stub_factory() -> Iterator[Callable[..., Any]]:
    """Start :class:`fmcib_testlib.http_stub.DicomWebStub` servers holding the sample study.

    ``stub_factory(alias_studies=[...], faults={...}, **options)`` returns a running stub;
    every stub started is stopped after the test.
    """
    from contextlib import ExitStack

    from fmcib_testlib.http_stub import DicomWebStub

    require_private_netns()
    ct, seg = sample_files()
    with ExitStack() as stack:

        def start(**options: Any) -> DicomWebStub:
            return stack.enter_context(DicomWebStub(files=[*ct, seg], **options).running())

        yield start


def temporaries(folder: Path) -> list[Path]:
    """Temporary files (``*.part``, ``*.tmp``) anywhere under ``folder``."""
    return [p for p in folder.rglob("*") if p.name.endswith((".part", ".tmp")) or ".tmp." in p.name]


@dataclass(frozen=True)
class DicomWebCli:
    """Runs ``python -m mhub_fmcib.cli run --dicomweb ...`` in a subprocess (this checkout first)."""

    weights: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), str(REPO_ROOT / "tests" / "lib"), env.get("PYTHONPATH", "")]
        )
        return env

    def args(self, url: str, studies: Sequence[str], out: Path, *extra: str) -> list[str]:
        args = [sys.executable, "-m", "mhub_fmcib.cli", "run", "--dicomweb", url]
        for study in studies:
            args += ["--study", study]
        return [*args, str(out), "--weights", str(self.weights), "--progress", "none", "--no-qc", *extra]

    def run(self, url: str, studies: Sequence[str], out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.args(url, studies, out, *extra),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def start(self, url: str, studies: Sequence[str], out: Path, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.args(url, studies, out, *extra),
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
        )

    @staticmethod
    def assert_clean(stderr: str, out: Path) -> None:
        """No traceback on stderr, no temporary file and no pull cache left in ``out``."""
        assert "Traceback" not in stderr, stderr[-3000:]
        assert temporaries(out) == []
        assert not (out / ".dicomweb-cache").exists()


@pytest.fixture(scope="session")
def dicomweb_cli(weights_file: Path) -> DicomWebCli:
    return DicomWebCli(weights_file)


@pytest.fixture(scope="session")
def clean_features(
    dicomweb_cli: DicomWebCli, sample_study: SampleStudy, tmp_path_factory: pytest.TempPathFactory
) -> bytes:
    """``features.csv`` of the sample study from a clean command-line run against a good stub."""
    from fmcib_testlib.http_stub import DicomWebStub

    require_private_netns()
    out = tmp_path_factory.mktemp("clean") / "out"
    with DicomWebStub(files=[*sample_study.ct_files, sample_study.seg_file]).running() as stub:
        result = dicomweb_cli.run(stub.url, [sample_study.study_uid], out)
    assert result.returncode == 0, result.stderr[-3000:]
    dicomweb_cli.assert_clean(result.stderr, out)
    return (out / sample_study.study_uid / "features.csv").read_bytes()
