"""Rendering one region, block by block.

The requested window, the region processed around it and its tiling are in
:mod:`difffusr_cli.superres.region` (:func:`resolve_region`, :func:`make_layout`, re-exported
here); :class:`Renderer` produces the product block by block.

The processed region is the window grown by context (real scene data, clipped to the scene), so
that the window's edges are never the edges of patches or fusion tiles; the product is the
window, cropped out of the region. Beyond the scene's own border, reads are reflected.

The processed region is covered by diffusion patches and by fusion tiles
(:mod:`difffusr_cli.tiling`). Output blocks (strips of rows) are produced top to bottom; each pulls
the fusion-tile rows it needs, which pull the patch rows they need, each computed once and blended
into rolling buffers. Memory therefore depends on the block, patch, tile and batch sizes and on
the region's width, never on its height.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from rasterio.windows import Window

from difffusr_cli.bands import GROUP_RATIO, GROUPS, GroupName
from difffusr_cli.errors import InputError
from difffusr_cli.scratch import ScratchRing
from difffusr_cli.superres.compute import fusion_tiles_agree
from difffusr_cli.superres.models import Models
from difffusr_cli.superres.patches import Counters, PatchRows, PatchSampling
from difffusr_cli.superres.reflectance import ConsistencyStage
from difffusr_cli.superres.region import make_layout, resolve_region
from difffusr_cli.superres.tiles import FusionTiles
from difffusr_cli.tiling import (
    ALIGN,
    Contribution,
    Layout,
    RowStage,
    Span,
    fill_invalid,
)

__all__ = ["WRITE_COLUMNS", "Counters", "Piece", "Renderer", "make_layout", "resolve_region"]

if TYPE_CHECKING:
    from difffusr_cli.io import Scene

#: Columns written at a time (a multiple of the product's 512-pixel internal tiles).
WRITE_COLUMNS = 4096
#: A written piece: window on the region's 2.5 m grid, (12, h, w) reflectance, (h, w) validity.
Piece = tuple[Window, np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Rendering one region


class Renderer:
    """Produces the 12-band 2.5 m product of one region, block by block.

    Args:
        scene: an opened :class:`~difffusr_cli.io.Scene` (``read_bands``/``read_group``).
        region: the processed window of the 10 m grid (``region.context_region``).
        layout: the tiling of the region (its ``product`` is the part written).
        models: the models (their ``method`` decides what B02–B04 are).
        steps, seed, batch_size: sampler settings.
        fusion_batch_size: fusion tiles per network call (0: ``batch_size``).
        sampling: ``joint`` (patches of a row on one canvas, see :mod:`.joint`) or
            ``independent``; a model without a joint sampler is always sampled independently
            (:attr:`sampling` says what is done).
        joint_margin: context pixels a jointly sampled patch sees beyond each edge.
        device, dtype: where and in what precision the networks run.
        on_patches: called with the number of patches finished (run or skipped).
        consistency: ``box`` (make every band consistent with the input, see
            :mod:`difffusr_cli.superres.reflectance`) or ``off``.
    """

    def __init__(
        self,
        scene: Scene,
        region: Window,
        layout: Layout,
        models: Models,
        *,
        steps: int,
        seed: int,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
        on_patches: Callable[[int], None] = lambda n: None,
        fusion_batch_size: int = 0,
        consistency: str = "box",
        sampling: str = "joint",
        joint_margin: int = 32,
    ) -> None:
        self.scene, self.region, self.layout, self.models = scene, region, layout, models
        self.steps, self.seed, self.batch_size = steps, seed, batch_size
        self.fusion_batch_size = fusion_batch_size or batch_size
        self._piece_out = ScratchRing(2)  # pieces' reflectance without --consistency
        self.device, self.dtype = device, dtype
        self.on_patches = on_patches
        self.counters = Counters()
        self.reflectance = (
            ConsistencyStage(scene, region, layout.height, layout.width, device)
            if consistency == "box"
            else None
        )
        self.patches = PatchRows(
            self._read,
            region,
            layout,
            models,
            PatchSampling(steps, seed, batch_size, device, dtype, sampling, joint_margin),
            self.counters,
            on_patches,
            restarts=[self.restart_patch_row(b) for b in range(layout.block_count)],
        )
        self.sampling, self.tracker = self.patches.sampling, self.patches.tracker
        self.tiles = FusionTiles(
            region,
            layout,
            models,
            self._read_group,
            self._guidance,
            self.fusion_batch_size,
            device,
            dtype,
        )
        th, p = layout.tile_shape[0], layout.patch
        # The RGB rows one fusion-tile row reads, plus the patch row reaching furthest below them.
        sr_rows = min(max(layout.height, p), th + 2 * layout.halo + p)
        self.sr = RowStage(
            layout.patch_rows, p, layout.height, layout.width, 3, self._patch_row, sr_rows
        )
        # 12 bands + validity (combined like the bands; every tile agrees on it, so it stays 0 or
        # 1); held from a block's first row to the bottom of the last tile row it needed.
        context = 2 * self.reflectance.context + 2 * ALIGN if self.reflectance else 0
        fused_rows = min(max(layout.height, th), layout.block_rows + th + context)
        # Tiles that agree (but for nodata fill values, which are per strip read) and have no
        # blended overlap are copied in, not weighted and divided; the others are averaged where
        # the last tile is snapped over its neighbour, even with --fusion-overlap 0.
        agree = fusion_tiles_agree(models)
        self.fused = RowStage(
            layout.tile_rows,
            th,
            layout.height,
            layout.width,
            13,
            self._tile_row,
            fused_rows,
            blended=not agree or layout.tile_overlaps != (0, 0),
        )

    # -- blocks ----------------------------------------------------------------------------
    def blocks(self, done: Iterable[int] = ()) -> Iterator[tuple[int, Iterator[Piece]]]:
        """Yield ``(block index, its pieces)`` for every block not in ``done``, top to bottom.

        The pieces (consume them before asking for the next block) are column chunks of the
        block: ``(window on the region's 2.5 m grid, (12, h, w) float32 reflectance, (h, w)
        bool validity)``, narrow enough that no full-width copy of the block is ever made. A
        piece's arrays stay untouched while the next piece is made (also across a block's end),
        and not longer: encode or copy them before asking for the piece after next.
        """
        done = set(done)
        restart = True  # the first block computed starts at the first row it needs
        count = self.layout.block_count
        for index in range(count):
            rows = self.layout.block(index)
            if index in done:
                restart = True
                continue
            needed = self._needed(rows)
            if restart:
                self._restart(needed.start)
                restart = False
            self.fused.ensure(needed.stop)
            yield index, self._pieces(rows)
            if index + 1 < count:
                self.fused.drop_before(self._needed(self.layout.block(index + 1)).start)

    def _needed(self, rows: Span) -> Span:
        """The fused rows of the region that the product rows ``rows`` are made from."""
        top = self.layout.product[0]
        inside = Span(rows.start + top, rows.stop + top)
        return self.reflectance.span(inside) if self.reflectance else inside

    def _pieces(self, rows: Span) -> Iterator[Piece]:
        top, left, _, width = self.layout.product
        for start in range(0, width, WRITE_COLUMNS):
            cols = Span(start, min(start + WRITE_COLUMNS, width))
            region_rows = Span(rows.start + top, rows.stop + top)
            region_cols = Span(cols.start + left, cols.stop + left)
            if self.reflectance:
                data, valid = self.reflectance.read(self.fused, region_rows, region_cols)
            else:
                fused, covered = self.fused.read(region_rows, region_cols, reuse=True)
                # A view of the stage, or its one reused buffer: copied into buffers that stay
                # untouched while the next piece is made (and the next block shifts the stage).
                data = self._piece_out.array((12, rows.size, cols.size))
                np.copyto(data, fused[:12])
                valid = covered & (fused[12] > 0.5)
            yield Window(cols.start, rows.start, cols.size, rows.size), data, valid

    def _restart(self, row: int) -> None:
        """Start computing again at output row ``row`` (after blocks skipped on resume)."""
        self.fused.restart(row)
        self.sr.restart(self._sr_rows_needed_from(row))

    def _sr_rows_needed_from(self, row: int) -> int:
        """The first RGB row the fusion tiles reaching below output row ``row`` read."""
        tops, tile_height = self.layout.tile_rows, self.layout.tile_shape[0]
        first = next((top for top in tops if top + tile_height > row), row)
        return max(first - self.layout.halo, 0)

    def restart_patch_row(self, block: int) -> int:
        """The first patch row a run restarted at block ``block`` computes.

        Every run restarts at its first block (:meth:`blocks`): block 0 of a window with
        context begins below the context rows it does not need.
        """
        first = self._sr_rows_needed_from(self._needed(self.layout.block(block)).start)
        tops, patch = self.layout.patch_rows, self.layout.patch
        return next((i for i, top in enumerate(tops) if top + patch > first), len(tops))

    def patches_to_run(self, done: Iterable[int]) -> int:
        """How many patches a run that skips the ``done`` blocks goes through (progress total)."""
        done = set(done)
        todo = [i for i in range(self.layout.block_count) if i not in done]
        if not todo:
            return 0
        layout = self.layout
        first_row = self._needed(layout.block(todo[0])).start
        last_row = self._needed(layout.block(todo[-1])).stop
        tile_height = layout.tile_shape[0]
        tiles = [t for t in layout.tile_rows if t + tile_height > first_row and t < last_row]
        if not tiles:
            return 0
        first = self._sr_rows_needed_from(first_row)
        last = min(tiles[-1] + tile_height + layout.halo, layout.height)
        rows = [top for top in layout.patch_rows if first < top + layout.patch and top < last]
        return len(rows) * len(layout.patch_cols)

    # -- reading ---------------------------------------------------------------------------
    def _read(self, names: Sequence[str], window: Window) -> tuple[np.ndarray, np.ndarray, int]:
        """Bands on their delivered grid for a window of the 10 m grid, ready for a network.

        Nodata inside the scene is filled with the mean of the valid pixels read (so it cannot
        spread); outside the scene the data is reflected (like the RGB guidance). Returns the
        ``(C, h, w)`` data, the ``(h, w)`` validity (False outside the scene) and the grid's ratio
        to the 10 m grid. ``window`` must start on whole 60 m pixels.
        """
        inside = self._inside(window)
        block = self.scene.read_bands(names, inside)
        data, valid = self._pad_outside(block.data, block.valid, window, inside, block.ratio, names)
        return data, valid, block.ratio

    def _inside(self, window: Window) -> Window:
        """The part of a 10 m window that lies inside the scene."""
        scene = self.scene
        col0, row0 = max(int(window.col_off), 0), max(int(window.row_off), 0)
        col1 = min(int(window.col_off + window.width), scene.width)
        row1 = min(int(window.row_off + window.height), scene.height)
        return Window(col0, row0, col1 - col0, row1 - row0)

    def _pad_outside(
        self,
        data: np.ndarray,
        valid: np.ndarray,
        window: Window,
        inside: Window,
        ratio: int,
        names: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fill nodata of a read of ``inside`` and reflect it out to all of ``window``.

        ``data`` ``(C, h', w')`` reflectance and ``valid`` ``(h', w')`` are on a grid ``ratio``
        times coarser than the 10 m grid; the result covers ``window`` on that grid, invalid
        outside the scene.
        """
        h, w = int(window.height) // ratio, int(window.width) // ratio
        top = (int(inside.row_off) - int(window.row_off)) // ratio
        left = (int(inside.col_off) - int(window.col_off)) // ratio
        bottom, right = h - top - valid.shape[0], w - left - valid.shape[1]
        if min(bottom, right) < 0:
            raise InputError(
                f"{self.scene.path}: the bands {', '.join(names)} do not nest in the 10 m grid"
            )
        filled = np.pad(
            fill_invalid(data, valid), ((0, 0), (top, bottom), (left, right)), mode="symmetric"
        )
        valid = np.pad(valid, ((top, bottom), (left, right)), constant_values=False)
        return filled, valid

    # -- diffusion patches -----------------------------------------------------------------
    def _patch_row(self, index: int, top: int) -> Iterator[Contribution]:
        """Super-resolve one row of patches (:meth:`PatchRows.row`)."""
        return self.patches.row(index, top)

    # -- fusion tiles ----------------------------------------------------------------------
    def _tile_row(self, index: int, top: int) -> Iterator[Contribution]:
        """Fuse one row of tiles (:meth:`FusionTiles.row`), then forget the RGB rows it read."""
        yield from self.tiles.row(index, top)
        layout = self.layout
        if index + 1 < len(layout.tile_rows):
            self.sr.drop_before(layout.tile_rows[index + 1] - layout.halo)

    def _guidance(self, rows: Span, cols: Span) -> np.ndarray:
        """The blended SR RGB of ``rows`` × ``cols`` (region pixels).

        Returns ``(3, h, w)`` reflectance, nodata filled, reflected where the span reaches outside
        the region (nothing was super-resolved there; that is the scene's border, or at least
        the context away from the product).
        """
        height, width = self.layout.height, self.layout.width
        inside_rows = Span(max(rows.start, 0), min(rows.stop, height))
        inside_cols = Span(max(cols.start, 0), min(cols.stop, width))
        rgb, covered = self.sr.read(inside_rows, inside_cols, reuse=True)
        pad = (
            (0, 0),
            (inside_rows.start - rows.start, rows.stop - inside_rows.stop),
            (inside_cols.start - cols.start, cols.stop - inside_cols.stop),
        )
        filled = fill_invalid(rgb, covered)  # a copy: ``rgb`` is the stage's reused buffer
        if not any(p for axis in pad for p in axis):
            return filled
        return np.pad(filled, pad, mode="symmetric")

    def _read_group(self, group: GroupName, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """A group on its native grid: ``(C, h/r, w/r)`` filled reflectance and validity.

        The read is :meth:`Scene.read_native` (stacked 10 m deliveries are area-averaged back
        to native pixels there); outside the scene the data is reflected.
        """
        inside = self._inside(window)
        data, valid = self.scene.read_native(group, inside)
        return self._pad_outside(data, valid, window, inside, GROUP_RATIO[group], GROUPS[group])
