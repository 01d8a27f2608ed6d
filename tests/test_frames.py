"""No border frame on an interior window (issue 12), on a real scene with the packaged models.

A window's edges are not patch edges: patches read the scene beyond the window (and reflect it at
the scene's border). Before that, the packaged RGB model, which darkens the pixels nearest its
input's edges, left a frame here: ``benchmarks/quality.py`` measured an outer-ring gradient 1.42×
the interior's on this window, against the issue's limit of 1.3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from difffusr_cli.bands import RGB, indices
from difffusr_cli.superres import SuperresOptions, load_models, superres_many
from difffusr_cli.weights import DEMO_MODELS, StderrReporter

WINDOW = (276, 240, 48, 48)  # 10 m pixels, deep inside the 600 × 600 scene


def frame_ratio(product: np.ndarray, ring: int = 8) -> float:
    """Mean gradient magnitude in the outer ``ring`` pixels over that of the interior."""
    g = np.hypot(np.diff(product, axis=1)[:, :, :-1], np.diff(product, axis=2)[:, :-1, :])
    edge = np.zeros(g.shape[1:], dtype=bool)
    edge[:ring], edge[-ring:], edge[:, :ring], edge[:, -ring:] = True, True, True, True
    return float(np.nanmean(g[:, edge]) / np.nanmean(g[:, ~edge]))


@pytest.mark.slow
def test_an_interior_window_has_no_frame(shared_data: Path, tmp_path: Path):
    options = SuperresOptions(
        rgb_model=DEMO_MODELS["rgb"],
        fusion="gs",
        steps=2,
        device="cpu",
        quiet=True,
        dtype="float32",
        window=WINDOW,
        # the consistency projection would hide a frame's box averages: measure context alone
        consistency="off",
    )
    models = load_models(options, torch.device("cpu"), StderrReporter())
    out = tmp_path / "window.tif"
    superres_many([shared_data / "dsen2_T33UUB"], out, options, models=models)
    with rasterio.open(out) as ds:
        product = ds.read()
    assert product.shape[-2:] == (4 * WINDOW[3], 4 * WINDOW[2])
    assert frame_ratio(product) <= 1.3
    # the RGB bands alone: the diffusion output, where patch edges would show
    assert frame_ratio(product[indices(RGB)]) <= 1.3
