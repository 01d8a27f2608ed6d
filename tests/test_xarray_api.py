"""difffusr_cli.super_resolve: the CLI's pixels as an xarray.DataArray with its grid and CRS."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import rasterio
from batch_helpers import cli_args, fast_options, small_scenes

import difffusr_cli
from difffusr_cli.bands import BAND_NAMES
from difffusr_cli.cli import main

pytest.importorskip("xarray")
pytest.importorskip("rioxarray")


def test_super_resolve_matches_the_cli_product(tmp_path):
    [scene] = small_scenes(tmp_path / "scene", 1)
    options = fast_options(tmp_path / "models", window=(36, 24, 12, 12))
    product = tmp_path / "cli.tif"
    assert main(["superres", str(scene), "-o", str(product), *cli_args(options), "-q"]) == 0
    settings = {k: getattr(options, k) for k in ("rgb_model", "fusion", "steps", "patch_size")}
    da = difffusr_cli.super_resolve(
        scene, window=options.window, overlap=options.overlap, device="cpu", **settings
    )
    with rasterio.open(product) as ds:
        dn, valid = ds.read(), ds.read_masks(1) > 0
        scale, offset = np.array(ds.scales), np.array(ds.offsets)
        assert da.rio.crs == ds.crs and da.rio.transform() == ds.transform
        assert da.shape == (12, ds.height, ds.width)
        x, y = ds.xy(0, 0)
    assert da.dims == ("band", "y", "x") and list(da.band.values) == list(BAND_NAMES)
    assert da.dtype == np.float32 and (da.x[0], da.y[0]) == (x, y)
    reflectance = dn * scale[:, None, None] + offset[:, None, None]
    values = da.values
    assert np.array_equal(np.isnan(values).any(axis=0), ~valid)
    assert np.isnan(values).any() and valid.any()  # the example scene has a nodata corner
    # uint16 rounds to half a DN, except where the random-weight model's values (made consistent
    # with the input) leave the DN range and are clipped to 1 or 65535.
    inside = valid & (dn > 1) & (dn < 65535)
    assert inside.mean() > 0.5
    assert np.abs(values - reflectance)[inside].max() <= scale.max() / 2 + 1e-6
    assert da.attrs["rgb_model_sha256"] and da.attrs["seed"] == 0 and da.attrs["units"]


def test_a_missing_xarray_names_the_extra(monkeypatch):
    real = builtins.__import__

    def no_xarray(name, *args, **kwargs):
        if name in ("xarray", "rioxarray"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xarray)
    with pytest.raises(ImportError, match=r"difffusr\[xarray\]"):
        difffusr_cli.super_resolve("scene.SAFE")
