"""--max-side pages wide weight matrices (1x1 heatmaps, channels mode) instead of cutting columns."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cnnviz import filters as F


@pytest.mark.parametrize("shape, mode, kw", [
    ((256, 1024, 1, 1), "auto", {}),                                 # 1x1 heatmap, 1024 columns at 700 px
    ((256, 1024, 1, 1), "auto", {"labels": True}),
    ((40, 20, 3, 3), "channels", {"max_filters": 0, "max_channels": 0}),
])
def test_wide_matrices_are_paged_not_cut(shape, mode, kw):
    """A matrix wider than --max-side wraps into stacked column bands: every page shows its
    filters with every input channel, and every weight is drawn exactly once."""
    plan = F.plan_filters(shape, mode=mode, max_side=700, **kw)
    assert not any("showing the first" in n for n in plan.notes), plan.notes
    assert plan.bands > 1 and plan.channels == list(range(shape[1]))
    assert any("stacked bands" in n for n in plan.notes)
    assert sorted(f for p in plan.pages for f in p) == list(range(shape[0]))
    rng = np.random.default_rng(0)
    w = rng.standard_normal(shape).astype(np.float32)
    pages = list(F.render_plan(w, plan))
    assert [p.page for p in pages] == list(range(1, len(pages) + 1))
    for p in pages:
        assert max(p.shape) <= 700
        assert p.metadata["channels"] == f"0-{shape[1] - 1}"


def test_heatmap_bands_show_the_weights():
    """Each band of a paged heatmap is the weight matrix's column block: pixel colours follow the
    weights (layer scale, RdBu_r) band by band."""
    from test_filters import cmap_rgb  # matplotlib's colour, snapped to the palette's levels

    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 700, 1, 1)).astype(np.float32)
    plan = F.plan_filters(w.shape, max_side=512, legend=False)
    assert plan.bands == 2 and plan.band_width == 350 and plan.scale == 1 and len(plan.pages) == 1
    img = F.render_plan(w, plan).__next__().image
    m = np.abs(w).max()
    B = 4  # the page border
    for band in range(2):
        top = B + band * (6 + 6)  # 6 rows, then a 6 px gap
        for f in (0, 5):
            for c in (0, 123, 349):
                ch = band * 350 + c
                assert (img[top + f, B + c] == cmap_rgb("RdBu_r", w[f, ch, 0, 0] / (2 * m) + 0.5)).all()


def test_a_matrix_too_wide_even_for_bands_is_cut_with_a_note():
    plan = F.plan_filters((4, 5000, 1, 1), max_side=256)
    assert any("showing the first" in n and "--max-side" in n for n in plan.notes)


def test_cli_pages_a_1x1_layer_wider_than_max_side(cli, tmp_path):
    r = cli("filters", "-m", "resnet50", "-w", "none", "-l", "layer4.0.conv1", "--max-side", "700", "--json",
            "-o", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert "showing the first" not in r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == recs[0]["pages"] > 1
    assert [rec["page"] for rec in recs] == list(range(1, len(recs) + 1))
    assert recs[0]["path"].endswith("resnet50-43-layer4.0.conv1-filters-p01.png")
    assert all(max(rec["width"], rec["height"]) <= 700 for rec in recs)
    covered = set()
    for rec in recs:
        for part in rec["channels"].split(","):
            a, _, b = part.partition("-")
            covered |= set(range(int(a), int(b or a) + 1))
    assert covered == set(range(1024))
