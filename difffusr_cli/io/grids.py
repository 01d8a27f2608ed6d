"""Reference-grid derivation and grid-nesting checks (see docs/inputs.md, section Grids).

The reference grid is a 10 m band's grid (B02, B03, B04, B08); without one it is derived from a
coarser band (pixel size / ratio, size × ratio). Every band must share the reference origin (within
:data:`ORIGIN_TOLERANCE_PX` reference pixels) and CRS, and have a pixel size of ``ratio`` reference
pixels, where ``ratio`` is the band's native ratio (2 for 20 m, 6 for 60 m) or 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from affine import Affine

from difffusr_cli.bands import BY_NAME, GROUPS
from difffusr_cli.errors import InputError
from difffusr_cli.io.geotiff import RasterGrid

if TYPE_CHECKING:
    from difffusr_cli.io.sources import Discovered

#: Largest origin difference between a band and the reference grid, in reference pixels, still
#: taken as "the same origin" (GDAL's default warp error threshold, ``gdalwarp -et 0.125``).
ORIGIN_TOLERANCE_PX = 0.125
#: Relative tolerance on pixel sizes (ratio × reference pixel size).
PIXEL_SIZE_RTOL = 1e-6

#: Tie-break among 10 m bands proposing different reference grids (B04 first: the red band every
#: product has and the one the RGB super-resolution is anchored on).
_REFERENCE_PREFERENCE = ("B04", "B03", "B02", "B08")


def implied_reference(found: Discovered, name: str, grid: RasterGrid) -> RasterGrid:
    """The 10 m grid that band ``name``'s grid implies (its own grid for a 10 m band)."""
    ratio = 1 if found.kind == "geotiff" else BY_NAME[name].ratio
    if ratio == 1:
        return grid
    return RasterGrid(
        grid.crs,
        grid.transform @ Affine.scale(1.0 / ratio),
        grid.width * ratio,
        grid.height * ratio,
    )


def same_grid(a: RasterGrid, b: RasterGrid) -> bool:
    """Same CRS, pixel size, origin (within :data:`ORIGIN_TOLERANCE_PX`) and size (±1 px)."""
    ta, tb = a.transform, b.transform
    if a.crs != b.crs or abs(ta.a - tb.a) > PIXEL_SIZE_RTOL * abs(tb.a):
        return False
    if abs(ta.e - tb.e) > PIXEL_SIZE_RTOL * abs(tb.e):
        return False
    dx, dy = (ta.c - tb.c) / tb.a, (ta.f - tb.f) / tb.e
    return (
        abs(dx) <= ORIGIN_TOLERANCE_PX
        and abs(dy) <= ORIGIN_TOLERANCE_PX
        and abs(a.width - b.width) <= 1
        and abs(a.height - b.height) <= 1
    )


def reference_grid(found: Discovered, grids: dict[str, RasterGrid]) -> tuple[str, RasterGrid]:
    """The 10 m reference grid and the band it comes from.

    Candidates are the finest group found (the 10 m bands, else 20 m, else 60 m). The grid most
    candidates agree on wins, ties going to B04, B03, B02, B08 in that order, so one band shifted
    against the others is the one reported as not nesting.
    """
    for group in ("10m", "20m", "60m"):
        candidates = [n for n in GROUPS[group] if n in grids]
        if candidates:
            break
    implied = {n: implied_reference(found, n, grids[n]) for n in candidates}
    rank = {n: i for i, n in enumerate(_REFERENCE_PREFERENCE)}

    def score(name: str) -> tuple[int, int, int]:
        votes = sum(same_grid(implied[other], implied[name]) for other in candidates)
        return (-votes, rank.get(name, len(rank)), candidates.index(name))

    name = min(candidates, key=score)
    return name, implied[name]


def check_nesting(
    found: Discovered, name: str, grid: RasterGrid, ref_name: str, ref: RasterGrid
) -> int:
    """The band's ratio to the reference grid; ``InputError`` naming the band if not nested."""
    where = f"{found.path}: band {name} ({found.files[name][0]})"
    t, rt = grid.transform, ref.transform
    if grid.crs != ref.crs:
        raise InputError(
            f"{where} is in {grid.crs}, not in {ref.crs} like {ref_name}: grids do not nest"
        )
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        raise InputError(
            f"{where}: rotated or flipped grids are not supported (transform {tuple(t)[:6]})"
        )
    ratio_x, ratio_y = t.a / rt.a, t.e / rt.e
    allowed = sorted({1, BY_NAME[name].ratio})
    ratio = next(
        (
            r
            for r in allowed
            if abs(ratio_x - r) <= PIXEL_SIZE_RTOL * r and abs(ratio_y - r) <= PIXEL_SIZE_RTOL * r
        ),
        None,
    )
    if ratio is None:
        raise InputError(
            f"{where}: pixel size {t.a:g} × {-t.e:g} is not "
            f"{' or '.join(f'{r * rt.a:g}' for r in allowed)} (the {rt.a:g} reference grid of "
            f"{ref_name} × {'/'.join(map(str, allowed))}): grids do not nest"
        )
    dx, dy = (t.c - rt.c) / rt.a, (t.f - rt.f) / -rt.e
    if abs(dx) > ORIGIN_TOLERANCE_PX or abs(dy) > ORIGIN_TOLERANCE_PX:
        raise InputError(
            f"{where}: origin ({t.c:.3f}, {t.f:.3f}) differs from {ref_name}'s "
            f"({rt.c:.3f}, {rt.f:.3f}) "
            f"by ({dx:.2f}, {dy:.2f}) reference pixels ({t.c - rt.c:g} m, {t.f - rt.f:g} m): "
            "grids do not nest"
        )
    if abs(grid.width - ref.width / ratio) > 1 or abs(grid.height - ref.height / ratio) > 1:
        raise InputError(
            f"{where}: size {grid.width}×{grid.height} does not match "
            f"{ref.width}×{ref.height} / {ratio} "
            f"within one pixel: grids do not nest"
        )
    return ratio
