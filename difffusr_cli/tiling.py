"""Tiling of a processed region: the diffusion patch grid, the fusion tile grid, blocks, blending.

Everything here is bookkeeping on the **2.5 m output grid of the processed region** (row 0,
column 0 = the region's upper-left output pixel); no file or model is touched.

- **Patches** (diffusion SR): squares of ``patch`` pixels on one global grid with stride
  ``patch − overlap``; the last row and column are snapped to the region's edge. Patches are
  blended with :func:`blend_weights` (RGB = Σ w·patch / Σ w), and each patch's sampler noise
  comes from :func:`patch_noise`, seeded by (seed, patch row, patch column) only.
- **Fusion tiles**: squares of ``tile`` pixels on a second grid whose offsets are whole 60 m
  pixels (multiples of 24). Each tile is fused with ``halo`` pixels of context on every side,
  cropped back and blended with its neighbours over ``tile_overlap`` pixels like the patches
  (learned fusion nets pool statistics over their input, so hard tile edges could show).
- **Blocks**: strips of ``block_rows`` output rows of the *product*, the unit that is written,
  recorded for ``--resume`` and dropped from memory. The product is the region, or the part of
  it given by ``crop`` (the requested window inside a region grown by context).

Each grid is computed one window row at a time, on demand, into a rolling buffer
(:class:`RowStage`): a block pulls fusion-tile rows, which pull patch rows. No window depends on
the block size, the batch size or where a run was resumed, so neither do the pixels.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from difffusr_cli.bands import SCALE
from difffusr_cli.scratch import Scratch

#: Output pixels per 60 m pixel: fusion tiles and halos are multiples of it so that every group
#: (10, 20, 60 m) reads whole native pixels.
ALIGN = 24


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ≥ ``value``."""
    return -(-value // multiple) * multiple


def axis_starts(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets of windows of ``size`` pixels covering ``[0, length)`` with ``overlap``.

    Windows step by ``size − overlap``; the last one is snapped to end at ``length`` (so it
    overlaps its neighbour by more than ``overlap``). A length not larger than ``size`` gives one
    window at 0 (which then extends past the end).
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need 0 <= overlap < size, got size={size}, overlap={overlap}")
    if length <= size:
        return [0]
    stride = size - overlap
    count = math.ceil((length - size) / stride) + 1
    return [i * stride for i in range(count - 1)] + [length - size]


def blend_weights(shape: int | tuple[int, int], overlap: int | tuple[int, int]) -> np.ndarray:
    """Blending weights of one window: ``(h, w)`` float32 in (0, 1].

    A raised-cosine ramp over the ``overlap`` pixels of each side, 1 inside (``shape`` and
    ``overlap`` may be one number or one per axis). The ramp is sampled at pixel centres, so it
    never reaches 0 (border pixels of the region, which only one window covers, keep a finite
    weight), and the falling ramp of one window and the rising ramp of its neighbour at the
    nominal stride sum to exactly 1.
    """
    (h, w) = (shape, shape) if isinstance(shape, int) else shape
    (oy, ox) = (overlap, overlap) if isinstance(overlap, int) else overlap
    return np.outer(_ramp(h, oy), _ramp(w, ox)).astype(np.float32)


def _ramp(size: int, overlap: int) -> np.ndarray:
    ramp = np.ones(size, dtype=np.float64)
    if overlap > 0:
        t = (np.arange(overlap) + 0.5) / overlap
        rise = 0.5 - 0.5 * np.cos(np.pi * t)
        ramp[:overlap] = rise
        ramp[size - overlap :] = np.minimum(ramp[size - overlap :], rise[::-1])
    return ramp


def patch_seed(seed: int, row: int, col: int) -> int:
    """A 63-bit generator seed derived from (seed, patch row, patch column) only."""
    digest = hashlib.blake2b(f"difffusr-patch:{seed}:{row}:{col}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def patch_noise(seed: int, row: int, col: int, patch: int) -> torch.Tensor:
    """The sampler's starting noise for one patch: ``(3, patch, patch)`` float32 N(0, 1).

    Drawn on the CPU from a generator seeded by :func:`patch_seed`, so it is the same on every
    device and whatever batch, block or resume point the patch falls in.
    """
    generator = torch.Generator(device="cpu").manual_seed(patch_seed(seed, row, col))
    return torch.randn((3, patch, patch), generator=generator, dtype=torch.float32)


def fill_invalid(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace invalid pixels by the per-channel mean of the valid ones, so nodata cannot spread.

    Args:
        data: ``(C, h, w)`` float32.
        valid: ``(h, w)`` bool.

    Returns:
        A new ``(C, h, w)`` float32 array (0 where nothing is valid).
    """
    out = np.array(data, dtype=np.float32, copy=True)
    if valid.all():
        return out
    if not valid.any():
        out[:] = 0.0
        return out
    means = out[:, valid].mean(axis=1, dtype=np.float64).astype(np.float32)
    out[:, ~valid] = means[:, None]
    return out


@dataclass(frozen=True)
class Span:
    """A half-open interval ``[start, stop)`` of output pixels."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        """Number of pixels, ``stop − start``."""
        return self.stop - self.start


@dataclass(frozen=True)
class Layout:
    """The patch, fusion-tile and block grids of one processed region.

    All sizes are in output (2.5 m) pixels of the region.

    Attributes:
        height, width: region size; multiples of 4 (whole 10 m pixels).
        patch: diffusion patch side (multiple of 4).
        overlap: overlap of neighbouring patches (multiple of 4, < patch).
        tile: fusion tile side (multiple of 24); shrunk to the region when the region is smaller.
        tile_height: the tiles' height when it differs from ``tile`` (multiple of 24; 0: square).
        tile_overlap: overlap of neighbouring fusion tiles, blended like patches (multiple of 24).
        halo: fusion context read on every side of a tile and cropped away (multiple of 24).
        block_rows: output rows per block (the unit written and recorded for ``--resume``).
        crop: ``(top, left, height, width)`` of the product inside the region, or None for the
            whole region. Blocks are rows of the product (product row 0 = region row ``top``).
    """

    height: int
    width: int
    patch: int
    overlap: int
    tile: int
    tile_overlap: int
    halo: int
    block_rows: int
    crop: tuple[int, int, int, int] | None = None
    tile_height: int = 0

    def __post_init__(self) -> None:
        for name in ("height", "width", "patch", "overlap"):
            if getattr(self, name) % SCALE or getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} is not a multiple of {SCALE}")
        for name in ("tile", "tile_overlap", "halo", "tile_height"):
            if getattr(self, name) % ALIGN or getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} is not a multiple of {ALIGN}")
        if min(self.height, self.width, self.tile, self.block_rows) <= 0:
            raise ValueError("height, width, tile and block_rows must be positive")
        axis_starts(1, self.patch, self.overlap)  # validates patch/overlap
        axis_starts(1, self.tile, self.tile_overlap)
        axis_starts(1, self.tile_height or self.tile, self.tile_overlap)
        top, left, height, width = self.product
        if min(top, left) < 0 or top + height > self.height or left + width > self.width:
            raise ValueError(
                f"crop {self.crop} is not inside the {self.height} × {self.width} region"
            )

    @property
    def product(self) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of the product inside the region (output pixels)."""
        return self.crop or (0, 0, self.height, self.width)

    # -- diffusion patches ---------------------------------------------------------------------
    @property
    def patch_rows(self) -> list[int]:
        """Top row of each patch row."""
        return axis_starts(self.height, self.patch, self.overlap)

    @property
    def patch_cols(self) -> list[int]:
        """Left column of each patch column."""
        return axis_starts(self.width, self.patch, self.overlap)

    # -- fusion tiles --------------------------------------------------------------------------
    def _tile_axis(self, length: int, tile: int) -> tuple[int, int, list[int]]:
        """Tile size, overlap and starts along an axis of ``length`` pixels.

        Tiles start on whole 60 m pixels: they are laid out over the length rounded up to 24 (the
        last tile may end up to 20 pixels past a region edge that is not on the 60 m grid), and
        shrink, with their overlap, to fit a smaller region.
        """
        padded = round_up(length, ALIGN)
        size = min(tile, padded)
        overlap = min(self.tile_overlap, size - ALIGN)
        return size, overlap, axis_starts(padded, size, overlap)

    def _rows_axis(self) -> tuple[int, int, list[int]]:
        return self._tile_axis(self.height, self.tile_height or self.tile)

    def _cols_axis(self) -> tuple[int, int, list[int]]:
        return self._tile_axis(self.width, self.tile)

    @property
    def tile_shape(self) -> tuple[int, int]:
        """``(height, width)`` of every fusion tile, halo excluded."""
        return self._rows_axis()[0], self._cols_axis()[0]

    @property
    def tile_overlaps(self) -> tuple[int, int]:
        """The blended overlap of neighbouring tiles along rows and columns."""
        return self._rows_axis()[1], self._cols_axis()[1]

    @property
    def tile_rows(self) -> list[int]:
        """Top row of each fusion-tile row (halo excluded)."""
        return self._rows_axis()[2]

    @property
    def tile_cols(self) -> list[int]:
        """Left column of each fusion-tile column (halo excluded)."""
        return self._cols_axis()[2]

    # -- blocks --------------------------------------------------------------------------------
    @property
    def block_count(self) -> int:
        """Number of blocks of ``block_rows`` output rows covering the product."""
        return math.ceil(self.product[2] / self.block_rows)

    def block(self, index: int) -> Span:
        """Product rows of block ``index`` (add ``product[0]`` for the region's rows)."""
        start = index * self.block_rows
        return Span(start, min(start + self.block_rows, self.product[2]))


Contribution = tuple[int, np.ndarray, np.ndarray]
"""One computed window of a row: (left column, ``(C, h, w)`` data, ``(h, w)`` weights)."""


class RowStage:
    """A grid of windows computed row by row, on demand, into a rolling :class:`BlendBuffer`.

    ``compute(row_index, top)`` returns the :data:`Contribution` s of one row of windows (patches
    or fusion tiles) whose top edge is ``top``. Rows are computed in order and each exactly once,
    until :meth:`restart`; rows above the next window row's top edge are final.

    Args:
        starts: top edge of each window row (increasing).
        size: window height.
        height, width: of the blended image.
        channels: channels of the windows' data.
        compute: the function that computes one window row.
        capacity: rows to allocate up front (the most the caller will hold at once).
        blended: False when the windows agree wherever they overlap (see :class:`BlendBuffer`).
    """

    def __init__(
        self,
        starts: list[int],
        size: int,
        height: int,
        width: int,
        channels: int,
        compute: Callable[[int, int], Iterable[Contribution]],
        capacity: int = 0,
        blended: bool = True,
    ) -> None:
        self.starts = starts
        self.size = size
        self.height = height
        self.compute = compute
        self.buffer = BlendBuffer(width, channels, capacity, blended=blended)
        self.next_row = 0

    @property
    def final_until(self) -> int:
        """Rows above this one have received every contribution."""
        if self.next_row >= len(self.starts):
            return self.height
        return min(self.starts[self.next_row], self.height)

    def ensure(self, stop: int) -> None:
        """Compute window rows until every row above ``stop`` is final."""
        stop = min(stop, self.height)
        while self.final_until < stop:
            top = self.starts[self.next_row]
            for left, data, weights in self.compute(self.next_row, top):
                self.buffer.add(top, left, data, weights)
            self.next_row += 1

    def read(
        self, rows: Span, cols: Span | None = None, reuse: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Blended pixels (see :meth:`BlendBuffer.read`); computes what is missing first."""
        self.ensure(rows.stop)
        return self.buffer.read(rows, cols, reuse)

    def drop_before(self, row: int) -> None:
        """Rows above ``row`` will not be read again."""
        self.buffer.drop_before(row)

    def restart(self, row: int) -> None:
        """Forget everything and make rows from ``row`` down computable again (for resume).

        The next window row computed is the first one that reaches below ``row``; every later one
        contributes to those rows too, so they come out exactly as in an uninterrupted run.
        """
        self.next_row = next(
            (i for i, top in enumerate(self.starts) if top + self.size > row), len(self.starts)
        )
        self.buffer.reset(row)


class BlendBuffer:
    """A rolling, row-wise accumulator of weighted patches: Σ w·patch and Σ w.

    Holds full-width rows ``[first_row, first_row + rows)`` of the region only; memory is
    ``(channels + 1) × capacity × width`` float32, plus the largest read made with ``reuse``,
    independent of the region's height.

    With ``blended=False`` the windows are known to agree wherever they overlap (fusion tiles
    with a halo that covers the step's reach, and no blended overlap): each window is copied in,
    the last one written wins, and :meth:`read` returns the stored pixels without a division.
    That saves zeroing, weighting and dividing every pixel of a 13-channel stage.
    """

    def __init__(self, width: int, channels: int = 3, capacity: int = 0, blended: bool = True):
        self.width = width
        self.channels = channels
        self.blended = blended
        self.first_row = 0
        self.rows = 0
        self._num = np.zeros((channels, capacity, width), dtype=np.float32)
        # Unblended, the weights only mark what is covered: one byte per pixel, not four.
        self._den_dtype: type[np.generic] = np.float32 if blended else np.bool_
        self._den: np.ndarray[Any, Any] = np.zeros((capacity, width), dtype=self._den_dtype)
        self._out = Scratch()  # what read(reuse=True) returns

    def reset(self, first_row: int) -> None:
        """Forget everything; the buffer starts at ``first_row``."""
        self.first_row, self.rows = first_row, 0

    def _ensure(self, stop: int) -> None:
        """Make room for rows up to ``stop`` (zeros), growing the arrays only when needed.

        Unblended, only the weights are zeroed: every pixel a window covers is copied over.
        """
        need = stop - self.first_row
        if need <= self.rows:
            return
        if need > self._den.shape[0]:
            grown = max(need, self._den.shape[0] * 3 // 2)  # geometric: few copies
            num = np.zeros((self.channels, grown, self.width), dtype=np.float32)
            den = np.zeros((grown, self.width), dtype=self._den_dtype)
            num[:, : self.rows] = self._num[:, : self.rows]
            den[: self.rows] = self._den[: self.rows]
            self._num, self._den = num, den
        else:
            if self.blended:
                self._num[:, self.rows : need] = 0.0
            self._den[self.rows : need] = 0
        self.rows = need

    def add(self, y: int, x: int, patch: np.ndarray, weights: np.ndarray) -> None:
        """Accumulate ``patch`` ``(C, h, w)`` with ``weights`` ``(h, w)`` at region pixel (y, x).

        Parts above the buffer's first row or outside the region's width are ignored.
        Unblended, ``patch`` is copied in and the weights only mark the pixels covered.
        """
        h, w = weights.shape
        top = max(y, self.first_row)
        left, right = max(x, 0), min(x + w, self.width)
        if top >= y + h or left >= right:
            return
        self._ensure(y + h)
        src = np.s_[top - y : h, left - x : right - x]
        dst = np.s_[top - self.first_row : y + h - self.first_row, left:right]
        if self.blended:
            self._num[(slice(None),) + dst] += patch[(slice(None),) + src] * weights[src]
            self._den[dst] += weights[src]
        else:
            self._num[(slice(None),) + dst] = patch[(slice(None),) + src]
            self._den[dst] = True

    def read(
        self, rows: Span, cols: Span | None = None, reuse: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Blended pixels of ``rows`` × ``cols`` (default: the full width).

        Args:
            rows: the rows to read.
            cols: the columns to read (default: the full width).
            reuse: return a buffer of this object, reused by the next call (or, unblended, a
                view of the stored rows) instead of a new array: for callers that use the data
                before reading again or computing more rows (fresh memory costs a page fault
                per page, on every read).

        Returns:
            ``(data, covered)``: ``data`` ``(C, h, w)`` float32 Σ w·patch / Σ w (unblended: the
            last window written) and ``covered``
            an ``(h, w)`` bool coverage mask. Pixels no window covered (skipped nodata patches)
            are 0 and False.
        """
        if rows.start < self.first_row or rows.stop > self.first_row + self.rows:
            raise ValueError(
                f"rows {rows} not in buffer [{self.first_row}, {self.first_row + self.rows})"
            )
        cols = cols or Span(0, self.width)
        if cols.start < 0 or cols.stop > self.width:
            raise ValueError(f"columns {cols} not in [0, {self.width})")
        sl = np.s_[rows.start - self.first_row : rows.stop - self.first_row, cols.start : cols.stop]
        den = self._den[sl]
        covered = den.copy() if not self.blended else den > 0
        num = self._num[(slice(None),) + sl]
        everywhere = bool(covered.all())
        if not self.blended and everywhere and reuse:
            return num, covered
        out = self._out.array(num.shape) if reuse else np.empty(num.shape, dtype=np.float32)
        if not self.blended:
            np.copyto(out, num)
        elif everywhere:
            np.divide(num, den, out=out)
        else:
            out[:] = 0.0
            np.divide(num, den, out=out, where=covered)
        if not self.blended and not everywhere:
            out[:, ~covered] = 0.0
        return out, covered

    def drop_before(self, row: int) -> None:
        """Forget the rows above ``row`` (moves the kept rows to the front of the arrays)."""
        cut = row - self.first_row
        if cut <= 0:
            return
        if cut >= self.rows:
            self.reset(row)
            return
        keep = self.rows - cut
        for plane in (*self._num, self._den):
            _shift_up(plane, cut, self.rows)
        self.first_row += cut
        self.rows = keep


def _shift_up(plane: np.ndarray, cut: int, rows: int) -> None:
    """Move rows ``[cut, rows)`` of ``plane`` ``(capacity, width)`` to the front, in one pass.

    Chunks of at most ``cut`` rows never overlap their destination, so each is a plain copy
    (an overlapping assignment would go through a temporary copy of everything).
    """
    for start in range(0, rows - cut, cut):
        stop = min(start + cut, rows - cut)
        plane[start:stop] = plane[start + cut : stop + cut]
