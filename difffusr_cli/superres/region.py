"""The region processed for a window: the window grown by context (see docs/superres.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rasterio.windows import Window

from difffusr_cli.bands import SCALE, WINDOW_ALIGN
from difffusr_cli.consistency import REACH
from difffusr_cli.superres.options import SuperresOptions
from difffusr_cli.tiling import round_up

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
