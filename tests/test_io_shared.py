"""The real products in ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from difffusr_cli.bands import BAND_NAMES, GROUPS
from difffusr_cli.errors import InputError
from difffusr_cli.io import open_scene

pytestmark = pytest.mark.shared

MINI_SAFE = "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"


@pytest.fixture(scope="module")
def mini_safe(shared_data) -> Path:
    path = shared_data / MINI_SAFE
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


def _dsen2(shared_data: Path, tile: str) -> Path:
    path = shared_data / f"dsen2_{tile}"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


def test_mini_safe_metadata(mini_safe):
    with open_scene(mini_safe) as scene:
        assert scene.kind == "safe"
        assert scene.processing_baseline == "04.00"
        assert scene.tile == "T29UNU"
        assert scene.datetime.startswith("2022-10-05T11:54:11")
        assert scene.radiometry.quantification == 10000
        assert scene.radiometry.offsets == {name: -1000 for name in BAND_NAMES}
        assert scene.crs.to_epsg() == 32629
        # Only R60m spectral files exist: B01 and B09 are found (native 60 m); the 10 m and 20 m
        # bands are not taken from their resampled R60m copies.
        assert scene.found_bands == ("B01", "B09")
        assert set(scene.missing_bands) == set(GROUPS["10m"] + GROUPS["20m"])
        # The reference grid is derived from the 60 m grid: same origin, 6 × the size.
        assert (scene.width, scene.height) == (768, 768)
        assert tuple(scene.transform)[:6] == (10.0, 0.0, 550860.0, 0.0, -10.0, 5825160.0)


def test_mini_safe_b02_read_fails_clearly(mini_safe):
    with open_scene(mini_safe) as scene:
        with pytest.raises(InputError, match=r"band B02 not found") as err:
            scene.read_bands(["B02"], Window(0, 0, 60, 60))
        assert "\n" not in str(err.value)
        with pytest.raises(InputError, match="B02, B03, B04"):
            scene.require_bands()


def test_mini_safe_60m_reflectance_and_nodata(mini_safe):
    with open_scene(mini_safe) as scene:
        block = scene.read_group("60m", scene.full_window)
        with rasterio.open(scene.bands["B01"].path) as ds:
            dn = ds.read(1).astype(np.float64)
    assert block.data.shape == (2, 128, 128)
    valid = block.valid
    assert 0.05 < 1 - valid.mean() < 0.2  # the no-data wedge (about 9 %)
    assert np.allclose(block.data[0][valid], ((dn - 1000) / 10000)[valid], atol=1e-6)
    assert (block.data[0][valid] < 0).any()  # real negative reflectances survive the offset


@pytest.mark.parametrize("tile", ["T33UUB", "T49JGM"])
def test_dsen2_folders_nest(shared_data, tile):
    folder = _dsen2(shared_data, tile)
    with open_scene(folder) as scene:
        assert scene.kind == "cog-dir" and scene.found_bands == BAND_NAMES
        assert (scene.width, scene.height) == (600, 600)
        assert scene.tile == tile
        with rasterio.open(folder / "B02.tif") as src:
            assert scene.product_id == src.tags()["PRODUCT_ID"] != folder.name
        ratios = {name: scene.bands[name].ratio for name in BAND_NAMES}
        assert ratios == {
            name: {"10m": 1, "20m": 2, "60m": 6}[g] for g, m in GROUPS.items() for name in m
        }
        scene.require_bands()
        blocks = {g: scene.read_group(g, Window(60, 60, 120, 120)) for g in GROUPS}
        assert all(b.valid.all() for b in blocks.values())
        # 20 m B8A matches 2 × 2-averaged 10 m B08 (same origin: the grids nest).
        b08 = blocks["10m"].data[3].reshape(60, 2, 60, 2).mean(axis=(1, 3))
        assert np.corrcoef(b08.ravel(), blocks["20m"].data[3].ravel())[0, 1] > 0.95


@pytest.mark.parametrize("tile", ["T33UUB", "T49JGM"])
def test_dsen2_stac_item_reads_like_the_folder(shared_data, tile):
    folder = _dsen2(shared_data, tile)
    with open_scene(folder / "item.json") as stac, open_scene(folder) as cogs:
        assert stac.kind == "stac" and stac.found_bands == BAND_NAMES
        assert stac.radiometry.quantification == 10000 and set(
            stac.radiometry.offsets.values()
        ) == {0}
        assert stac.radiometry.source.startswith("STAC raster:bands")
        assert (stac.transform, stac.width, stac.height) == (
            cogs.transform,
            cogs.width,
            cogs.height,
        )
        for group in GROUPS:
            a = stac.read_group(group, Window(0, 0, 96, 96), halo=1)
            b = cogs.read_group(group, Window(0, 0, 96, 96), halo=1)
            assert np.array_equal(a.data, b.data)
