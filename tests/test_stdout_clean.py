"""stdout carries only the command's data (paths, JSON, PNG bytes), whatever a dependency prints.

torch.hub announces a download with ``sys.stdout.write('Downloading: "https://..." to ...')``;
the fake download below goes through that real code path (only the network transfer is
replaced) and prints on stdout itself too, like a chatty dependency would.
"""
from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

MODEL = "squeezenet1_1"  # small, has pretrained weights in torchvision's registry


@pytest.fixture
def fake_download(monkeypatch):
    """Downloads allowed; the 'download' writes a valid state dict and talks on stdout."""
    import sys

    import torch.hub

    from cnnviz.models import build_model

    monkeypatch.delenv("CNNVIZ_OFFLINE", raising=False)
    calls = []

    def download(url, dst, hash_prefix=None, progress=True):
        sys.stdout.write(f"fake progress for {url}\n")
        print("a dependency's print()")
        torch.save(build_model(MODEL, seed=1).state_dict(), dst)
        calls.append(url)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    return calls


def test_json_stdout_stays_json_while_weights_download(cli, fake_download, tmp_path):
    r = cli("maps", "--sample", "-m", MODEL, "-l", "0", "--size", "32", "--json", "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert fake_download, "the test must go through a download"
    records = [json.loads(line) for line in r.stdout.splitlines()]  # every stdout line is JSON
    assert len(records) == 1 and records[0]["path"].endswith(".png")
    assert 'Downloading: "https://' in r.stderr and "fake progress" in r.stderr and "print()" in r.stderr


def test_png_stream_stays_a_png_while_weights_download(cli, fake_download):
    r = cli("maps", "--sample", "-m", MODEL, "-l", "0", "--size", "32", "-o", "-")
    assert r.exit_code == 0, r.stderr
    assert fake_download
    assert r.stdout_bytes.startswith(b"\x89PNG\r\n\x1a\n") and r.stdout_bytes.endswith(b"IEND\xaeB`\x82")
    im = Image.open(io.BytesIO(r.stdout_bytes))
    im.verify()  # the whole stream is one valid PNG: nothing before or after it
    assert "Downloading" in r.stderr


def test_paths_only_on_stdout_for_filters_while_weights_download(cli, fake_download, tmp_path):
    r = cli("filters", "-m", MODEL, "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert fake_download
    assert r.stdout.splitlines() == [str(tmp_path / f"{MODEL}-00-features.0-filters.png")]


def test_help_and_table_output_still_go_to_stdout(cli):
    assert "Usage:" in cli("maps", "--help").stdout
    r = cli("layers", "-m", "vgg16", "--format", "tsv")
    assert r.stdout.splitlines()[0].startswith("index\tname") and len(r.stdout.splitlines()) == 14
