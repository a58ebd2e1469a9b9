"""errors.first_line: the one way a dependency's exception becomes a clause of one of our messages
(image reading, checkpoint loading, the CLI's internal-error line, fx tracing, rf)."""
from __future__ import annotations

import subprocess
import sys
import urllib.error

import pytest

from cnnviz import util
from cnnviz.errors import ImageError, WeightsError, first_line


def test_first_line_takes_the_first_line_and_cuts_it():
    exc = ValueError("  bad header\nTraceback detail\nmore  ")
    assert first_line(exc) == "bad header"
    assert first_line(ValueError("x" * 500)) == "x" * 160
    assert first_line(ValueError("x" * 500), 200) == "x" * 200


def test_first_line_of_an_empty_message():
    assert first_line(KeyError()) == "KeyError"
    assert first_line(KeyError(), empty="") == ""
    assert first_line(OSError("   \n  ")) == "OSError"


def test_util_reexports_the_same_function():
    assert util.first_line is first_line


def test_first_line_is_importable_without_torch():
    code = "import sys, cnnviz.errors, cnnviz.io, cnnviz.cli.common; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_corrupt_image_message_has_one_line(tmp_path):
    from cnnviz.io import load_image

    path = tmp_path / "broken.png"
    good = tmp_path / "good.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (10, 200, 30)).save(good)
    path.write_bytes(good.read_bytes()[:60])  # header intact, pixel data cut off
    with pytest.raises(ImageError) as ei:
        load_image(str(path))
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"image {str(path)!r} is corrupt or truncated (")


def test_checkpoint_garbage_message_has_one_line(tmp_path):
    from cnnviz.models import load_checkpoint

    path = tmp_path / "w.pth"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 50)  # a zip header, then nothing
    with pytest.raises(WeightsError) as ei:
        load_checkpoint(str(path))
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"{str(path)!r} is not a PyTorch checkpoint")


def test_download_failure_reason():
    from cnnviz.models import _reason

    assert _reason(urllib.error.URLError("name resolution failed\nsecond line")) == "name resolution failed"
    assert _reason(urllib.error.URLError(OSError(-2, "Name or service not known"))) == "[Errno -2] Name or service not known"
    assert _reason(ConnectionResetError()) == "ConnectionResetError"
    assert _reason(urllib.error.URLError("   ")) == "URLError"


def test_internal_error_line_keeps_an_empty_message_empty(cli, monkeypatch):
    import cnnviz.jobs.layers

    def boom(req):
        raise KeyError()

    monkeypatch.setattr(cnnviz.jobs.layers, "run_layers", boom)
    r = cli("layers", "--model", "resnet18")
    assert r.exit_code == 1
    assert r.stderr.strip() == ("cnnviz: error: internal error KeyError:  (rerun with --debug for the traceback and report it)")
