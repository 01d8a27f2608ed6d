"""Raster file helpers shared by every reader: open, probe, boundless windowed reads, band names.

Nothing here knows about products; :mod:`difffusr_cli.io.scene` assembles products from these
pieces. Every GDAL failure is turned into an :class:`~difffusr_cli.errors.InputError` that names
the file ("cannot read PATH: reason").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from difffusr_cli.bands import BAND_NAMES, BANDS
from difffusr_cli.errors import InputError

#: Raster file name suffixes the folder reader considers (lower case).
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")

# "B2", "b02", "B8A", "B8a" → canonical band names.
_BAND_ID = re.compile(r"^B(\d{1,2}|8A)$", re.IGNORECASE)
_EARTH_SEARCH = {b.earth_search_asset: b.name for b in BANDS}


def band_from_name(text: str | None) -> str | None:
    """The L2A band a short name denotes, or None.

    Accepts ESA ids in any case and with or without the leading zero (``"B2"``, ``"b02"``,
    ``"B8a"``) and Element 84 Earth Search asset names (``"blue"``, ``"nir08"``, ``"swir16"``).
    B10 (cirrus, absent from L2A) and anything else give None.
    """
    if not text:
        return None
    key = text.strip()
    match = _BAND_ID.match(key)
    if match:
        digits = match.group(1).upper()
        name = "B8A" if digits == "8A" else f"B{int(digits):02d}"
        return name if name in BAND_NAMES else None
    return _EARTH_SEARCH.get(key.lower())


def cannot_read(path: str, exc: BaseException | str, *, decoding: bool = False) -> InputError:
    """The one-line error for a file GDAL cannot open (or, with ``decoding``, decode)."""
    # rasterio's read errors say "See previous exception"; GDAL's own message is the cause.
    cause = exc.__cause__ if isinstance(exc, BaseException) and exc.__cause__ is not None else exc
    text = str(cause).strip()
    reason = text.splitlines()[0] if text else type(cause).__name__
    if decoding:
        reason = f"decoding failed, the file may be truncated or corrupt ({reason})"
    return InputError(f"cannot read {path}: {reason}")


def open_raster(path: str) -> DatasetReader:
    """Open a raster for reading; any GDAL failure becomes ``InputError("cannot read …")``."""
    try:
        return rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise cannot_read(path, exc) from None


@dataclass(frozen=True)
class RasterGrid:
    """The pixel grid of one raster file.

    Attributes:
        crs: coordinate reference system (None when the file has none).
        transform: pixel → CRS affine transform (upper-left corner convention).
        width, height: raster size in pixels.
    """

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @property
    def pixel_size(self) -> float:
        """Pixel width in CRS units."""
        return abs(self.transform.a)


def grid_of(dataset: DatasetReader) -> RasterGrid:
    """The grid of an open dataset."""
    return RasterGrid(dataset.crs, dataset.transform, dataset.width, dataset.height)


def probe(dataset: DatasetReader, path: str, bidx: int = 1) -> None:
    """Decode the last pixel of band ``bidx`` so a truncated file fails now, not mid-run.

    Only one pixel (one JPEG 2000 tile or GeoTIFF block) is decoded. Raises ``InputError``.
    """
    window = Window(dataset.width - 1, dataset.height - 1, 1, 1)
    try:
        dataset.read(bidx, window=window)
    except (RasterioError, OSError) as exc:
        raise cannot_read(path, exc, decoding=True) from None


def file_scale_offset(
    dataset: DatasetReader, bidx: int, path: str | None = None
) -> tuple[float, float] | None:
    """The band's own ``scale``/``offset`` metadata (reflectance = DN·scale + offset), or None.

    GDAL reports scale 1 and offset 0 when a file declares nothing; a DN → reflectance
    convention of exactly (1, 0) is indistinguishable from "not set", so it counts as absent.

    Raises:
        InputError: the scale or offset is NaN or infinite, or the scale is not positive.
    """
    scale = dataset.scales[bidx - 1]
    offset = dataset.offsets[bidx - 1]
    if scale is None or offset is None or (scale == 1.0 and offset == 0.0):
        return None
    where = f"{path or dataset.name} band {bidx}"
    if not (math.isfinite(scale) and math.isfinite(offset)):
        raise InputError(
            f"{where}: scale/offset metadata {scale:g}/{offset:g} is not finite; "
            "fix the file's tags or pass --scale/--offset"
        )
    if scale <= 0:
        raise InputError(f"{where}: scale metadata is {scale:g}; expected reflectance per DN > 0")
    return float(scale), float(offset)


def is_floating(dtype: str | None) -> bool:
    """True for a floating-point raster data type (``"float32"``, ``"float64"``)."""
    return dtype is not None and np.issubdtype(np.dtype(dtype), np.floating)


def native_window(window: Window, ratio: int, halo: int = 0) -> Window:
    """The window on a grid ``ratio`` times coarser that covers ``window``, plus ``halo`` pixels.

    ``window`` is on the fine (10 m) grid and must have whole-pixel offsets and sizes; the result is
    expanded outward to whole coarse pixels and may extend outside the raster.
    """
    col0, row0 = int(window.col_off), int(window.row_off)
    width, height = int(window.width), int(window.height)
    if (col0, row0, width, height) != (window.col_off, window.row_off, window.width, window.height):
        raise ValueError(f"window {window} must have whole-pixel offsets and sizes")
    if width <= 0 or height <= 0:
        raise ValueError(f"window {window} is empty")
    c0 = math.floor(col0 / ratio) - halo
    r0 = math.floor(row0 / ratio) - halo
    c1 = math.ceil((col0 + width) / ratio) + halo
    r1 = math.ceil((row0 + height) / ratio) + halo
    return Window(c0, r0, c1 - c0, r1 - r0)


def read_boundless(
    dataset: DatasetReader, path: str, bidx: int, window: Window
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` of band ``bidx``; pixels outside the raster come back as 0.

    Only the part of ``window`` that intersects the raster is decoded.

    Returns:
        ``(dn, inside)``: ``dn`` ``(h, w)`` in the file's dtype, ``inside`` ``(h, w)`` bool, True
        where the pixel lies inside the raster.
    """
    dn, inside, part = boundless_frame(dataset, bidx, window)
    if part is None:
        return dn, inside
    try:
        data = dataset.read(bidx, window=part)
    except (RasterioError, OSError) as exc:
        raise cannot_read(path, exc, decoding=True) from None
    top, left = int(part.row_off - window.row_off), int(part.col_off - window.col_off)
    dn[top : top + data.shape[0], left : left + data.shape[1]] = data
    return dn, inside


