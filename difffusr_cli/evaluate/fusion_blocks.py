"""Blocks of an evaluated region and the array helpers shared by both ``eval fusion`` modes.

A region of the source scene's 10 m grid is covered by square *cores* (the pixels a block
scores), each read and reconstructed with a *halo* of context (:func:`plan_blocks`). Grids
coarser than 10 m are handled as whole cells: :func:`area_mean` averages data onto them,
:func:`all_in_cell` and :func:`repeat_cells` move validity masks between them, and
:func:`clean_cells` tells which degraded cells were computed from valid pixels only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from torch import Tensor

from difffusr_cli.errors import InputError


@dataclass(frozen=True)
class Block:
    """One block of the evaluated region, on the 10 m grid of the source scene.

    Attributes:
        core: the pixels this block scores.
        expanded: ``core`` plus the halo, clipped to the region (what is read and reconstructed).
    """

    core: Window
    expanded: Window

    def core_mask(self, ratio: int) -> Tensor:
        """``(H/ratio, W/ratio)`` bool on a grid ``ratio`` times coarser than 10 m: the core."""
        height, width = int(self.expanded.height) // ratio, int(self.expanded.width) // ratio
        mask = torch.zeros((height, width), dtype=torch.bool)
        top = (int(self.core.row_off) - int(self.expanded.row_off)) // ratio
        left = (int(self.core.col_off) - int(self.expanded.col_off)) // ratio
        mask[
            top : top + int(self.core.height) // ratio, left : left + int(self.core.width) // ratio
        ] = True
        return mask


def plan_blocks(region: Window, block: int, halo: int) -> list[Block]:
    """Cover ``region`` with square cores of ``block`` pixels (the last row/column shorter).

    Each core is widened by ``halo`` and clipped to the region. All values in 10 m pixels.
    """
    col0, row0 = int(region.col_off), int(region.row_off)
    width, height = int(region.width), int(region.height)
    blocks = []
    for top in range(0, height, block):
        for left in range(0, width, block):
            core_h, core_w = min(block, height - top), min(block, width - left)
            e_top, e_left = max(top - halo, 0), max(left - halo, 0)
            e_bottom, e_right = min(top + core_h + halo, height), min(left + core_w + halo, width)
            blocks.append(
                Block(
                    core=Window(col0 + left, row0 + top, core_w, core_h),
                    expanded=Window(
                        col0 + e_left, row0 + e_top, e_right - e_left, e_bottom - e_top
                    ),
                )
            )
    return blocks


def centre_block(blocks: Sequence[Block], region: Window) -> int:
    """Index of the block whose core holds the region's centre (the quicklook block)."""
    col = int(region.col_off) + int(region.width) // 2
    row = int(region.row_off) + int(region.height) // 2
    for i, b in enumerate(blocks):
        c = b.core
        if c.col_off <= col < c.col_off + c.width and c.row_off <= row < c.row_off + c.height:
            return i
    return 0


def shrink_to(region: Window, multiple: int, what: str) -> Window:
    """``region`` with its width and height rounded down to multiples of ``multiple``."""
    width = int(region.width) // multiple * multiple
    height = int(region.height) // multiple * multiple
    if width == 0 or height == 0:
        raise InputError(
            f"{what}: {int(region.width)} × {int(region.height)} pixels at 10 m is too small; "
            f"eval fusion needs at least {multiple} × {multiple}"
        )
    return Window(region.col_off, region.row_off, width, height)


def area_mean(x: Tensor, factor: int) -> Tensor:
    """Area average over ``factor × factor`` pixels: ``(C, H, W)`` → ``(C, H/f, W/f)`` float64.

    In float64 so that a cell of identical values averages to exactly that value (a product
    that repeats its source's pixels scores as a perfect reconstruction).
    """
    x = x.to(torch.float64)
    return x if factor == 1 else F.avg_pool2d(x[None], factor)[0]


def all_in_cell(mask: Tensor, factor: int) -> Tensor:
    """``(H, W)`` bool → ``(H/f, W/f)``: True where every pixel of the cell is True."""
    if factor == 1:
        return mask
    invalid = (~mask).to(torch.float32)[None, None]
    return F.max_pool2d(invalid, factor)[0, 0] == 0


def repeat_cells(mask: Tensor, factor: int) -> Tensor:
    """``(h, w)`` → ``(h·f, w·f)``: each cell repeated over its ``factor × factor`` pixels."""
    return mask if factor == 1 else mask.repeat_interleave(factor, 0).repeat_interleave(factor, 1)


def clean_cells(valid: Tensor, factor: int, reach: int) -> Tensor:
    """Degraded cells whose bilinear neighbourhood was computed from valid pixels only.

    ``(H, W)`` bool → ``(H/f, W/f)`` bool.

    A cell is computed cleanly when no invalid pixel lies within ``reach`` pixels (the blur's
    radius) of it; the bilinear upsampling of a cell also reads its 8 neighbours, so a cell counts
    as clean when it and its neighbours are. The array border is not invalid (the blur reflects
    there, as in training).
    """
    invalid = (~valid).to(torch.float32)[None, None]
    if reach > 0:
        invalid = F.max_pool2d(invalid, 2 * reach + 1, stride=1, padding=reach)
    invalid = F.max_pool2d(invalid, factor)
    invalid = F.max_pool2d(invalid, 3, stride=1, padding=1)
    return invalid[0, 0] == 0


def crop_core(x: Tensor, block: Block, factor: int) -> Tensor:
    """``(C, H, W)`` on the expanded block (``factor`` pixels per 10 m pixel) → the core."""
    top = (int(block.core.row_off) - int(block.expanded.row_off)) * factor
    left = (int(block.core.col_off) - int(block.expanded.col_off)) * factor
    return x[
        :, top : top + int(block.core.height) * factor, left : left + int(block.core.width) * factor
    ]


def to_device(x: np.ndarray | Tensor, device: torch.device) -> Tensor:
    """A numpy array or tensor on ``device``."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    return t.to(device)
