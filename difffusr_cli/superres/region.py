"""The region processed: the window asked for, grown by context (docs/superres.md); its tiling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import rasterio.windows
from rasterio.windows import Window

from difffusr_cli.bands import SCALE, WINDOW_ALIGN
from difffusr_cli.consistency import REACH
from difffusr_cli.errors import InputError
from difffusr_cli.superres.options import SuperresOptions
from difffusr_cli.tiling import ALIGN, Layout, round_up

if TYPE_CHECKING:
    from difffusr_cli.io import Scene


def context_region(
    scene: Scene, window: Window, options: SuperresOptions, fusion_halo: int
) -> Window:
    """The region processed for ``window``: grown by context on every side, clipped to the scene.

    The context (10 m pixels, rounded up to whole 60 m pixels) is the largest of half a diffusion
    patch, the fusion halo and the reach of the consistency step, so that no pixel of the window
    sees a patch edge, a fusion tile's made-up surroundings or the consistency step's edge where
    the scene has data. The whole scene gets no context (its border is reflected instead).
    ``options`` must have its patch size resolved (``superres.compute.resolve_compute``).
    """
    if options.patch_size is None:
        raise ValueError("context_region needs the resolved patch size (superres.compute)")
    grow = round_up(
        max(-(-options.patch_size // 2 // SCALE), fusion_halo, REACH * WINDOW_ALIGN), WINDOW_ALIGN
    )
    col0, row0 = max(int(window.col_off) - grow, 0), max(int(window.row_off) - grow, 0)
    col1 = min(int(window.col_off + window.width) + grow, int(scene.width))
    row1 = min(int(window.row_off + window.height) + grow, int(scene.height))
    return Window(col0, row0, col1 - col0, row1 - row0)


def resolve_region(
    scene: Scene, window: Sequence[int] | None, bbox: Sequence[float] | None
) -> Window:
    """The part of the scene to process, on the 10 m grid, widened to whole 60 m pixels.

    ``window`` is ``(col, row, width, height)`` in 10 m pixels, ``bbox`` ``(xmin, ymin, xmax,
    ymax)`` in the scene's CRS (pixels it touches are included). The result is widened outward to
    multiples of 6 pixels from the scene origin (so every band group reads whole native pixels)
    and clipped to the scene.

    Raises:
        InputError: the window or bbox does not overlap the scene.
    """
    width, height = int(scene.width), int(scene.height)
    if window is not None:
        col0, row0 = int(window[0]), int(window[1])
        col1, row1 = col0 + int(window[2]), row0 + int(window[3])
        what = f"--window {' '.join(str(int(v)) for v in window)}"
    elif bbox is not None:
        exact = rasterio.windows.from_bounds(*bbox, transform=scene.transform)
        # Tolerate float noise so a bbox on pixel edges does not grow by a pixel.
        col0 = int(np.floor(exact.col_off + 1e-6))
        row0 = int(np.floor(exact.row_off + 1e-6))
        col1 = int(np.ceil(exact.col_off + exact.width - 1e-6))
        row1 = int(np.ceil(exact.row_off + exact.height - 1e-6))
        what = f"--bbox {' '.join(f'{v:g}' for v in bbox)}"
    else:
        col0, row0, col1, row1 = 0, 0, width, height
        what = "the scene"
    col0, row0 = (
        max(col0 // WINDOW_ALIGN * WINDOW_ALIGN, 0),
        max(row0 // WINDOW_ALIGN * WINDOW_ALIGN, 0),
    )
    col1, row1 = min(round_up(col1, WINDOW_ALIGN), width), min(round_up(row1, WINDOW_ALIGN), height)
    if col1 <= col0 or row1 <= row0:
        raise InputError(
            f"{what} does not overlap {scene.path} ({width} × {height} pixels at 10 m)"
        )
    return Window(col0, row0, col1 - col0, row1 - row0)


def make_layout(
    region: Window, options: SuperresOptions, fusion_halo: int, window: Window | None = None
) -> Layout:
    """The tiling of ``region`` for ``options``.

    Args:
        region: the processed window of the 10 m grid (``region.context_region``).
        options: the run's options (patch, overlap, tile and block sizes).
        fusion_halo: how far the fusion step reaches, in 10 m pixels.
        window: the product, a window of the 10 m grid inside ``region`` (default: all of it).

    Returns:
        The :class:`~difffusr_cli.tiling.Layout` on the region's 2.5 m grid.
    """
    crop = None
    if window is not None and window != region:
        crop = (
            (int(window.row_off) - int(region.row_off)) * SCALE,
            (int(window.col_off) - int(region.col_off)) * SCALE,
            int(window.height) * SCALE,
            int(window.width) * SCALE,
        )
    return Layout(
        height=int(region.height) * SCALE,
        width=int(region.width) * SCALE,
        patch=options.patch_size or 0,
        overlap=options.overlap,
        tile=options.fusion_tile or 0,  # resolved (superres.compute.resolve_compute)
        tile_overlap=options.fusion_overlap or 0,
        tile_height=options.fusion_tile_rows or 0,
        halo=round_up(fusion_halo * SCALE, ALIGN),
        block_rows=options.block_rows,
        crop=crop,
    )
