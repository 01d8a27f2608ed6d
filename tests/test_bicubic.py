"""The built-in ``bicubic`` RGB model: one class for superres and eval opensr, no weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pipeline_helpers import read_product
from rasterio.windows import Window

from difffusr_cli.bands import RGB, indices
from difffusr_cli.cli import main
from difffusr_cli.evaluate import opensr
from difffusr_cli.example import make_example_safe
from difffusr_cli.io import open_scene
from difffusr_cli.models.bicubic import BicubicUpsampler
from difffusr_cli.superres import SuperresOptions, superres_many


@pytest.fixture(scope="module")
def safe(tmp_path_factory) -> Path:
    return make_example_safe(tmp_path_factory.mktemp("scene"), size=48)


def test_one_class_for_every_command():
    assert opensr.BicubicUpsampler is BicubicUpsampler
    model = opensr.build_model(opensr.OpenSRConfig(rgb_model="Bicubic", device="cpu"), "cpu")
    assert isinstance(model, BicubicUpsampler)
    lr = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    for kwargs in ({"steps": 7, "seed": 3}, {"noise": torch.randn(2, 3, 32, 32)}):
        # torch's bicubic to float rounding (computed separably, weights per phase)
        assert (model.super_resolve(lr, **kwargs) - expected).abs().max() < 1e-6


def test_superres_with_bicubic_needs_no_weights_and_says_so(safe, tmp_path, monkeypatch):
    # No manifest lookup, no download: an unreachable manifest would make any resolve fail.
    monkeypatch.setenv("DIFFFUSR_WEIGHTS_TOML", str(tmp_path / "missing.toml"))
    out = tmp_path / "b.tif"
    options = SuperresOptions(
        rgb_model="bicubic",
        fusion="bilinear",
        patch_size=64,
        overlap=16,
        device="cpu",
        dtype="float32",
        block_rows=96,
        quiet=True,
        consistency="off",  # compared with plain bicubic below; the projection would move it
    )
    superres_many([safe], out, options)
    data, meta = read_product(out)
    tags = meta["tags"]
    assert tags["rgb_model"] == "bicubic" and tags.get("rgb_model_sha256", "") == ""
    assert "built-in" in tags["rgb_model_file"]
    assert "built-in" in json.loads(tags["difffusr_fingerprint"])["rgb_model_sha256"]
    # B04, B03, B02 are bicubic ×4 of the input: equal to one global bicubic away from the patch
    # seams and the scene border (each patch is upsampled on its own, then blended).
    lr = open_scene(safe).read_bands(RGB, Window(0, 0, 48, 48)).data
    up = F.interpolate(torch.from_numpy(lr)[None], scale_factor=4, mode="bicubic")[0].numpy()
    rgb = data[indices(RGB)]
    valid = np.isfinite(rgb).all(axis=0)  # the example scene has a nodata corner
    assert valid.mean() > 0.5
    inner = np.zeros_like(valid)
    inner[8:40, 8:40] = True  # inside the first patch, off its blend ramp
    np.testing.assert_allclose(rgb[:, inner & valid], up[:, inner & valid], atol=1e-5)
    assert np.abs(rgb - up)[:, valid].mean() < 0.01 * np.abs(up)[:, valid].mean()


def test_weights_list_names_the_builtin_baseline(capsys):
    assert main(["weights", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed["builtin"]] == ["bicubic"]
    assert all(m["name"] != "bicubic" for m in listed["models"])
