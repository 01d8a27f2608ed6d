"""Decoded internal blocks of the input rasters, kept for the reads that follow.

``superres`` reads each band many times over: every fusion-tile row reads a strip of the scene,
and the consistency step reads the same rows again, in column pieces. A tiled GeoTIFF or JPEG 2000
decodes whole internal blocks (512 × 512, 1024 × 1024 …) for any window that touches them, and
GDAL's block cache does not keep them for a multi-block read: a band's block was decoded 3–4
times over, and that was a tenth of a run with free networks (far more for JPEG 2000).
:class:`BlockCache` decodes each block once and serves the windows from it.

The cache is bounded in bytes and forgets the block used longest ago: the pipeline's reads move
down the scene, so what it still needs is what it used last.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from difffusr_cli.io.geotiff import boundless_frame, cannot_read, read_boundless

#: Bytes of decoded blocks kept per reading thread, at least (a full-width Sentinel-2 scene
#: needs about 160 MiB for two rows of 512-pixel blocks of every band; the budget grows to two
#: block rows of every band read).
CACHE_BYTES = 192 * 2**20
#: Blocks of fewer rows than this (strips) or more bytes than this are read directly.
MIN_BLOCK_ROWS = 64
MAX_BLOCK_BYTES = 16 * 2**20

_Key = tuple[str, int, int, int]  # path, band index, block row, block column


class BlockCache:
    """Serves windows of raster bands from decoded whole blocks, each decoded once.

    Args:
        max_bytes: the most decoded bytes kept (least recently used blocks are dropped).
    """

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._blocks: OrderedDict[_Key, np.ndarray] = OrderedDict()
        self._row_bytes: dict[tuple[str, int], int] = {}  # a full block row of each band read

    def _budget_for(self, path: str, bidx: int, dataset: DatasetReader) -> None:
        """Raise the budget to two full block rows of every band read so far.

        The pipeline reads the bands in turn, over one or two block rows at a time: a smaller
        budget would drop each block before its band is read again (1024-row blocks across a
        full-width scene need about 340 MB).
        """
        if (path, bidx) in self._row_bytes:
            return
        bh, bw = dataset.block_shapes[bidx - 1]
        itemsize = np.dtype(dataset.dtypes[bidx - 1]).itemsize
        self._row_bytes[(path, bidx)] = bh * bw * itemsize * -(-dataset.width // bw)
        self.max_bytes = max(self.max_bytes, 2 * sum(self._row_bytes.values()))

    def read(
        self, dataset: DatasetReader, path: str, bidx: int, window: Window
    ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`~difffusr_cli.io.geotiff.read_boundless`, from cached blocks where it can.

        Returns ``(dn, inside)``: ``dn`` ``(h, w)`` in the file's dtype (0 outside the raster),
        ``inside`` ``(h, w)`` bool.
        """
        bh, bw = dataset.block_shapes[bidx - 1]
        itemsize = np.dtype(dataset.dtypes[bidx - 1]).itemsize
        if bh < MIN_BLOCK_ROWS or bh * bw * itemsize > MAX_BLOCK_BYTES:
            return read_boundless(dataset, path, bidx, window)
        dn, inside, part = boundless_frame(dataset, bidx, window)
        if part is None:
            return dn, inside
        self._budget_for(path, bidx, dataset)
        c0, r0 = int(window.col_off), int(window.row_off)
        ic0, ir0 = int(part.col_off), int(part.row_off)
        ic1, ir1 = ic0 + int(part.width), ir0 + int(part.height)
        for row in range(ir0 // bh, (ir1 - 1) // bh + 1):
            cols = range(ic0 // bw, (ic1 - 1) // bw + 1)
            self._decode_missing(dataset, path, bidx, row, cols)
            for col in cols:
                block = self._blocks[(path, bidx, row, col)]
                # The block's part inside the raster window, in raster pixels.
                y0, y1 = max(row * bh, ir0), min(row * bh + block.shape[0], ir1)
                x0, x1 = max(col * bw, ic0), min(col * bw + block.shape[1], ic1)
                dn[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0] = block[
                    y0 - row * bh : y1 - row * bh, x0 - col * bw : x1 - col * bw
                ]
        return dn, inside

    def _decode_missing(
        self, dataset: DatasetReader, path: str, bidx: int, row: int, cols: range
    ) -> None:
        """Make the blocks of block row ``row`` in ``cols`` cached (one read per run of missing).

        Then drop the least recently used blocks beyond the budget, never those of ``cols``.
        """
        bh, bw = dataset.block_shapes[bidx - 1]
        missing = []
        for col in cols:
            if (path, bidx, row, col) in self._blocks:
                self._blocks.move_to_end((path, bidx, row, col))  # used now: kept longest
            else:
                missing.append(col)
        runs: list[list[int]] = []
        for col in missing:
            if runs and runs[-1][-1] == col - 1:
                runs[-1].append(col)
            else:
                runs.append([col])
        top, height = row * bh, min(bh, dataset.height - row * bh)
        for run in runs:
            left = run[0] * bw
            width = min((run[-1] + 1) * bw, dataset.width) - left
            try:
                strip = dataset.read(bidx, window=Window(left, top, width, height))
            except (RasterioError, OSError) as exc:
                raise cannot_read(path, exc, decoding=True) from None
            for col in run:
                block = strip[:, col * bw - left : (col + 1) * bw - left].copy()
                self._blocks[(path, bidx, row, col)] = block
                self.bytes += block.nbytes
        while self.bytes > self.max_bytes and len(self._blocks) > len(cols):
            _, dropped = self._blocks.popitem(last=False)
            self.bytes -= dropped.nbytes
