"""Reflectance consistency and context in the superres pipeline: every band averages back to the
input; results do not depend on blocks; a window is the crop of a run over the whole scene.

(The frame a window without context shows comes from real models at patch edges: measured on
the shared real data by benchmarks/quality.py.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import read_product, stand_in_models
from rasterio.windows import Window

import difffusr_cli.superres.run as run_module
from difffusr_cli.bands import BANDS, GROUP_RATIO, SCALE
from difffusr_cli.errors import InputError
from difffusr_cli.example import make_example_safe
from difffusr_cli.io import open_scene
from difffusr_cli.superres import SuperresOptions, superres_many

SMALL = SuperresOptions(
    steps=2,
    patch_size=32,
    overlap=8,
    batch_size=4,
    device="cpu",
    fusion_tile=48,
    fusion_overlap=24,
    block_rows=48,
    quiet=True,
    dtype="float32",
)


@pytest.fixture(scope="module")
def safe(tmp_path_factory) -> Path:
    """48 × 48 pixels at 10 m, with a nodata corner."""
    return make_example_safe(tmp_path_factory.mktemp("scene"), size=48)


@pytest.fixture(scope="module")
def big_safe(tmp_path_factory) -> Path:
    """96 × 96 pixels at 10 m: room for a window with context inside."""
    return make_example_safe(tmp_path_factory.mktemp("big"), size=96, seed=3)


class Counting:
    """A progress sink that checks the announced total against what was advanced."""

    def __init__(self) -> None:
        self.total, self.advanced = 0, 0

    def on_start(self, label: str, total: int) -> None:
        self.total = total

    def on_advance(self, n: int) -> None:
        self.advanced += n

    def on_end(self) -> None:
        pass

    def on_message(self, text: str) -> None:
        pass


def run(safe: Path, out: Path, models=None, **changes) -> np.ndarray:
    options = replace(SMALL, **changes)
    progress = Counting()
    superres_many([safe], out, options, models=models or stand_in_models(0.05), progress=progress)
    assert progress.advanced == progress.total > 0  # the progress total counts context patches
    return read_product(out)[0]


def test_consistency_is_an_option():
    with pytest.raises(InputError, match="--consistency"):
        replace(SMALL, consistency="exact").validate()  # type: ignore[arg-type]


def consistency_error(product: np.ndarray, safe: Path, window: Window) -> dict[str, float]:
    """Per band, mean |box average of the product − input| over the native pixels whose product
    pixels are all valid (``product`` is float32 reflectance, NaN = nodata, or uint16 DN)."""
    scene = open_scene(safe)
    errors = {}
    if product.dtype == np.uint16:
        scale, offset = scene.radiometry.scale, scene.radiometry.offset
        product = np.stack(
            [
                np.where(product[b.index] == 0, np.nan, product[b.index] * scale[b.name])
                + offset[b.name]
                for b in BANDS
            ]
        )
    for band in BANDS:
        factor = SCALE * GROUP_RATIO[band.group]
        native, valid = scene.read_native([band.name], window)
        h, w = product.shape[1] // factor, product.shape[2] // factor
        cells = product[band.index, : h * factor, : w * factor].reshape(h, factor, w, factor)
        ok = valid[:h, :w] & np.isfinite(cells).all(axis=(1, 3))
        assert ok.sum() > 0.3 * ok.size
        finite = np.isfinite(cells)
        average = np.where(finite, cells, 0).sum(axis=(1, 3)) / np.maximum(
            finite.sum(axis=(1, 3)), 1
        )
        errors[band.name] = float(np.abs(average - native[0, :h, :w])[ok].mean())
    return errors


@pytest.mark.parametrize("method", ["net", "gs", "bilinear"])
def test_every_band_averages_back_to_the_input(safe, tmp_path, method):
    window = Window(0, 0, 48, 48)
    models = stand_in_models(0.05, method=method)
    box = run(safe, tmp_path / "box.tif", models, fusion=method)
    off = run(safe, tmp_path / "off.tif", stand_in_models(0.05, method), fusion=method,
              consistency="off")  # fmt: skip
    assert max(consistency_error(box, safe, window).values()) < 1e-6
    assert min(consistency_error(off, safe, window).values()) > 1e-3  # there was a lot to fix
    valid = np.isfinite(off[0])
    assert np.array_equal(np.isfinite(box), np.isfinite(off))  # nodata stays nodata
    assert 0 < valid.sum() < valid.size
    # the correction is a small, smooth change, not a replacement of the models' detail
    assert np.abs(box - off)[:, valid].mean() < 0.05


def test_uint16_products_are_consistent_within_rounding(safe, tmp_path):
    product = run(safe, tmp_path / "u16.tif", dtype="uint16")
    errors = consistency_error(product, safe, Window(0, 0, 48, 48))
    assert max(errors.values()) < 5e-5  # half a DN of 1e-4, averaged down


def test_consistency_does_not_depend_on_blocks_or_columns(safe, tmp_path, monkeypatch):
    a = run(safe, tmp_path / "a.tif", block_rows=40)
    b = run(safe, tmp_path / "b.tif", block_rows=192)
    monkeypatch.setattr("difffusr_cli.superres.render.WRITE_COLUMNS", 56)  # not on 60 m pixels
    c = run(safe, tmp_path / "c.tif", block_rows=96)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_a_window_is_the_crop_of_the_whole_scene(big_safe, tmp_path, monkeypatch):
    # Position-independent stand-ins (pointwise SR, local fusion): with context, the window's
    # pixels are computed from the same surroundings as in a run over the whole scene.
    whole = run(big_safe, tmp_path / "whole.tif", stand_in_models())
    col, row, size = 36, 42, 18
    crop = whole[:, row * SCALE : (row + size) * SCALE, col * SCALE : (col + size) * SCALE]
    window = run(big_safe, tmp_path / "w.tif", stand_in_models(), window=(col, row, size, size))
    assert window.shape == crop.shape and np.isfinite(crop).all()
    np.testing.assert_allclose(window, crop, atol=1e-5)
    # Without context (the window processed on its own, as before), its border differs.
    monkeypatch.setattr(run_module, "context_region", lambda scene, window, *args: window)
    bare = run(big_safe, tmp_path / "b.tif", stand_in_models(), window=(col, row, size, size))
    ring = np.abs(bare - crop).max(axis=0)
    assert ring[:4].max() > 1e-3 and ring[:, -4:].max() > 1e-3
