"""One :class:`Scene` for every input format.

A scene holds the 10 m reference grid, each band's native grid, the radiometric convention, and
windowed reads of float32 reflectance with a validity mask.

``open_scene`` accepts a ``.SAFE`` folder, a ``.SAFE.zip``, a ``MTD_MSIL2A.xml``, a folder of
single-band GeoTIFF/COGs, a STAC item JSON, or a multi-band GeoTIFF whose band descriptions name
the bands. Opening checks every band file (georeferencing, grid nesting, and one decoded pixel so a
truncated file fails at once) but reads no image data beyond that; reads are windowed.

Grids (see docs/inputs.md): the reference grid is a 10 m band's grid (B02, B03, B04, B08, the first
found); without one it is derived from a coarser band (pixel size / ratio, size × ratio). Every
band must share the reference origin (within :data:`ORIGIN_TOLERANCE_PX` reference pixels), CRS,
and have a pixel size of ``ratio`` reference pixels, where ``ratio`` is the band's native ratio
(2 for 20 m, 6 for 60 m) or 1 (a band already resampled to the reference grid); bands of one group
must share one ratio. A multi-band GeoTIFF is one grid: every band has ratio 1 and the file's grid
is the reference grid, whatever its pixel size.

The pieces live in :mod:`~difffusr_cli.io.sources` (records), :mod:`~difffusr_cli.io.radiometry`,
:mod:`~difffusr_cli.io.grids` and :mod:`~difffusr_cli.io.discover` (format dispatch); this module
holds :class:`Scene` and :func:`open_scene`, and re-exports the records.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetReader
from rasterio.windows import Window

from difffusr_cli.bands import BAND_NAMES, BY_NAME, GROUPS, GroupName, band
from difffusr_cli.errors import InputError
from difffusr_cli.io.blocks import BlockCache
from difffusr_cli.io.discover import discover, open_bands
from difffusr_cli.io.geotiff import RasterGrid, native_window, open_raster
from difffusr_cli.io.grids import ORIGIN_TOLERANCE_PX, PIXEL_SIZE_RTOL
from difffusr_cli.io.radiometry import (
    FLOAT_REFLECTANCE_SOURCE,
    L2A_OFFSET_DN_SINCE_0400,
    L2A_QUANTIFICATION,
    Convention,
    Radiometry,
    check_radiometry_override,
    resolve_radiometry,
)
from difffusr_cli.io.sources import BandSource, Block, Discovered, SourceKind

__all__ = [
    "FLOAT_REFLECTANCE_SOURCE",
    "L2A_OFFSET_DN_SINCE_0400",
    "L2A_QUANTIFICATION",
    "ORIGIN_TOLERANCE_PX",
    "PIXEL_SIZE_RTOL",
    "BandSource",
    "Block",
    "Convention",
    "Radiometry",
    "Scene",
    "SourceKind",
    "check_path_encoding",
    "check_radiometry_override",
    "open_scene",
    "printable_path",
]


class Scene:
    """A Sentinel-2 L2A product as difffusr sees it, whatever the source format.

    Build it with :func:`open_scene`. Attributes: ``kind``, ``path``, ``product_id``, ``tile``,
    ``datetime``, ``processing_baseline``, ``processing_level``, the 10 m reference grid
    (``crs``, ``transform``, ``width``, ``height``), ``bands`` (name → :class:`BandSource`, all 12
    in product order), ``radiometry`` (:class:`Radiometry`) and ``scl_path`` (SAFE only).

    Reads open each file once per thread and keep it open; :meth:`close` (or ``with``) releases
    them.
    """

    def __init__(
        self,
        *,
        discovered: Discovered,
        grid: RasterGrid,
        bands: dict[str, BandSource],
        radiometry: Radiometry,
    ) -> None:
        self.kind: SourceKind = discovered.kind
        self.path: Path = discovered.path
        self.product_id: str = discovered.product_id
        self.tile = discovered.tile
        self.datetime = discovered.datetime
        self.processing_baseline = discovered.processing_baseline
        self.processing_level = discovered.processing_level
        self.scl_path = discovered.scl_path
        self.crs: CRS | None = grid.crs
        self.transform: Affine = grid.transform
        self.width: int = grid.width
        self.height: int = grid.height
        self.bands: dict[str, BandSource] = bands
        self.radiometry: Radiometry = radiometry
        self._reset_handles()

    def _reset_handles(self) -> None:
        self._local = threading.local()
        self._handles: list[DatasetReader] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        # Picklable for worker processes: open files stay behind, each process opens its own.
        state = self.__dict__.copy()
        for key in ("_local", "_handles", "_lock", "_pid"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_handles()

    # -- grid ------------------------------------------------------------------------------
    @property
    def grid(self) -> RasterGrid:
        """The 10 m reference grid."""
        return RasterGrid(self.crs, self.transform, self.width, self.height)

    @property
    def full_window(self) -> Window:
        """The whole scene as a window of the reference grid."""
        return Window(0, 0, self.width, self.height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return min(left, right), min(bottom, top), max(left, right), max(bottom, top)

    @property
    def found_bands(self) -> tuple[str, ...]:
        """Names of the bands the product has, in product order."""
        return tuple(n for n in BAND_NAMES if self.bands[n].found)

    @property
    def missing_bands(self) -> tuple[str, ...]:
        """Names of the bands the product lacks, in product order."""
        return tuple(n for n in BAND_NAMES if not self.bands[n].found)

    def require_bands(self, names: Sequence[str] = BAND_NAMES) -> None:
        """Raise ``InputError`` naming every band of ``names`` that the product lacks."""
        missing = [band(n).name for n in names if not self.bands[band(n).name].found]
        if missing:
            raise InputError(
                f"{self.path}: band{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} not found "
                f"(run `difffusr info {self.path}` to see what was found)"
            )

    # -- reads -----------------------------------------------------------------------------
    def read_native(
        self, group: GroupName | Sequence[str], window: Window
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bands on their *native* grid (10, 20 or 60 m) for a window of the 10 m reference grid.

        Args:
            group: a fusion group (``"10m"``, ``"20m"``, ``"60m"``) or band names of one group.
            window: whole-pixel window on the 10 m grid; its offsets and size should be multiples
                of the group's ratio ``r`` (2 for 20 m, 6 for 60 m). May extend outside the scene.

        Returns:
            ``(data, valid)``: ``data`` ``(C, h/r, w/r)`` float32 reflectance (0 where invalid),
            ``valid`` ``(h/r, w/r)`` bool, with ``h × w`` the window's size in 10 m pixels.
            Bands delivered resampled to 10 m (a stacked GeoTIFF, ratio 1) are area-averaged
            back to their native pixel size; such a pixel is valid when all its 10 m pixels are.

        Raises:
            InputError: a band is missing, or the bands do not nest in the 10 m grid so that the
                read does not come out at ``(h/r, w/r)`` native pixels.
            ValueError: an unknown group, or bands of different native resolutions.
        """
        label: str
        if isinstance(group, str):
            if group not in GROUPS:
                raise ValueError(
                    f"unknown band group {group!r}; expected one of {', '.join(GROUPS)}"
                )
            label, names = group, tuple(GROUPS[group])
        else:
            names = tuple(band(n).name for n in group)
            label = ", ".join(names)
        ratios = {BY_NAME[n].ratio for n in names}
        if len(ratios) != 1:
            raise ValueError(f"bands {label} do not share one native resolution")
        ratio = ratios.pop()
        block = self.read_bands(names, window)
        data, valid = block.data, block.valid
        if block.ratio == 1 and ratio > 1:
            c, h, w = data.shape
            if h % ratio or w % ratio:
                raise ValueError(
                    f"window {window} is not a whole number of {ratio * 10} m pixels ({label})"
                )
            data = data.reshape(c, h // ratio, ratio, w // ratio, ratio).mean(
                axis=(2, 4), dtype=np.float32
            )
            valid = np.asarray(
                valid.reshape(h // ratio, ratio, w // ratio, ratio).all(axis=(1, 3)), dtype=bool
            )
        expected = (int(window.height) // ratio, int(window.width) // ratio)
        if data.shape[1:] != expected:
            raise InputError(
                f"{self.path}: the {label} bands are not on a {ratio * 10} m grid nesting the "
                f"10 m grid (read {data.shape[1]}×{data.shape[2]} native pixels, expected "
                f"{expected[0]}×{expected[1]})"
            )
        return data, valid

    def read_group(self, group: GroupName, window: Window, halo: int = 0) -> Block:
        """Read a fusion group's bands (``"10m"``, ``"20m"``, ``"60m"``); see :meth:`read_bands`."""
        if group not in GROUPS:
            raise ValueError(f"unknown band group {group!r}; expected one of {', '.join(GROUPS)}")
        return self.read_bands(GROUPS[group], window, halo)

    def read_bands(self, names: Sequence[str], window: Window, halo: int = 0) -> Block:
        """Read bands that share one native grid, for a window of the 10 m reference grid.

        Args:
            names: band names (one native grid: e.g. one group, or ``RGB``).
            window: whole-pixel window on the reference grid; may extend outside the scene.
            halo: extra native pixels on every side.

        Returns:
            A :class:`Block` of ``(len(names), h, w)`` float32 reflectance on the native grid,
            covering ``window`` expanded outward to whole native pixels, plus ``halo``. Only that
            window is decoded; outside the rasters ``valid`` is False and data 0.

        Raises:
            InputError: a band is missing, the bands do not share a grid, or a file fails to decode.
        """
        names = tuple(band(n).name for n in names)
        if not names:
            raise ValueError("read_bands needs at least one band name")
        if halo < 0:
            raise ValueError(f"halo must be >= 0, got {halo}")
        self.require_bands(names)
        ratios = {self.bands[n].ratio for n in names}
        if len(ratios) != 1:
            detail = ", ".join(f"{n}: {self.bands[n].ratio}" for n in names)
            raise InputError(
                f"{self.path}: bands {', '.join(names)} are not on one grid (ratios {detail})"
            )
        ratio = ratios.pop()
        assert ratio is not None  # require_bands: every band is found, so it has a ratio
        region = native_window(window, ratio, halo)
        h, w = int(region.height), int(region.width)
        data = np.empty((len(names), h, w), dtype=np.float32)
        valid = np.ones((h, w), dtype=bool)
        for i, name in enumerate(names):
            src = self.bands[name]
            assert src.path is not None
            dataset = self._dataset(src.path)  # first: a forked child starts afresh there
            dn, inside = self._blocks().read(dataset, src.path, src.bidx, region)
            valid &= inside & (dn != 0)
            if np.issubdtype(dn.dtype, np.floating):
                valid &= np.isfinite(dn)
            if src.nodata is not None and not math.isnan(src.nodata) and src.nodata != 0:
                valid &= dn != src.nodata
            data[i] = self.radiometry.reflectance(name, dn)
        data[:, ~valid] = 0.0
        return Block(data=data, valid=valid, window=region, bands=names, ratio=ratio)

    def _blocks(self) -> BlockCache:
        """This thread's cache of decoded blocks (threads read with their own handles)."""
        blocks: BlockCache | None = getattr(self._local, "blocks", None)
        if blocks is None:
            blocks = self._local.blocks = BlockCache()
        return blocks

    def _dataset(self, path: str) -> DatasetReader:
        if os.getpid() != self._pid:
            # A forked child must not share GDAL handles with its parent: start afresh.
            self._reset_handles()
        cache: dict[str, DatasetReader] | None = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = {}
        if path not in cache:
            dataset = open_raster(path)
            cache[path] = dataset
            with self._lock:
                self._handles.append(dataset)
        return cache[path]

    def close(self) -> None:
        """Close every file this scene opened (in any thread)."""
        with self._lock:
            for dataset in self._handles:
                dataset.close()
            self._handles.clear()
            self._local = threading.local()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reporting -------------------------------------------------------------------------
    def info(self) -> dict:
        """The JSON object printed by ``difffusr info --json`` (schema in docs/inputs.md)."""
        return {
            "source": {
                "kind": self.kind,
                "path": str(self.path),
                "tile": self.tile,
                "datetime": self.datetime,
                "processing_baseline": self.processing_baseline,
                "processing_level": self.processing_level,
                "product_id": self.product_id,
            },
            "grid": {
                "crs": self.crs.to_string() if self.crs is not None else None,
                "transform": list(self.transform)[:6],
                "width": self.width,
                "height": self.height,
            },
            "bands": [
                {
                    "name": src.name,
                    "gsd": src.gsd,
                    "width": src.width,
                    "height": src.height,
                    "path": src.path,
                    "found": src.found,
                    "ratio": src.ratio,
                    "dtype": src.dtype,
                    "convention": self.radiometry.convention(src.name) if src.found else None,
                }
                for src in (self.bands[n] for n in BAND_NAMES)
            ],
            "radiometry": self.radiometry.to_dict(),
        }

    def __repr__(self) -> str:
        return (
            f"Scene(kind={self.kind!r}, path={str(self.path)!r}, {self.width}x{self.height}, "
            f"bands={len(self.found_bands)}/12)"
        )


def printable_path(path: str | Path) -> str:
    r"""``path`` as text that any terminal can print: undecodable bytes shown as ``\xff``."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", errors="backslashreplace")


def check_path_encoding(path: str | Path) -> None:
    r"""Refuse a path whose bytes are not UTF-8 (GDAL and the reports cannot carry it).

    Raises:
        InputError: naming the path with its undecodable bytes escaped (``\xff``).
    """
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{printable_path(path)}: the path is not valid UTF-8 (byte "
            f"{os.fsencode(path)[exc.start : exc.start + 1]!r} at {exc.start}); "
            "rename the file or folder"
        ) from None


def open_scene(
    path: str | Path, *, scale: float | None = None, offset: float | None = None
) -> Scene:
    """Open a Sentinel-2 L2A product in any supported format.

    Args:
        path: ``.SAFE`` folder, ``.SAFE.zip``, ``MTD_MSIL2A.xml``, folder of single-band rasters,
            STAC item JSON, or multi-band GeoTIFF with band descriptions.
        scale: override the scale of every band (reflectance = DN·scale + offset).
        offset: override the offset of every band, in reflectance units (e.g. -0.1).

    Raises:
        InputError: the path is missing or unrecognised, is Level-1C, holds no band, a band file
            cannot be read, or the band grids do not nest.
    """
    path = Path(path)
    check_path_encoding(path)
    check_radiometry_override(scale, offset)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    found = discover(path)
    handles: dict[str, DatasetReader] = {}
    try:
        band_sources, grid, file_declared = open_bands(found, handles)
    finally:
        for dataset in handles.values():
            dataset.close()
    dtypes = {n: src.dtype for n, src in band_sources.items() if src.found}
    radiometry = resolve_radiometry(found, file_declared, scale, offset, dtypes)
    return Scene(discovered=found, grid=grid, bands=band_sources, radiometry=radiometry)
