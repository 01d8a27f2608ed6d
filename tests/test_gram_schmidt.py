"""Gram–Schmidt and bilinear fusion baselines: analytic cases, shapes, dtypes, masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from difffusr_cli.bands import BAND_NAMES, GROUP_RATIO, GROUPS, SCALE, indices
from difffusr_cli.fusion_baselines import (
    bilinear_fuse,
    gram_schmidt_fuse,
    gram_schmidt_sharpen,
)

HR = 48  # divisible by 4·6 so every group has whole native pixels


def _textured(batch: int, size: int, seed: int) -> torch.Tensor:
    """``(batch, 1, size, size)`` reflectance-like image with structure at several scales."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand((batch, 1, size // 8, size // 8), generator=gen)
    fine = torch.rand((batch, 1, size, size), generator=gen)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return 0.05 + 0.3 * smooth + 0.1 * fine


def _area(x: torch.Tensor, group: str) -> torch.Tensor:
    """The HR image as the group's sensor sees it: area average onto its native grid."""
    return F.avg_pool2d(x, SCALE * GROUP_RATIO[group])


def _groups_from(hr_bands: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-group LR inputs from 12 HR bands in product order ``(B, 12, H, W)``."""
    return {g: _area(hr_bands[:, indices(GROUPS[g])], g) for g in GROUP_RATIO}


SYNTHETIC = pytest.mark.parametrize("synthetic", ["regression", "mean"])


@SYNTHETIC
def test_pan_equal_to_the_bands_gives_the_bands_back(synthetic: str) -> None:
    x = _textured(2, HR, seed=1)
    rgb = x.expand(-1, 3, -1, -1)
    groups = _groups_from(x.expand(-1, 12, -1, -1))
    fused = gram_schmidt_fuse(rgb, groups, synthetic=synthetic)
    assert fused.shape == (2, 12, HR, HR)
    torch.testing.assert_close(fused, x.expand_as(fused), atol=1e-5, rtol=0)
    # ... while plain bilinear upsampling loses the detail.
    assert (bilinear_fuse(rgb, groups) - x).abs().max() > 0.05


@SYNTHETIC
def test_bands_affine_in_the_pan_are_recovered_exactly(synthetic: str) -> None:
    x = _textured(1, HR, seed=2)
    gen = torch.Generator().manual_seed(3)
    slope = 0.2 + torch.rand((1, 12, 1, 1), generator=gen)
    intercept = 0.1 * torch.rand((1, 12, 1, 1), generator=gen)
    truth = slope * x + intercept
    # The pan is itself an affine function of x (mean of three different affine bands).
    rgb = torch.cat([0.8 * x + 0.02, 1.1 * x, 0.9 * x + 0.05], dim=1)
    fused = gram_schmidt_fuse(rgb, _groups_from(truth), synthetic=synthetic)
    torch.testing.assert_close(fused, truth, atol=1e-5, rtol=0)
    # GS must beat bilinear by a wide margin on every band of this ideal case.
    bilinear = bilinear_fuse(rgb, _groups_from(truth))
    gs_err = (fused - truth).abs().mean(dim=(0, 2, 3))
    bl_err = (bilinear - truth).abs().mean(dim=(0, 2, 3))
    assert bool((gs_err < 0.1 * bl_err).all())


@SYNTHETIC
def test_constant_bands_stay_constant(synthetic: str) -> None:
    x = _textured(1, HR, seed=4)
    levels = torch.linspace(0.05, 0.6, 12).view(1, 12, 1, 1)
    truth = levels.expand(1, 12, HR, HR).clone()
    fused = gram_schmidt_fuse(x.expand(-1, 3, -1, -1), _groups_from(truth), synthetic=synthetic)
    torch.testing.assert_close(fused, truth, atol=1e-6, rtol=0)


@SYNTHETIC
def test_one_constant_band_in_a_textured_group_stays_constant(synthetic: str) -> None:
    pan = _textured(1, HR, seed=5)
    lowpass = F.interpolate(
        F.avg_pool2d(pan, 8), size=(HR, HR), mode="bilinear", align_corners=False
    )
    bands = torch.cat([lowpass, torch.full_like(lowpass, 0.3), 2 * lowpass], dim=1)
    out = gram_schmidt_sharpen(pan, bands, pan_lowpass=lowpass, synthetic=synthetic)
    torch.testing.assert_close(out[:, 1], torch.full_like(out[:, 1], 0.3), atol=1e-6, rtol=0)
    # The textured bands received detail.
    assert (out[:, 0] - lowpass[:, 0]).abs().max() > 0.01


@SYNTHETIC
def test_constant_pan_injects_nothing(synthetic: str) -> None:
    lowres = F.avg_pool2d(_textured(1, HR, seed=6), 8).repeat(1, 3, 1, 1)
    bands = F.interpolate(lowres, size=(HR, HR), mode="bilinear", align_corners=False)
    out = gram_schmidt_sharpen(torch.full((1, 1, HR, HR), 0.2), bands, synthetic=synthetic)
    torch.testing.assert_close(out, bands)


@SYNTHETIC
def test_statistics_use_only_valid_pixels(synthetic: str) -> None:
    pan = _textured(1, HR, seed=7)
    two_bands = pan * torch.tensor([1.0, 0.5]).view(1, 2, 1, 1)
    bands = F.interpolate(
        F.avg_pool2d(two_bands, 8), size=(HR, HR), mode="bilinear", align_corners=False
    )
    valid = torch.ones((1, HR, HR), dtype=torch.bool)
    valid[..., : HR // 2] = False
    # Garbage where the mask says nodata must not change the result on valid pixels.
    pan_bad, bands_bad = pan.clone(), bands.clone()
    pan_bad[..., : HR // 2] = 5.0
    bands_bad[..., : HR // 2] = -1.0
    clean = gram_schmidt_sharpen(pan, bands, valid=valid, synthetic=synthetic)
    dirty = gram_schmidt_sharpen(pan_bad, bands_bad, valid=valid, synthetic=synthetic)
    torch.testing.assert_close(dirty[..., HR // 2 :], clean[..., HR // 2 :])
    unmasked = gram_schmidt_sharpen(pan_bad, bands_bad, synthetic=synthetic)
    assert not torch.allclose(unmasked[..., HR // 2 :], clean[..., HR // 2 :], atol=1e-3)


@pytest.mark.parametrize("fuse", [gram_schmidt_fuse, bilinear_fuse])
def test_shapes_dtype_and_product_order(fuse) -> None:
    batch, h = 3, HR // SCALE
    levels = torch.arange(12, dtype=torch.float32).view(1, 12, 1, 1) / 20
    hr = levels.expand(batch, 12, HR, HR)
    groups = _groups_from(hr)
    assert groups["10m"].shape == (batch, 4, h, h)
    assert groups["20m"].shape == (batch, 6, h // 2, h // 2)
    assert groups["60m"].shape == (batch, 2, h // 6, h // 6)
    out = fuse(torch.rand(batch, 3, HR, HR), groups)
    assert out.shape == (batch, len(BAND_NAMES), HR, HR)
    assert out.dtype == torch.float32
    # Band k of the output carries band k's constant level: product order is respected.
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), levels.flatten(), atol=1e-5, rtol=0)


def test_mismatched_group_shape_is_rejected() -> None:
    groups = _groups_from(torch.rand(1, 12, HR, HR))
    with pytest.raises(ValueError, match="60m"):
        bilinear_fuse(torch.rand(1, 3, HR, HR), {"10m": groups["10m"], "20m": groups["20m"]})
    groups["20m"] = groups["20m"][..., :-1]
    with pytest.raises(ValueError, match="20m"):
        gram_schmidt_fuse(torch.rand(1, 3, HR, HR), groups)


def _read_dsen2(folder, size: int) -> dict[str, torch.Tensor]:
    """The top-left ``size`` × ``size`` 10 m pixels of a DSen2 folder, per group at native GSD."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.windows import Window

    out = {}
    for group, ratio in GROUP_RATIO.items():
        side = size // ratio
        planes = []
        for name in GROUPS[group]:
            with rasterio.open(folder / f"{name}.tif") as src:
                planes.append(
                    torch.from_numpy(src.read(1, window=Window(0, 0, side, side)).astype("float32"))
                )
        out[group] = torch.stack(planes)[None] / 10000.0  # L1C DN → reflectance
    return out


@pytest.mark.shared
@pytest.mark.parametrize("scene", ["dsen2_T33UUB", "dsen2_T49JGM"])
def test_wald_on_real_bands_regression_gs_beats_mean_gs_and_bilinear_on_10m(
    shared_data, scene
) -> None:
    from difffusr_cli.degrade import wald_degrade
    from difffusr_cli.metrics import score_groups

    native = _read_dsen2(shared_data / scene, 144)
    # Wald protocol ×4: the native 10 m grid plays the 2.5 m grid, the true RGB the SR RGB.
    rgb = native["10m"][:, [GROUPS["10m"].index(b) for b in ("B04", "B03", "B02")]]
    groups = {g: wald_degrade(v, SCALE) for g, v in native.items()}
    psnr = {}
    for name, fused in (
        ("gs", gram_schmidt_fuse(rgb, groups)),
        ("gs-mean", gram_schmidt_fuse(rgb, groups, synthetic="mean")),
        ("bilinear", bilinear_fuse(rgb, groups)),
    ):
        preds = {g: F.avg_pool2d(fused[:, indices(GROUPS[g])], r) for g, r in GROUP_RATIO.items()}
        table = score_groups(preds, native, ratios={g: SCALE for g in GROUPS}, band_names=GROUPS)
        assert all(torch.isfinite(torch.tensor(list(table.overall.as_dict().values()))))
        psnr[name] = (table.per_group["10m"].psnr, table.overall.psnr)
    assert psnr["gs"][0] > psnr["bilinear"][0]
    assert psnr["gs"][1] > psnr["gs-mean"][1]
