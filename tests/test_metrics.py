"""Fusion quality metrics: perfect scores, ordering under degradation, masks, ERGAS definition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import error_relative_global_dimensionless_synthesis

from difffusr_cli.bands import GROUP_RATIO, GROUPS
from difffusr_cli.metrics import (
    METRIC_NAMES,
    Scores,
    aggregate_scores,
    band_scores,
    score_groups,
)


def _reference(batch: int = 2, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Textured positive reflectance ``(batch, channels, size, size)``."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand((batch, channels, size // 4, size // 4), generator=gen)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return 0.05 + 0.3 * smooth + 0.05 * torch.rand((batch, channels, size, size), generator=gen)


def _noisy(ref: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return ref + sigma * torch.randn(ref.shape, generator=gen)


def _assert_perfect(scores: Scores) -> None:
    assert scores.psnr == math.inf
    assert scores.ergas == 0.0
    assert scores.mse == 0.0
    assert scores.ssim == pytest.approx(1.0, abs=1e-6)
    assert scores.r2 == pytest.approx(1.0, abs=1e-12)
    assert scores.cc == pytest.approx(1.0, abs=1e-12)


def test_perfect_reconstruction_scores_perfectly() -> None:
    ref = _reference()
    for scores in band_scores(ref.clone(), ref, ratio=4):
        _assert_perfect(scores)
    _assert_perfect(aggregate_scores(ref.clone(), ref, ratio=4))


def test_more_degradation_scores_worse_on_every_metric() -> None:
    ref = _reference()
    mild, strong = (aggregate_scores(_noisy(ref, s), ref, ratio=4) for s in (0.005, 0.03))
    assert strong.psnr < mild.psnr
    assert strong.ssim < mild.ssim < 1.0
    assert strong.r2 < mild.r2 < 1.0
    assert strong.cc < mild.cc < 1.0
    assert strong.mse > mild.mse > 0.0
    assert strong.ergas > mild.ergas > 0.0


def test_bilinear_of_a_downsampled_image_scores_below_perfect() -> None:
    ref = _reference(size=48)
    upsampled = F.interpolate(
        F.avg_pool2d(ref, 4), scale_factor=4, mode="bilinear", align_corners=False
    )
    scores = aggregate_scores(upsampled, ref, ratio=4)
    assert math.isfinite(scores.psnr) and scores.psnr > 10
    assert 0 < scores.ssim < 1 and 0 < scores.r2 < 1 and scores.ergas > 0


def test_psnr_follows_mse_with_unit_data_range() -> None:
    ref = _reference(batch=1)
    for scores in band_scores(_noisy(ref, 0.01), ref, ratio=4):
        assert scores.psnr == pytest.approx(10 * math.log10(1.0 / scores.mse), rel=1e-6)
    aggregate = aggregate_scores(_noisy(ref, 0.01), ref, ratio=4)
    assert aggregate.psnr == pytest.approx(10 * math.log10(1.0 / aggregate.mse), rel=1e-9)


def test_r2_is_negative_when_worse_than_the_mean() -> None:
    ref = _reference(batch=1, channels=1)
    flipped = 2 * ref.mean() - ref  # anti-correlated with the reference
    scores = band_scores(flipped, ref, ratio=4)[0]
    assert scores.r2 < 0
    assert scores.cc == pytest.approx(-1.0, abs=1e-9)


@pytest.mark.parametrize("ratio", [2, 4, 24])
def test_ergas_matches_torchmetrics_and_the_documented_formula(ratio: int) -> None:
    ref = _reference(batch=3, channels=4)
    pred = _noisy(ref, 0.02)
    ours = aggregate_scores(pred, ref, ratio=ratio).ergas
    expected = error_relative_global_dimensionless_synthesis(
        pred.double(), ref.double(), ratio=ratio
    )
    assert ours == pytest.approx(float(expected), rel=1e-9)
    # 100 · (h/l) · sqrt(mean_k RMSE_k² / μ_k²), averaged over images.
    rmse = (pred - ref).double().square().mean(dim=(2, 3)).sqrt()
    mu = ref.double().mean(dim=(2, 3))
    by_hand = (100 / ratio * ((rmse / mu) ** 2).mean(dim=1).sqrt()).mean()
    assert ours == pytest.approx(float(by_hand), rel=1e-9)


def test_nodata_pixels_do_not_count() -> None:
    ref = _reference(batch=1, size=32)
    pred = _noisy(ref, 0.02)
    valid = torch.ones((1, 32, 32), dtype=torch.bool)
    valid[..., 16:] = False
    garbage = pred.clone()
    garbage[..., 16:] = 7.0
    masked = aggregate_scores(garbage, ref, valid, ratio=4)
    # Same as a reconstruction that is perfect on the invalid half ...
    perfect_there = pred.clone()
    perfect_there[..., 16:] = ref[..., 16:]
    assert masked == aggregate_scores(perfect_there, ref, valid, ratio=4)
    # ... and, for the pixel-wise metrics, as scoring only the valid half.
    cropped = aggregate_scores(pred[..., :16], ref[..., :16], ratio=4)
    for name in ("mse", "psnr", "r2", "cc", "ergas"):
        assert getattr(masked, name) == pytest.approx(getattr(cropped, name), rel=1e-9)
    assert aggregate_scores(garbage, ref, ratio=4).psnr < masked.psnr - 10


def test_images_without_valid_pixels_are_left_out() -> None:
    ref = _reference(batch=2)
    pred = _noisy(ref, 0.02)
    valid = torch.ones((2, 32, 32), dtype=torch.bool)
    valid[1] = False
    both = aggregate_scores(pred, ref, valid, ratio=4)
    first = aggregate_scores(pred[:1], ref[:1], ratio=4)
    for name in METRIC_NAMES:
        assert getattr(both, name) == pytest.approx(getattr(first, name), rel=1e-9)


def test_ssim_is_nan_for_images_too_small_for_its_window() -> None:
    ref = _reference(size=32)[..., :4, :4]
    scores = aggregate_scores(ref.clone(), ref, ratio=4)
    assert math.isnan(scores.ssim)
    assert scores.psnr == math.inf


def _group_data(seed: int, sigma: float) -> tuple[dict, dict]:
    sizes = {"10m": 24, "20m": 12, "60m": 8}
    refs = {g: _reference(1, len(GROUPS[g]), sizes[g], seed=seed + i) for i, g in enumerate(sizes)}
    preds = {g: _noisy(r, sigma, seed=seed + 10) for g, r in refs.items()}
    return preds, refs


def test_score_groups_table_and_overall_aggregation() -> None:
    preds, refs = _group_data(seed=3, sigma=0.02)
    ratios = {g: 4 * r for g, r in GROUP_RATIO.items()}
    table = score_groups(preds, refs, ratios=ratios, band_names=GROUPS)
    assert list(table.per_band) == [n for g in GROUPS for n in GROUPS[g]]
    assert set(table.per_group) == set(GROUPS)
    for group, scores in table.per_group.items():
        assert scores == aggregate_scores(preds[group], refs[group], ratio=ratios[group])
        per_band = band_scores(preds[group], refs[group], ratio=ratios[group])
        assert [table.per_band[name] for name in GROUPS[group]] == per_band
    # Overall ERGAS is the root mean square of the 12 per-band ERGAS (bands with different ratios).
    per_band_ergas = torch.tensor([s.ergas for s in table.per_band.values()], dtype=torch.float64)
    assert table.overall.ergas == pytest.approx(
        float(per_band_ergas.square().mean().sqrt()), rel=1e-9
    )
    assert table.overall.mse == pytest.approx(
        sum(s.mse for s in table.per_band.values()) / 12, rel=1e-9
    )
    for scores in (table.overall, *table.per_group.values(), *table.per_band.values()):
        assert all(math.isfinite(v) for v in scores.as_dict().values())


def test_score_groups_perfect() -> None:
    _, refs = _group_data(seed=5, sigma=0.0)
    table = score_groups(
        {g: r.clone() for g, r in refs.items()},
        refs,
        ratios={g: 4 * r for g, r in GROUP_RATIO.items()},
        band_names=GROUPS,
    )
    for scores in (table.overall, *table.per_group.values(), *table.per_band.values()):
        _assert_perfect(scores)


def test_shape_mismatch_is_rejected() -> None:
    ref = _reference()
    with pytest.raises(ValueError, match="shape"):
        aggregate_scores(ref[..., :-1], ref, ratio=4)
    with pytest.raises(ValueError, match="valid"):
        aggregate_scores(ref, ref, torch.ones(2, 3, 3, dtype=torch.bool), ratio=4)
