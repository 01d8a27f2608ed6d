"""docs/make_quality_figure.py: the figure of docs/superres.md is made, with the expected size."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "make_quality_figure.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_quality_figure", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # three tiny superres runs: ~25 s on two busy cores
def test_figure_on_the_example_scene(tmp_path, capsys):
    script = _script()
    out = tmp_path / "img" / "figure.png"
    argv = ["--example", "--example-size", "48", "--size", "12", "--steps", "2", "-o", str(out)]
    assert script.main(argv) == 0
    with rasterio.open(out) as ds:
        assert ds.count == 3
        panel = 12 * 4
        assert ds.width == script.GAP + 4 * (panel + script.GAP)
        assert ds.height == 3 * script.GAP + panel + 2 * script.LINE
        image = ds.read()
    # The panels are images, not blank: each has more than one value.
    for i in range(4):
        x = script.GAP + i * (panel + script.GAP)
        assert np.ptp(image[:, script.GAP : script.GAP + panel, x : x + panel]) > 0
    printed = capsys.readouterr().out
    assert "joint+consistent" in printed
    # The consistent product reproduces the input's box averages; the others need not.
    record = json.loads(printed.strip().splitlines()[-1])
    consistent = record["products"]["joint+consistent"]["box_error"]
    assert max(consistent.values()) < 1e-5


def test_text_draws_the_digits():
    script = _script()
    drawn = script.text(["0.1", "HV RGB"], 40)
    assert drawn.shape == (2 * script.LINE, 40)
    assert drawn.any() and not drawn[:, 3 * 4 * script.TEXT_SCALE :][: script.LINE].any()
