"""Shared fixtures: tiny networks, sample images, an isolated torch hub cache. No network ever."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _offline_isolated(tmp_path_factory, monkeypatch):
    """Every test: downloads off, an empty private TORCH_HOME (no user cache leaks in)."""
    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("CNNVIZ_OFFLINE", "1")
    monkeypatch.delenv("CNNVIZ_DEBUG", raising=False)
    torch.hub.set_dir(str(home / "hub"))
    yield
    torch.hub.set_dir(str(home / "hub"))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png_valid(source) -> None:
    """A written PNG (path or bytes) is valid to the last byte: ``PIL.Image.verify()`` checks
    every chunk's CRC (decoding alone skips the IDAT CRCs), then a full decode checks the
    zlib stream, and nothing follows IEND."""
    import io
    from pathlib import Path

    from PIL import Image

    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"not a PNG: {data[:8]!r}"
    assert data.endswith(b"IEND\xaeB`\x82"), "bytes after IEND, or no IEND"
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        im.load()


@pytest.fixture(autouse=True)
def _written_pngs_are_valid(monkeypatch):
    """Every PNG a test makes cnnviz write (files and streams, through io.write_atomic) is checked
    with assert_png_valid as it is written."""
    import cnnviz.io

    real = cnnviz.io.write_atomic

    def checked(path, data):
        if bytes(data[:8]) == PNG_SIGNATURE:
            assert_png_valid(bytes(data))
        return real(path, data)

    monkeypatch.setattr(cnnviz.io, "write_atomic", checked)


class TinyVGG(nn.Module):
    """conv-ReLU(inplace)-conv-ReLU(inplace)-pool-conv: the VGG pattern at toy size."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def tiny_vgg() -> nn.Module:
    torch.manual_seed(0)
    return TinyVGG().eval()


@pytest.fixture
def rgb_image(tmp_path):
    """A 40x30 RGB JPEG with some structure."""
    from PIL import Image

    rng = np.random.default_rng(0)
    a = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    path = tmp_path / "img.jpg"
    Image.fromarray(a).save(path)
    return path


@pytest.fixture
def sample_path() -> str:
    from cnnviz.io import sample_image_path

    return sample_image_path()


def run_cli(*args: str, input: bytes | None = None):
    """Invoke the real click CLI in-process; returns click's Result (stdout/stderr separated)."""
    from click.testing import CliRunner

    from cnnviz.cli import cli

    runner = CliRunner()
    return runner.invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def cli():
    """``cli("layers", "--model", "vgg16")`` -> click Result with .exit_code, .stdout, .stderr."""
    return run_cli
