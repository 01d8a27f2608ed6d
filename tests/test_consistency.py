"""The reflectance-consistency projection (difffusr_cli.consistency): exact, smooth, local."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from difffusr_cli.consistency import (
    REACH,
    box_average,
    box_of_bilinear,
    inverse_kernel,
    project,
    solve_smooth,
)
from difffusr_cli.upsample import bicubic_up, bilinear_up


def smooth_field(channels: int, size: int, seed: int, scale: int = 16) -> torch.Tensor:
    """A smooth random image in about [0.05, 0.45]: coarse noise, bicubically upsampled."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, channels, size // scale + 3, size // scale + 3), generator=g)
    up = F.interpolate(coarse, scale_factor=scale, mode="bicubic", align_corners=False)
    return (0.05 + 0.4 * up[0, :, :size, :size]).clamp(0, 1)


@pytest.mark.parametrize("factor", [4, 8, 24])
def test_bilinear_up_is_torch_bilinear_and_crops_exactly(factor):
    c = torch.randn((2, 7, 9), generator=torch.Generator().manual_seed(1))
    ref = F.interpolate(c[None], scale_factor=factor, mode="bilinear", align_corners=False)[0]
    assert (bilinear_up(c, factor) - ref).abs().max() < 1e-5
    part = bilinear_up(c, factor, slice(2, 5), slice(0, 4))
    assert torch.equal(part, bilinear_up(c, factor)[:, 2 * factor : 5 * factor, : 4 * factor])


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bicubic_up_is_torch_bicubic(factor):
    c = torch.randn((3, 11, 6), generator=torch.Generator().manual_seed(2))
    ref = F.interpolate(c[None], scale_factor=factor, mode="bicubic", align_corners=False)[0]
    assert (bicubic_up(c, factor) - ref).abs().max() < 2e-6


def test_the_smooth_step_inverts_box_of_bilinear():
    assert abs(sum(inverse_kernel()) - 1) < 1e-12
    r = smooth_field(3, 40, seed=2, scale=4) - 0.25  # a residual on a native grid
    for factor in (4, 8, 24):
        again = box_average(bilinear_up(solve_smooth(r), factor), factor)
        assert (again - r).abs().max() < 5e-3 * r.abs().max()  # before the exact box step


@pytest.mark.parametrize("factor", [4, 8, 24])
def test_projection_is_exact_and_leaves_nodata_alone(factor):
    truth = smooth_field(3, 10 * factor, seed=3)
    b = box_average(truth, factor)
    x = 1.3 * truth + 0.02 + 0.01 * torch.sin(torch.arange(10 * factor) / 3.0)  # biased model
    valid = torch.ones(b.shape[1:], dtype=torch.bool)
    valid[2:4, 5:7] = False
    y = project(x, b, valid, factor)
    assert y.shape == x.shape and y.dtype == torch.float32
    error = (box_average(y, factor) - b).abs()
    assert error[:, valid].max() < 2e-6
    assert (box_average(x, factor) - b)[:, valid].abs().mean() > 0.05  # there was a lot to fix
    # nodata native pixels get no residual: they are not pulled to b (only smoothed into)
    assert error[:, ~valid].min() > 1e-3
    nothing = torch.zeros_like(valid)
    assert torch.equal(project(x, b, nothing, factor), x)


def test_projection_leaves_no_blocks():
    factor = 8
    truth = smooth_field(1, 320, seed=4, scale=32)
    b = box_average(truth, factor)
    x = truth * (1.4 + 0.3 * smooth_field(1, 320, seed=5, scale=64))  # a smooth, uneven gain
    y = project(x, b, torch.ones(b.shape[1:], dtype=torch.bool), factor)

    def across_over_inside(image: torch.Tensor) -> float:
        step = (image[0, :, 1:] - image[0, :, :-1]).abs()  # between columns j and j + 1
        at_edge = torch.zeros(step.shape[1], dtype=torch.bool)
        at_edge[factor - 1 :: factor] = True  # j + 1 starts a native pixel
        return float(step[:, at_edge].mean() / step[:, ~at_edge].mean())

    assert (box_average(y, factor) - b).abs().max() < 2e-6
    assert across_over_inside(y) < 1.1 * across_over_inside(x)
    # what a blocky correction (x + R(b − D(x))) would do:
    blocky = x + (b - box_average(x, factor)).repeat_interleave(factor, 1).repeat_interleave(
        factor, 2
    )
    assert across_over_inside(blocky) > 1.5 * across_over_inside(x)


def test_a_piece_with_reach_context_gives_the_same_numbers():
    factor = 24
    big = smooth_field(2, 40 * factor, seed=6)[:, : 20 * factor]  # 20 × 40 native pixels
    b = box_average(big * 0.8, factor)
    valid = torch.ones(b.shape[1:], dtype=torch.bool)
    valid[3, 30] = False
    whole = project(big, b, valid, factor)
    # native rows 8..12, columns 10..20, computed on a piece with REACH native pixels around
    r0, r1, c0, c1 = 8 - REACH, 12 + REACH, 10 - REACH, 20 + REACH
    piece = project(
        big[:, r0 * factor : r1 * factor, c0 * factor : c1 * factor],
        b[:, r0:r1, c0:c1],
        valid[r0:r1, c0:c1],
        factor,
        keep=(slice(REACH, REACH + 4), slice(REACH, REACH + 10)),
    )
    assert torch.equal(piece, whole[:, 8 * factor : 12 * factor, 10 * factor : 20 * factor])


@pytest.mark.parametrize("factor", [4, 8, 24])
def test_box_of_bilinear_is_the_box_average_of_bilinear_upsampling(factor):
    c = torch.rand(2, 7, 9, generator=torch.Generator().manual_seed(factor), dtype=torch.float64)
    direct = box_average(bilinear_up(c, factor), factor)
    assert (box_of_bilinear(c) - direct).abs().max() < 1e-12
