"""The records a product is described by.

Where each band comes from (:class:`BandSource`), a windowed read (:class:`Block`), and what a
format reader found before any band file is opened (:class:`Discovered`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine
from rasterio.windows import Window

from difffusr_cli.bands import BY_NAME

#: The input formats :func:`~difffusr_cli.io.scene.open_scene` recognises.
SourceKind = Literal["safe", "cog-dir", "stac", "geotiff"]


@dataclass(frozen=True)
class BandSource:
    """Where one band comes from.

    Attributes:
        name: band name (``"B8A"``).
        path: GDAL path of its file, or None when the band was not found.
        found: whether the band exists in the product.
        width, height: native raster size in pixels (None when not found).
        transform: native pixel → CRS transform (None when not found).
        ratio: native pixel size over the reference grid's (1, 2 or 6; None when not found).
        bidx: 1-based band index inside the file (multi-band GeoTIFF), else 1.
        dtype: the file's data type (``"uint16"``).
        nodata: the file's declared nodata value, if any (DN 0 is nodata regardless).
    """

    name: str
    path: str | None
    found: bool
    width: int | None = None
    height: int | None = None
    transform: Affine | None = None
    ratio: int | None = None
    bidx: int = 1
    dtype: str | None = None
    nodata: float | None = None

    @property
    def gsd(self) -> float:
        """The band's nominal native ground sampling distance in metres."""
        return BY_NAME[self.name].gsd


@dataclass(frozen=True, eq=False)
class Block:
    """A windowed read of bands sharing one native grid.

    Attributes:
        data: ``(C, h, w)`` float32 reflectance, 0 where ``valid`` is False.
        valid: ``(h, w)`` bool, False where any band is nodata (DN 0) or the pixel lies outside.
        window: the native-grid window covered (may extend outside the raster).
        bands: band names, in the order of ``data``'s channels.
        ratio: native pixel size over the reference grid's (1, 2 or 6).
    """

    data: np.ndarray
    valid: np.ndarray
    window: Window
    bands: tuple[str, ...]
    ratio: int


@dataclass
class Discovered:
    """What a format reader found, before the band files are opened."""

    kind: SourceKind
    path: Path
    files: dict[str, tuple[str, int]]  # band → (GDAL path, 1-based band index)
    product_id: str
    tile: str | None = None
    datetime: str | None = None
    processing_baseline: str | None = None
    processing_level: str | None = None
    declared: dict[str, tuple[float, float]] = field(default_factory=dict)
    declared_source: str = ""
    scl_path: str | None = None
