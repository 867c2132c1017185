"""Reading a weights file that is not the encoder: the message names the file and says what
it is (the file's resolution, download and hash: ``test_weights_file.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mhub_fmcib.errors import WeightsError


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
