"""Streaming scores of `difffusr eval fusion` against metrics.py, and its block plan."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from difffusr_cli.evaluate.fusion_blocks import plan_blocks
from difffusr_cli.evaluate.running_scores import RunningBandScores, aggregate_band_scores
from difffusr_cli.metrics import METRIC_NAMES, aggregate_scores, band_scores

# -- streaming scores -----------------------------------------------------------------------------


def _random_pair(seed: int, shape=(3, 40, 50)):
    generator = torch.Generator().manual_seed(seed)
    ref = torch.rand(shape, generator=generator) * 0.3 + 0.05
    pred = ref + 0.02 * torch.randn(shape, generator=generator)
    valid = torch.rand(shape[1:], generator=generator) > 0.1
    return pred, ref, valid


def test_running_scores_match_metrics_on_one_block() -> None:
    pred, ref, valid = _random_pair(0)
    running = RunningBandScores(["a", "b", "c"], ratio=4)
    running.update(pred, ref, valid)
    mine = list(running.scores().values())
    theirs = band_scores(pred[None], ref[None], valid[None], ratio=4)
    for a, b in zip(mine, theirs, strict=True):
        for metric in METRIC_NAMES:
            assert getattr(a, metric) == pytest.approx(getattr(b, metric), rel=1e-6)
    overall = aggregate_scores(pred[None], ref[None], valid[None], ratio=4)
    combined = aggregate_band_scores(mine)
    for metric in METRIC_NAMES:
        assert getattr(combined, metric) == pytest.approx(getattr(overall, metric), rel=1e-6)


def test_running_scores_over_blocks_with_context_equal_the_whole_image() -> None:
    pred, ref, valid = _random_pair(1)
    whole = RunningBandScores(["a", "b", "c"], ratio=8)
    whole.update(pred, ref, valid)
    split = RunningBandScores(["a", "b", "c"], ratio=8)
    top = torch.zeros(valid.shape, dtype=torch.bool)
    top[:20] = True
    # Each block reads 6 rows of context beyond its scored rows (the SSIM window reaches 5).
    split.update(pred[:, :26], ref[:, :26], (valid & top)[:26], valid[:26])
    split.update(pred[:, 14:], ref[:, 14:], (valid & ~top)[14:], valid[14:])
    assert split.count == whole.count == int(valid.sum())
    for a, b in zip(split.scores().values(), whole.scores().values(), strict=True):
        for metric in METRIC_NAMES:
            assert getattr(a, metric) == pytest.approx(getattr(b, metric), rel=1e-9, abs=1e-12)


def test_running_scores_of_a_perfect_reconstruction() -> None:
    _, ref, valid = _random_pair(2)
    running = RunningBandScores(["a", "b", "c"], ratio=4)
    running.update(ref.clone(), ref, valid)
    for scores in running.scores().values():
        assert scores.psnr == math.inf and scores.mse == 0 and scores.ergas == 0
        assert (
            scores.ssim == pytest.approx(1.0, abs=1e-6)
            and scores.r2 == 1
            and scores.cc == pytest.approx(1.0)
        )


def test_plan_blocks_partition_the_region() -> None:
    region = Window(12, 36, 240, 168)
    blocks = plan_blocks(region, 96, 48)
    covered = np.zeros((400, 400), dtype=int)
    for b in blocks:
        c, e = b.core, b.expanded
        covered[
            int(c.row_off) : int(c.row_off + c.height), int(c.col_off) : int(c.col_off + c.width)
        ] += 1
        assert e.col_off <= c.col_off and e.row_off <= c.row_off
        assert (
            e.col_off + e.width >= c.col_off + c.width
            and e.row_off + e.height >= c.row_off + c.height
        )
        assert e.col_off >= region.col_off and e.col_off + e.width <= region.col_off + region.width
        assert (int(e.col_off) - 12) % 24 == 0 and int(e.width) % 24 == 0
    assert (covered[36:204, 12:252] == 1).all() and covered.sum() == 240 * 168
