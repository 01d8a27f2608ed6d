"""Unit tests of the tiling bookkeeping: grids, blending weights, noise seeding, rolling buffers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difffusr_cli.tiling import (
    ALIGN,
    BlendBuffer,
    Layout,
    RowStage,
    Span,
    axis_starts,
    blend_weights,
    fill_invalid,
    patch_noise,
    patch_seed,
)


@pytest.mark.parametrize(
    "length,size,overlap",
    [(192, 64, 16), (200, 64, 0), (64, 64, 16), (40, 64, 16), (1000, 256, 32)],
)
def test_axis_starts_cover_with_overlap_and_snap_last_to_edge(length, size, overlap):
    starts = axis_starts(length, size, overlap)
    assert starts[0] == 0
    if length <= size:
        assert starts == [0]
        return
    assert starts[-1] == length - size  # snapped to the edge, never past it
    steps = np.diff(starts)
    assert np.all(steps[:-1] == size - overlap) and 0 < steps[-1] <= size - overlap
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + size] = True
    assert covered.all()


def test_axis_starts_rejects_bad_overlap():
    with pytest.raises(ValueError):
        axis_starts(100, 32, 32)


def test_blend_weights_are_positive_and_sum_to_one_across_a_nominal_overlap():
    patch, overlap = 64, 16
    w = blend_weights(patch, overlap)
    assert w.shape == (patch, patch) and w.dtype == np.float32
    assert w.min() > 0 and w.max() == 1.0
    assert np.all(w[overlap:-overlap, overlap:-overlap] == 1.0)
    # Two patches at the nominal stride: their 1-D ramps add up to 1 in the overlap.
    ramp = w[patch // 2]
    total = np.zeros(2 * patch - overlap)
    total[:patch] += ramp
    total[patch - overlap :] += ramp
    np.testing.assert_allclose(total[overlap:-overlap], 1.0, atol=1e-6)
    assert blend_weights((48, 96), (24, 0)).shape == (48, 96)
    assert np.all(blend_weights(32, 0) == 1.0)


def test_patch_noise_depends_on_seed_row_and_col_only():
    a = patch_noise(7, 2, 3, 16)
    assert a.shape == (3, 16, 16) and a.dtype == torch.float32
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(a, patch_noise(7, 2, 3, 16))
    assert not torch.equal(a, patch_noise(8, 2, 3, 16))
    assert not torch.equal(a, patch_noise(7, 3, 2, 16))
    assert len({patch_seed(0, r, c) for r in range(20) for c in range(20)}) == 400
    assert abs(float(patch_noise(0, 0, 0, 128).std()) - 1.0) < 0.05


def test_fill_invalid_uses_the_mean_of_valid_pixels():
    data = np.stack([np.arange(16, dtype=np.float32).reshape(4, 4)] * 2)
    data[1] *= 2
    valid = np.ones((4, 4), bool)
    valid[0, :2] = False
    out = fill_invalid(data, valid)
    assert np.array_equal(out[:, valid], data[:, valid])
    np.testing.assert_allclose(
        out[:, ~valid], np.repeat(data[:, valid].mean(axis=1)[:, None], 2, axis=1)
    )
    assert np.all(fill_invalid(data, np.zeros((4, 4), bool)) == 0)


def test_layout_tiles_start_on_60m_pixels_and_shrink_to_small_regions():
    layout = Layout(
        height=200,
        width=1000,
        patch=256,
        overlap=32,
        tile=480,
        tile_overlap=48,
        halo=48,
        block_rows=512,
    )
    assert layout.patch_rows == [0] and layout.patch_cols[-1] == 1000 - 256
    assert layout.tile_shape == (216, 480)  # 200 rounded up to whole 60 m pixels
    assert all(c % ALIGN == 0 for c in layout.tile_cols) and layout.tile_cols[-1] + 480 >= 1000
    assert layout.block_count == 1 and layout.block(0) == Span(0, 200)
    with pytest.raises(ValueError):
        Layout(
            height=200,
            width=200,
            patch=64,
            overlap=16,
            tile=100,
            tile_overlap=24,
            halo=24,
            block_rows=64,
        )
    blocks = Layout(192, 192, 64, 16, 96, 24, 24, 80)
    assert [blocks.block(i) for i in range(blocks.block_count)] == [
        Span(0, 80),
        Span(80, 160),
        Span(160, 192),
    ]


def test_blend_buffer_normalises_drops_and_grows():
    buf = BlendBuffer(width=10, channels=1)
    weights = blend_weights(6, 2)
    for y in (0, 4):
        for x in (0, 4):
            buf.add(y, x, np.full((1, 6, 6), 3.0, np.float32), weights)
    values, covered = buf.read(Span(0, 10))
    assert covered[:, :10].all()
    np.testing.assert_allclose(values, 3.0, rtol=1e-6)
    buf.drop_before(5)
    assert buf.first_row == 5
    with pytest.raises(ValueError):
        buf.read(Span(4, 8))
    values2, _ = buf.read(Span(5, 10))
    assert np.array_equal(values2, values[:, 5:])
    buf.add(8, 8, np.full((1, 6, 6), 1.0, np.float32), weights)  # reaches past the width: clipped
    assert buf.rows == 9
    assert not buf.read(Span(12, 14))[1][:, :8].any()  # never covered


def _position_stage(starts, size, height, width, log):
    """A stage whose windows hold a function of the global pixel position."""

    def compute(index, top):
        log.append(index)
        for left in axis_starts(width, size, 4):
            yy, xx = np.mgrid[top : top + size, left : left + size].astype(np.float32)
            yield left, np.stack([yy * 1000 + xx]), blend_weights(size, 4)

    return RowStage(starts, size, height, width, 1, compute)


def test_row_stage_computes_each_row_once_and_restarts_exactly():
    height, width, size = 60, 30, 12
    starts = axis_starts(height, size, 4)
    log: list[int] = []
    stage = _position_stage(starts, size, height, width, log)
    expected = (np.mgrid[0:height, 0:width][0] * 1000 + np.mgrid[0:height, 0:width][1]).astype(
        np.float32
    )
    pieces = []
    for rows in (Span(0, 20), Span(20, 41), Span(41, 60)):
        values, covered = stage.read(rows)
        assert covered.all()
        pieces.append(values[0])
        stage.drop_before(rows.stop)
    whole = np.concatenate(pieces)
    np.testing.assert_allclose(whole, expected, rtol=1e-6)
    assert log == list(range(len(starts)))  # every window row exactly once, in order

    log.clear()
    fresh = _position_stage(starts, size, height, width, [])
    reference = fresh.read(Span(0, 60))[0]
    stage.restart(41)
    assert log == [] and stage.next_row == next(i for i, t in enumerate(starts) if t + size > 41)
    resumed = stage.read(Span(41, 60))[0]
    assert np.array_equal(resumed, reference[:, 41:])  # bitwise: same contributions, same order


def test_unblended_buffer_copies_windows_in_and_reads_without_weights():
    buffer = BlendBuffer(10, channels=2, capacity=4, blended=False)
    first = np.full((2, 4, 6), 3.0, dtype=np.float32)
    second = np.full((2, 4, 6), 5.0, dtype=np.float32)
    weights = blend_weights((4, 6), 2)  # ignored: unblended windows are copied in
    buffer.add(0, 0, first, weights)
    buffer.add(0, 4, second, weights)  # overlaps the first over columns 4-5: the last one wins
    data, covered = buffer.read(Span(0, 4))
    assert covered.all()
    np.testing.assert_array_equal(data[:, :, :4], 3.0)
    np.testing.assert_array_equal(data[:, :, 4:], 5.0)
    # a plain read is the caller's own array; a reused one is the buffer's and changes with it
    kept = data.copy()
    reused, _ = buffer.read(Span(0, 4), reuse=True)
    buffer.add(0, 0, second, weights)
    np.testing.assert_array_equal(data, kept)
    np.testing.assert_array_equal(reused, 5.0)


def test_unblended_buffer_leaves_uncovered_pixels_zero():
    buffer = BlendBuffer(8, channels=1, capacity=4, blended=False)
    buffer.add(0, 0, np.full((1, 4, 4), 2.0, dtype=np.float32), np.ones((4, 4), np.float32))
    for reuse in (False, True):
        data, covered = buffer.read(Span(0, 4), reuse=reuse)
        assert covered[:, :4].all() and not covered[:, 4:].any()
        np.testing.assert_array_equal(data[0, :, 4:], 0.0)
        np.testing.assert_array_equal(data[0, :, :4], 2.0)


def test_reused_blended_reads_equal_plain_reads():
    buffer = BlendBuffer(12, channels=3, capacity=6)
    rng = np.random.default_rng(0)
    for left in (0, 4):
        patch = rng.random((3, 6, 8), dtype=np.float32)
        buffer.add(0, left, patch, blend_weights((6, 8), 4))
    plain, covered = buffer.read(Span(1, 5), Span(2, 12))
    reused, covered_reused = buffer.read(Span(1, 5), Span(2, 12), reuse=True)
    np.testing.assert_array_equal(plain, reused)
    np.testing.assert_array_equal(covered, covered_reused)


def test_scratch_ring_lends_its_buffers_in_turn() -> None:
    from difffusr_cli.scratch import ScratchRing

    ring = ScratchRing(2)
    first = ring.array((3, 4))
    first[:] = 1.0
    second = ring.array((3, 4))  # the other buffer: the first is untouched
    second[:] = 2.0
    assert (first == 1.0).all() and not np.shares_memory(first, second)
    third = ring.array((2, 4))  # the first buffer again
    assert np.shares_memory(first, third)