def boundless_frame(
    dataset: DatasetReader, bidx: int, window: Window
) -> tuple[np.ndarray, np.ndarray, Window | None]:
    """The zeroed result of a boundless read of ``window`` and where the raster lies in it.

    Returns ``(dn, inside, part)``: ``dn`` ``(h, w)`` zeros of band ``bidx``'s dtype, ``inside``
    ``(h, w)`` bool (True over the raster), and ``part``, the raster window that intersects
    ``window`` (None when nothing does).
    """
    c0, r0 = int(window.col_off), int(window.row_off)
    w, h = int(window.width), int(window.height)
    dn = np.zeros((h, w), dtype=dataset.dtypes[bidx - 1])
    inside = np.zeros((h, w), dtype=bool)
    ic0, ir0 = max(c0, 0), max(r0, 0)
    ic1, ir1 = min(c0 + w, dataset.width), min(r0 + h, dataset.height)
    if ic1 <= ic0 or ir1 <= ir0:
        return dn, inside, None
    inside[ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0] = True
    return dn, inside, Window(ic0, ir0, ic1 - ic0, ir1 - ir0)


def described_bands(dataset: DatasetReader) -> dict[str, int]:
    """Map band name → 1-based band index from a multi-band file's band descriptions.

    Descriptions are matched with :func:`band_from_name`; a ``BANDNAME`` band tag is used when
    the description is empty.
    """
    layout: dict[str, int] = {}
    for bidx in dataset.indexes:
        text = dataset.descriptions[bidx - 1] or dataset.tags(bidx).get("BANDNAME")
        name = band_from_name(text)
        if name is not None and name not in layout:
            layout[name] = bidx
    return layout
