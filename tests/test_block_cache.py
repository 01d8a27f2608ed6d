"""The cache of decoded input blocks: the same pixels as a direct read, each block decoded once."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from difffusr_cli.io.blocks import BlockCache
from difffusr_cli.io.geotiff import read_boundless


@pytest.fixture
def tiled(tmp_path):
    """A 300 × 200 tiled uint16 GeoTIFF with 64 × 64 blocks (partial blocks at the edges)."""
    path = tmp_path / "band.tif"
    data = np.random.default_rng(0).integers(1, 10000, (200, 300), dtype=np.uint16)
    with rasterio.open(
        path, "w", driver="GTiff", width=300, height=200, count=1, dtype="uint16",
        tiled=True, blockxsize=64, blockysize=64, compress="zstd",
    ) as dst:  # fmt: skip
        dst.write(data, 1)
    return str(path)


class CountingReads:
    """A dataset whose ``read`` calls are counted (the rest is the real dataset)."""

    def __init__(self, dataset):
        self._dataset, self.reads = dataset, 0

    def read(self, *args, **kwargs):
        self.reads += 1
        return self._dataset.read(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._dataset, name)


WINDOWS = [
    Window(0, 0, 300, 200),  # everything
    Window(-10, -7, 50, 40),  # over the top-left corner
    Window(250, 150, 80, 90),  # over the bottom-right corner, through partial blocks
    Window(63, 63, 3, 3),  # across four blocks
    Window(400, 10, 20, 20),  # outside
    Window(10, 120, 290, 70),
]


def test_windows_read_as_a_direct_read(tiled):
    cache = BlockCache()
    with rasterio.open(tiled) as ds:
        for window in WINDOWS * 2:  # the second time from the cache
            dn, inside = cache.read(ds, tiled, 1, window)
            expected_dn, expected_inside = read_boundless(ds, tiled, 1, window)
            assert dn.dtype == expected_dn.dtype
            np.testing.assert_array_equal(dn, expected_dn)
            np.testing.assert_array_equal(inside, expected_inside)


def test_each_block_is_decoded_once(tiled):
    cache = BlockCache()
    with rasterio.open(tiled) as real:
        ds = CountingReads(real)
        for top in range(0, 200, 20):  # overlapping strips down the raster, as the pipeline reads
            cache.read(ds, tiled, 1, Window(-6, top - 6, 312, 32))
        # one read per run of missing blocks: each of the 4 block rows is decoded in one read
        assert ds.reads == 4
        assert cache.bytes == 300 * 200 * 2


def test_the_cache_stays_within_its_budget_and_still_reads_right(tiled):
    cache = BlockCache(max_bytes=64 * 64 * 2 * 5)  # five blocks
    with rasterio.open(tiled) as ds:
        for window in WINDOWS:
            dn, _ = cache.read(ds, tiled, 1, window)
            np.testing.assert_array_equal(dn, read_boundless(ds, tiled, 1, window)[0])
            # a read may hold the blocks of one block row beyond the budget, never more
            assert cache.bytes <= max(cache.max_bytes, 5 * 64 * 64 * 2)
