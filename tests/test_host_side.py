"""Host-side parts of the pipeline: thread policy, overlap bookkeeping, rectangular tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difffusr_cli.device import WRITER_CORES, host_threads
from difffusr_cli.superres.rows import RowTracker
from difffusr_cli.tiling import Layout


def test_host_threads_leave_the_writer_its_cores_and_restore_the_count():
    before = torch.get_num_threads()
    with host_threads(torch.device("cpu")):
        assert torch.get_num_threads() == max(before - WRITER_CORES, 1)
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), host_threads(torch.device("cpu")):
        raise RuntimeError("restored on errors too")
    assert torch.get_num_threads() == before
    with host_threads(torch.device("cuda")):  # not the CPU: nothing changes (no GPU needed)
        assert torch.get_num_threads() == before


def _brute_force(predictions, lefts, tops, patch, height, width):
    """Mean |a − b| over every horizontal and vertical overlap, from whole predictions."""
    sums = np.zeros(4)
    for r, top in enumerate(tops):
        rows = min(patch, height - top)
        for c, left in enumerate(lefts):
            if (r, c) not in predictions:
                continue
            if (r, c + 1) in predictions:
                right, stop = lefts[c + 1], min(left + patch, width)
                a = predictions[r, c][:, :rows, right - left : stop - left]
                b = predictions[r, c + 1][:, :rows, : stop - right]
                sums[:2] += np.abs(a.astype(np.float64) - b).sum(), a.size
            if (r - 1, c) in predictions:
                n, cols = tops[r - 1] + patch - top, min(patch, width - left)
                a = predictions[r - 1, c][:, top - tops[r - 1] :, :cols]
                b = predictions[r, c][:, :n, :cols]
                sums[2:] += np.abs(a.astype(np.float64) - b).sum(), a.size
    return sums[0] / sums[1], sums[2] / sums[3]


def test_patches_added_one_by_one_measure_every_overlap():
    patch, lefts, tops, height, width = 16, [0, 12, 24, 30], [0, 12, 20], 36, 44
    rng = np.random.default_rng(0)
    predictions = {
        (r, c): rng.random((3, patch, patch), dtype=np.float32)
        for r in range(len(tops))
        for c in range(len(lefts))
        if (r, c) != (1, 2)  # a skipped (nodata) patch
    }
    tracker = RowTracker(patch, lefts, tops, height, width)
    for r in range(len(tops)):
        tracker.start_row(r)
        for c in range(len(lefts)):
            if (r, c) in predictions:
                tracker.add_patch(r, c, predictions[r, c])
        tracker.finish_row(r)
        if r == 1:  # a row's carry holds only the rows the next patch row overlaps
            assert tracker.carries[1].patches[0].shape == (3, patch - (tops[2] - tops[1]), patch)
            assert 2 not in tracker.carries[1].patches  # the skipped patch
    expected = _brute_force(predictions, lefts, tops, patch, height, width)
    got = tracker.disagreement()
    assert got["horizontal"] == pytest.approx(expected[0], rel=1e-12)
    assert got["vertical"] == pytest.approx(expected[1], rel=1e-12)
    tracker.start_row(0)
    tracker.add_patch(0, 2, predictions[0, 2])
    with pytest.raises(ValueError, match="after column"):
        tracker.add_patch(0, 1, predictions[0, 1])


def test_fusion_tiles_may_be_shorter_than_wide():
    layout = Layout(1000, 2000, 64, 16, 960, 0, 24, 512, tile_height=240)
    assert layout.tile_shape == (240, 960)
    assert layout.tile_rows[:3] == [0, 240, 480] and layout.tile_rows[-1] == 1008 - 240
    assert layout.tile_cols[:2] == [0, 960]
    square = Layout(1000, 2000, 64, 16, 480, 0, 24, 512)
    assert square.tile_shape == (480, 480)
