"""The benchmark script's code path, on small nets (no timing is asserted: machines are noisy)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_bench_quick_writes_a_table(tmp_path):
    out = tmp_path / "bench.md"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# Benchmarks") and "python scripts/bench.py --quick" in text
    for row in ("render per map", "end to end", "early stop", "batch of 4 images", "peak RSS", "start-up", "filters --layer all"):
        assert row in text, row
    assert text.count("\n|") >= 12
