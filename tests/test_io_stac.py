"""STAC items, and the three sources (SAFE, COGs, STAC) giving identical reflectance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from difffusr_cli.bands import BAND_NAMES, BY_NAME, GROUPS
from difffusr_cli.errors import InputError
from difffusr_cli.example import write_example_cogs, write_example_stac
from difffusr_cli.io import open_scene


@pytest.fixture(scope="module")
def item(example_safe, tmp_path_factory) -> Path:
    cogs = write_example_cogs(example_safe, tmp_path_factory.mktemp("stac-cogs"))
    return write_example_stac(cogs)


def _edit(item: Path, target: Path, change) -> Path:
    data = json.loads(item.read_text())
    change(data)
    for asset in data["assets"].values():  # keep hrefs valid from the new location
        asset["href"] = str((item.parent / asset["href"]).resolve())
    target.write_text(json.dumps(data))
    return target


@pytest.mark.parametrize(
    "window",
    [
        Window(0, 0, 192, 192),
        Window(37, 11, 100, 90),
        Window(150, 160, 60, 50),
        Window(-20, -8, 40, 30),
    ],
)
def test_safe_cogs_and_stac_give_identical_reflectance(example_safe, item, window):
    with (
        open_scene(example_safe) as safe,
        open_scene(item.parent) as cogs,
        open_scene(item) as stac,
    ):
        assert stac.kind == "stac" and stac.found_bands == BAND_NAMES
        assert stac.tile == "T32TMT" and stac.processing_baseline == "05.09"
        for group in GROUPS:
            blocks = [s.read_group(group, window, halo=1) for s in (safe, cogs, stac)]
            for other in blocks[1:]:
                assert other.window == blocks[0].window and other.ratio == blocks[0].ratio
                assert np.array_equal(other.data, blocks[0].data)
                assert np.array_equal(other.valid, blocks[0].valid)


def test_radiometry_comes_from_raster_bands(item, tmp_path):
    def change(data):
        for asset in data["assets"].values():
            asset["raster:bands"][0].update(scale=0.0002, offset=-0.2)

    with open_scene(_edit(item, tmp_path / "item.json", change)) as stac:
        assert stac.radiometry.quantification == 5000
        assert set(stac.radiometry.offsets.values()) == {-1000}
        assert stac.radiometry.source.startswith("STAC raster:bands")


def test_boa_offset_applied_means_no_offset(item, tmp_path):
    def change(data):
        data["properties"]["earthsearch:boa_offset_applied"] = True

    with open_scene(_edit(item, tmp_path / "item.json", change)) as stac, open_scene(item) as plain:
        assert set(stac.radiometry.offsets.values()) == {0}
        assert "earthsearch:boa_offset_applied=true" in stac.radiometry.source
        a = stac.read_group("10m", Window(0, 0, 30, 30))
        b = plain.read_group("10m", Window(0, 0, 30, 30))
        assert np.allclose(a.data[:, a.valid], b.data[:, b.valid] + 0.1, atol=1e-6)


def test_earth_search_keys_and_eo_bands_names(item, tmp_path):
    def change(data):
        assets = {}
        for i, (key, asset) in enumerate(data["assets"].items()):
            if i % 2:
                assets[BY_NAME[key].earth_search_asset] = asset
            else:
                asset["eo:bands"] = [{"name": key}]
                assets[f"asset-{i}"] = asset
        assets["visual"] = {
            "href": "./TCI.tif",
            "eo:bands": [{"name": "red"}, {"name": "green"}, {"name": "blue"}],
        }
        data["assets"] = assets
        del data["properties"]["s2:mgrs_tile"]
        data["properties"]["grid:code"] = "MGRS-32TMT"

    with open_scene(_edit(item, tmp_path / "item.json", change)) as stac:
        assert stac.found_bands == BAND_NAMES and stac.tile == "T32TMT"


def test_missing_raster_bands_fall_back_to_the_files_tags(item, tmp_path):
    def change(data):
        for asset in data["assets"].values():
            del asset["raster:bands"]

    with open_scene(_edit(item, tmp_path / "item.json", change)) as stac:
        assert "scale/offset metadata" in stac.radiometry.source
        assert set(stac.radiometry.offsets.values()) == {-1000}


def test_not_a_stac_item(tmp_path, item):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(InputError, match="not a JSON file"):
        open_scene(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"type": "FeatureCollection"}))
    with pytest.raises(InputError, match="not a STAC item"):
        open_scene(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(
        json.dumps({"type": "Feature", "assets": {"thumbnail": {"href": "x.png"}}})
    )
    with pytest.raises(InputError, match="no STAC asset is a Sentinel-2 band"):
        open_scene(tmp_path / "c.json")


def test_asset_file_missing_is_a_clear_error(item, tmp_path):
    def change(data):
        data["assets"]["B03"]["href"] = "./does-not-exist.tif"

    with pytest.raises(InputError, match="cannot read .*does-not-exist.tif"):
        open_scene(_edit(item, tmp_path / "item.json", change))
