"""Weights resolution order, a real (loopback) download with resume-safe writes, and the
offline message."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mhub_fmcib.errors import WeightsError
from mhub_fmcib.model.weights import ENV_WEIGHTS, WEIGHTS_FILENAME, WEIGHTS_URL, default_cache_dir, resolve_weights


def test_order_explicit_env_cache(tmp_path: Path) -> None:
    a, b = tmp_path / "a.torch", tmp_path / "b.torch"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    cache = tmp_path / "cache"
    (cache).mkdir()
    (cache / WEIGHTS_FILENAME).write_bytes(b"c")
    env = {ENV_WEIGHTS: str(b)}
    assert resolve_weights(a, env, cache_dir=cache).found_by == "--weights"
    assert resolve_weights(None, env, cache_dir=cache).path == b
    got = resolve_weights(None, {}, cache_dir=cache)
    assert (got.path, got.found_by) == (cache / WEIGHTS_FILENAME, "cache")


def test_bad_explicit_and_env(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such file"):
        resolve_weights(tmp_path / "x", {})
    with pytest.raises(WeightsError, match=ENV_WEIGHTS):
        resolve_weights(None, {ENV_WEIGHTS: str(tmp_path / "y")})


def test_cache_dir_from_env(tmp_path: Path) -> None:
    assert default_cache_dir({"FMCIB_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "mhub-fmcib"


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    (served / WEIGHTS_FILENAME).write_bytes(b"x" * 3_000_000)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, directory=str(served), **k)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_download_into_cache(tmp_path: Path, file_server: str) -> None:
    cache = tmp_path / "cache"
    got = resolve_weights(None, {}, cache_dir=cache, url=f"{file_server}/{WEIGHTS_FILENAME}", progress=False)
    assert got.found_by == "download"
    assert got.path.read_bytes() == b"x" * 3_000_000
    assert not list(cache.glob("*.part"))
    # second time: from the cache
    assert resolve_weights(None, {}, cache_dir=cache, url="http://127.0.0.1:9/none").found_by == "cache"


def test_offline_message_names_file_url_and_variable(tmp_path: Path, file_server: str) -> None:
    url = f"{file_server}/missing/{WEIGHTS_FILENAME}"  # 404 from a real server
    with pytest.raises(WeightsError) as e:
        resolve_weights(None, {}, cache_dir=tmp_path / "cache", url=url, progress=False)
    msg = str(e.value)
    assert WEIGHTS_FILENAME in msg and url in msg and ENV_WEIGHTS in msg
    assert not list((tmp_path / "cache").glob("*"))  # nothing half-written
    with pytest.raises(WeightsError, match=WEIGHTS_URL.replace(".", r"\.")):
        resolve_weights(None, {}, cache_dir=tmp_path, allow_download=False)


@pytest.mark.parametrize("content", [bytes(range(256)) * 40, b"not weights\n", b""], ids=["random", "text", "empty"])
def test_a_file_that_is_not_a_torch_file_is_named_so(tmp_path: Path, content: bytes) -> None:
    from mhub_fmcib.model.weights import read_weights

    bad = tmp_path / "w.torch"
    bad.write_bytes(content)
    with pytest.raises(WeightsError, match=r"is not a PyTorch weights file") as info:
        read_weights(bad)
    assert "weights_only" not in str(info.value)


def test_random_bytes_exit_5_with_the_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import random

    from mhub_fmcib.cli import main

    rng = random.Random(0)
    bad = tmp_path / "w.torch"
    bad.write_bytes(bytes(rng.randrange(256) for _ in range(10_000)))
    img = Path(__file__).resolve().parents[3] / "sample_data" / "nrrd" / "lung1_image.nrrd"
    caplog.set_level(logging.ERROR, logger="mhub_fmcib")
    code = main(["run", str(img), str(tmp_path / "out"), "--mask", str(img), "--weights", str(bad)], env={})
    assert code == 5
    assert f"{bad} is not a PyTorch weights file" in caplog.text


def test_a_real_torch_file_that_is_not_the_encoder_keeps_its_own_message(tmp_path: Path) -> None:
    import torch

    from mhub_fmcib.model.weights import read_weights

    other = tmp_path / "other.torch"
    torch.save({"w": torch.zeros(2)}, other)
    with pytest.raises(WeightsError) as info:
        read_weights(other)
    assert "is not a PyTorch weights file" not in str(info.value)
