"""README's first command: `difffusr superres --example -o example.tif` works offline."""

from __future__ import annotations

import pytest
import rasterio

from difffusr_cli.bands import BAND_NAMES
from difffusr_cli.cli import main


@pytest.mark.slow
def test_example_runs_offline_with_the_shipped_models(tmp_path, capsys):
    out = tmp_path / "example.tif"
    assert main(["superres", "--example", "-o", str(out), "--steps", "2", "--quiet"]) == 0
    with rasterio.open(out) as ds:
        assert ds.count == 12 and ds.descriptions == BAND_NAMES
        assert ds.res == (2.5, 2.5) and ds.width == ds.height == 192
        data = ds.read()
        tags = ds.tags()
        assert tags["rgb_model"] == "rgb-tiny" and tags["fusion_model"] == "fusion-s2"
    valid = data[0] != 0
    assert valid.any() and (data[:, valid] > 0).all()  # every band is data where B01 is


def test_example_takes_no_inputs(tmp_path, capsys):
    assert main(["superres", "--example", str(tmp_path), "-o", str(tmp_path / "x.tif")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--example" in err
