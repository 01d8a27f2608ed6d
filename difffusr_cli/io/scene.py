"""One :class:`Scene` for every input format: the 10 m reference grid, each band's native grid,
the radiometric convention, and windowed reads of float32 reflectance with a validity mask.

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
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetReader
from rasterio.windows import Window

from difffusr_cli.bands import BAND_NAMES, BANDS, BY_NAME, GROUPS, GroupName, band
from difffusr_cli.errors import InputError
from difffusr_cli.io.cogs import find_band_files
from difffusr_cli.io.geotiff import (
    RASTER_SUFFIXES,
    RasterGrid,
    described_bands,
    file_scale_offset,
    grid_of,
    is_floating,
    native_window,
    open_raster,
    probe,
    read_boundless,
)
from difffusr_cli.io.safe import looks_like_safe, parse_product_id, read_safe
from difffusr_cli.io.stac import looks_like_stac, read_stac_item

SourceKind = Literal["safe", "cog-dir", "stac", "geotiff"]
#: How a band's pixel values become reflectance: ``"dn"`` (DN·scale + offset) or
#: ``"reflectance"`` (floating-point pixels used as they are).
Convention = Literal["dn", "reflectance"]

#: Largest origin difference between a band and the reference grid, in reference pixels, still
#: taken as "the same origin" (GDAL's default warp error threshold, ``gdalwarp -et 0.125``).
ORIGIN_TOLERANCE_PX = 0.125
#: Relative tolerance on pixel sizes (ratio × reference pixel size).
PIXEL_SIZE_RTOL = 1e-6
#: L2A quantification value assumed when a source declares none.
L2A_QUANTIFICATION = 10000.0
#: BOA_ADD_OFFSET (DN) of baselines 04.00 and later, assumed when only the baseline is known.
L2A_OFFSET_DN_SINCE_0400 = -1000.0
#: How a floating-point band without scale/offset metadata is described in reports.
FLOAT_REFLECTANCE_SOURCE = "floating-point pixels taken as reflectance (no scale/offset metadata)"


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


def _tidy(value: float) -> float | int:
    """A derived number for reports: round off float noise, ints where whole."""
    rounded = round(value, 6)
    return int(rounded) if rounded == int(rounded) else rounded


@dataclass(frozen=True)
class Radiometry:
    """The DN → reflectance convention: reflectance = DN · scale + offset (per band).

    Attributes:
        scale: band name → scale (reflectance per DN), all 12 bands.
        offset: band name → offset in reflectance units, all 12 bands.
        source: where the convention came from (metadata, file tags, assumption, user override).
        assumed: True when at least one band's convention was assumed, not read.
        overridden: True when the user overrode the scale and/or the offset.
        conventions: band name → ``"dn"`` (integer counts scaled by scale/offset) or
            ``"reflectance"`` (floating-point pixels without scale/offset metadata, taken as
            reflectance: scale 1, offset 0). Bands not listed are ``"dn"``.
    """

    scale: Mapping[str, float]
    offset: Mapping[str, float]
    source: str
    assumed: bool = False
    overridden: bool = False
    conventions: Mapping[str, Convention] = field(default_factory=dict)

    def convention(self, name: str) -> Convention:
        """``"dn"`` or ``"reflectance"`` for band ``name`` (see ``conventions``)."""
        return self.conventions.get(name, "dn")

    @property
    def quantification(self) -> float | int | dict[str, float | int]:
        """1/scale (L2A's QUANTIFICATION_VALUE): one number if all bands share it, else per band."""
        values = {n: _tidy(1.0 / self.scale[n]) for n in BAND_NAMES}
        distinct = set(values.values())
        return distinct.pop() if len(distinct) == 1 else values

    @property
    def offsets(self) -> dict[str, float | int]:
        """Offset per band in DN (offset/scale, L2A's BOA_ADD_OFFSET)."""
        return {n: _tidy(self.offset[n] / self.scale[n]) for n in BAND_NAMES}

    def reflectance(self, name: str, dn: np.ndarray) -> np.ndarray:
        """DN of band ``name`` (any shape) → float32 reflectance."""
        return dn.astype(np.float32) * np.float32(self.scale[name]) + np.float32(self.offset[name])

    def to_dict(self) -> dict:
        """The ``radiometry`` object of ``difffusr info --json``."""
        return {
            "quantification": self.quantification,
            "offsets": self.offsets,
            "scale": {n: self.scale[n] for n in BAND_NAMES},
            "offset": {n: self.offset[n] for n in BAND_NAMES},
            "source": self.source,
            "assumed": self.assumed,
            "overridden": self.overridden,
        }


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
class _Discovered:
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
        discovered: _Discovered,
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
        return tuple(n for n in BAND_NAMES if self.bands[n].found)

    @property
    def missing_bands(self) -> tuple[str, ...]:
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
        ratio = int(ratios.pop())
        region = native_window(window, ratio, halo)
        h, w = int(region.height), int(region.width)
        data = np.empty((len(names), h, w), dtype=np.float32)
        valid = np.ones((h, w), dtype=bool)
        for i, name in enumerate(names):
            src = self.bands[name]
            assert src.path is not None
            dn, inside = read_boundless(self._dataset(src.path), src.path, src.bidx, region)
            valid &= inside & (dn != 0)
            if np.issubdtype(dn.dtype, np.floating):
                valid &= np.isfinite(dn)
            if src.nodata is not None and not math.isnan(src.nodata) and src.nodata != 0:
                valid &= dn != src.nodata
            data[i] = self.radiometry.reflectance(name, dn)
        data[:, ~valid] = 0.0
        return Block(data=data, valid=valid, window=region, bands=names, ratio=ratio)

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


# -- opening --------------------------------------------------------------------------------
def check_radiometry_override(scale: float | None, offset: float | None) -> None:
    """Check ``--scale``/``--offset`` are in the reflectance convention.

    The convention is reflectance = DN·scale + offset.

    A reflectance offset is a fraction of 1 and a scale at most 1 reflectance per DN; DN-valued
    numbers (L2A's BOA_ADD_OFFSET -1000, QUANTIFICATION_VALUE 10000) would saturate every band.

    Raises:
        InputError: a non-finite value, ``scale`` outside (0, 1], or ``|offset| >= 1``.
    """
    if scale is not None and not (math.isfinite(scale) and 0 < scale <= 1):
        hint = (
            f"; for quantification {scale:g} use --scale {1 / scale:g}"
            if math.isfinite(scale) and scale > 1
            else ""
        )
        raise InputError(
            f"--scale {scale:g}: expected reflectance per DN in (0, 1] "
            f"(reflectance = DN·scale + offset){hint}"
        )
    if offset is not None and not math.isfinite(offset):
        raise InputError(f"--offset must be a finite number, got {offset}")
    if offset is not None and abs(offset) >= 1:
        quant = 1 / scale if scale is not None and scale < 1 else L2A_QUANTIFICATION
        raise InputError(
            f"--offset {offset:g}: the offset is in reflectance units "
            "(reflectance = DN·scale + offset); "
            f"for BOA_ADD_OFFSET {offset:g} with quantification {quant:g} "
            f"use --scale {1 / quant:g} --offset {offset / quant:g}"
        )


def printable_path(path: str | Path) -> str:
    """``path`` as text that any terminal can print: undecodable bytes shown as ``\\xff``."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", errors="backslashreplace")


def check_path_encoding(path: str | Path) -> None:
    """Refuse a path whose bytes are not UTF-8 (GDAL and the reports cannot carry it).

    Raises:
        InputError: naming the path with its undecodable bytes escaped (``\\xff``).
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
    found = _discover(path)
    handles: dict[str, DatasetReader] = {}
    try:
        band_sources, grid, file_declared = _open_bands(found, handles)
    finally:
        for dataset in handles.values():
            dataset.close()
    dtypes = {n: src.dtype for n, src in band_sources.items() if src.found}
    radiometry = _resolve_radiometry(found, file_declared, scale, offset, dtypes)
    return Scene(discovered=found, grid=grid, bands=band_sources, radiometry=radiometry)


def _discover(path: Path) -> _Discovered:
    if looks_like_safe(path):
        safe = read_safe(path)
        declared: dict[str, tuple[float, float]] = {}
        quant = safe.quantification if safe.quantification else L2A_QUANTIFICATION
        if safe.offsets_dn:
            offsets = safe.offsets_dn
            source = "MTD_MSIL2A.xml (BOA_QUANTIFICATION_VALUE, BOA_ADD_OFFSET)"
        else:
            default = _default_offset_dn(safe.processing_baseline)
            offsets = {}
            source = (
                f"MTD_MSIL2A.xml (BOA_QUANTIFICATION_VALUE; no BOA_ADD_OFFSET list, "
                f"offset {default:g} DN for baseline {safe.processing_baseline})"
            )
        if not safe.quantification:
            source += f"; quantification {L2A_QUANTIFICATION:g} assumed (none in the metadata)"
        for b in BANDS:
            off_dn = offsets.get(b.name, _default_offset_dn(safe.processing_baseline))
            declared[b.name] = (1.0 / quant, off_dn / quant)
        return _Discovered(
            kind="safe",
            path=path,
            files={n: (p, 1) for n, p in safe.band_files.items()},
            product_id=safe.product_id,
            tile=safe.tile,
            datetime=safe.datetime,
            processing_baseline=safe.processing_baseline,
            processing_level="L2A",
            declared=declared,
            declared_source=source,
            scl_path=safe.scl_file,
        )
    if path.is_dir():
        folder = find_band_files(path)
        names = " ".join([path.name] + [p.name for p in folder.band_files.values()])
        parsed = parse_product_id(names)
        return _Discovered(
            kind="cog-dir",
            path=path,
            files={n: (str(p), 1) for n, p in folder.band_files.items()},
            product_id=path.name,
            tile=parsed.tile if parsed else None,
            datetime=parsed.datetime if parsed else None,
            processing_baseline=parsed.processing_baseline if parsed else None,
            processing_level=parsed.level if parsed else None,
        )
    if looks_like_stac(path):
        item = read_stac_item(path)
        return _Discovered(
            kind="stac",
            path=path,
            files={n: (p, 1) for n, p in item.band_files.items()},
            product_id=item.item_id,
            tile=item.tile,
            datetime=item.datetime,
            processing_baseline=item.processing_baseline,
            processing_level=item.processing_level,
            declared=item.declared,
            declared_source=item.radiometry_source,
        )
    if path.is_file() and path.suffix.lower() in RASTER_SUFFIXES:
        dataset = open_raster(str(path))
        try:
            layout = described_bands(dataset)
        finally:
            dataset.close()
        if not layout:
            raise InputError(
                f"{path}: no band description names a Sentinel-2 band (expected B01 … B12); "
                "pass the folder of single-band files instead, or set band descriptions"
            )
        parsed = parse_product_id(path.name)
        return _Discovered(
            kind="geotiff",
            path=path,
            files={n: (str(path), bidx) for n, bidx in layout.items()},
            product_id=path.stem,
            tile=parsed.tile if parsed else None,
            datetime=parsed.datetime if parsed else None,
            processing_baseline=parsed.processing_baseline if parsed else None,
            processing_level=parsed.level if parsed else None,
        )
    raise InputError(
        f"{path}: not a recognised input (expected a .SAFE folder or .zip, MTD_MSIL2A.xml, "
        "a folder of band GeoTIFFs, a STAC item .json or a multi-band GeoTIFF)"
    )


def _default_offset_dn(baseline: str | None) -> float:
    """BOA_ADD_OFFSET to assume for a processing baseline (0 before 04.00 or when unknown)."""
    try:
        return L2A_OFFSET_DN_SINCE_0400 if baseline is not None and float(baseline) >= 4.0 else 0.0
    except ValueError:
        return 0.0


def _fill_metadata_from_tags(found: _Discovered, dataset: DatasetReader) -> None:
    """Take tile / time / baseline from a file's tags (e.g. a PRODUCT_ID tag) when still unknown."""
    tags = dataset.tags()
    tagged_id = str(tags.get("PRODUCT_ID", "")).strip()
    # A folder's name is only a stand-in for the id; the first file's PRODUCT_ID tag is the real
    # one.
    if found.kind == "cog-dir" and tagged_id and found.product_id == found.path.name:
        found.product_id = tagged_id[:-5] if tagged_id.endswith(".SAFE") else tagged_id
    parsed = parse_product_id(" ".join(str(v) for v in tags.values()))
    if parsed is not None:
        found.tile = found.tile or parsed.tile
        found.datetime = found.datetime or parsed.datetime
        found.processing_baseline = found.processing_baseline or parsed.processing_baseline
        found.processing_level = found.processing_level or parsed.level
    found.processing_baseline = found.processing_baseline or tags.get("PROCESSING_BASELINE")
    found.processing_level = found.processing_level or tags.get("PROCESSING_LEVEL")


def _open_bands(
    found: _Discovered, handles: dict[str, DatasetReader]
) -> tuple[dict[str, BandSource], RasterGrid, dict[str, tuple[float, float]]]:
    """Open every band file, check it, and derive the reference grid."""
    grids: dict[str, RasterGrid] = {}
    meta: dict[str, tuple[str, int, str, float | None]] = {}
    file_declared: dict[str, tuple[float, float]] = {}
    for name in BAND_NAMES:
        if name not in found.files:
            continue
        gdal_path, bidx = found.files[name]
        if gdal_path not in handles:
            handles[gdal_path] = open_raster(gdal_path)
            _fill_metadata_from_tags(found, handles[gdal_path])
        dataset = handles[gdal_path]
        if bidx > dataset.count:
            raise InputError(f"cannot read {gdal_path}: it has no band {bidx}")
        probe(dataset, gdal_path, bidx)
        if dataset.crs is None:
            raise InputError(
                f"{gdal_path}: band {name} has no coordinate reference system (CRS); "
                "difffusr needs georeferenced band files"
            )
        grids[name] = grid_of(dataset)
        meta[name] = (gdal_path, bidx, dataset.dtypes[bidx - 1], dataset.nodata)
        declared = file_scale_offset(dataset, bidx, gdal_path)
        if declared is not None:
            file_declared[name] = declared
    if not grids:
        raise InputError(f"{found.path}: no Sentinel-2 band file found")

    ref_name, reference = _reference_grid(found, grids)
    sources: dict[str, BandSource] = {}
    for name in BAND_NAMES:
        if name not in grids:
            sources[name] = BandSource(name, None, False)
            continue
        ratio = (
            1
            if found.kind == "geotiff"
            else _check_nesting(found, name, grids[name], ref_name, reference)
        )
        gdal_path, bidx, dtype, nodata = meta[name]
        g = grids[name]
        sources[name] = BandSource(
            name, gdal_path, True, g.width, g.height, g.transform, ratio, bidx, dtype, nodata
        )
    for group, members in GROUPS.items():
        ratios = {sources[n].ratio for n in members if sources[n].found}
        if len(ratios) > 1:
            detail = ", ".join(f"{n} ×{sources[n].ratio}" for n in members if sources[n].found)
            raise InputError(f"{found.path}: the {group} bands are not on one grid ({detail})")
    return sources, reference, file_declared


#: Tie-break among 10 m bands proposing different reference grids (B04 first: the red band every
#: product has and the one the RGB super-resolution is anchored on).
_REFERENCE_PREFERENCE = ("B04", "B03", "B02", "B08")


def _implied_reference(found: _Discovered, name: str, grid: RasterGrid) -> RasterGrid:
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


def _same_grid(a: RasterGrid, b: RasterGrid) -> bool:
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


def _reference_grid(found: _Discovered, grids: dict[str, RasterGrid]) -> tuple[str, RasterGrid]:
    """The 10 m reference grid and the band it comes from.

    Candidates are the finest group found (the 10 m bands, else 20 m, else 60 m). The grid most
    candidates agree on wins, ties going to B04, B03, B02, B08 in that order, so one band shifted
    against the others is the one reported as not nesting.
    """
    for group in ("10m", "20m", "60m"):
        candidates = [n for n in GROUPS[group] if n in grids]
        if candidates:
            break
    implied = {n: _implied_reference(found, n, grids[n]) for n in candidates}
    rank = {n: i for i, n in enumerate(_REFERENCE_PREFERENCE)}

    def score(name: str) -> tuple[int, int, int]:
        votes = sum(_same_grid(implied[other], implied[name]) for other in candidates)
        return (-votes, rank.get(name, len(rank)), candidates.index(name))

    name = min(candidates, key=score)
    return name, implied[name]


def _check_nesting(
    found: _Discovered, name: str, grid: RasterGrid, ref_name: str, ref: RasterGrid
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


def _resolve_radiometry(
    found: _Discovered,
    file_declared: dict[str, tuple[float, float]],
    scale_override: float | None,
    offset_override: float | None,
    dtypes: Mapping[str, str | None] | None = None,
) -> Radiometry:
    """Per band: product metadata, else the file's own tags, else, for floating-point pixels,
    reflectance as is (scale 1, offset 0), else the assumed L2A convention.

    ``dtypes`` maps the found bands to their files' data types (``"uint16"``, ``"float32"``).
    """
    dtypes = dtypes or {}
    floating = {n for n, dtype in dtypes.items() if is_floating(dtype)}
    default_dn = _default_offset_dn(found.processing_baseline)
    why = (
        f"baseline {found.processing_baseline}"
        if found.processing_baseline
        else "no processing baseline known"
    )
    assumed_source = (
        f"assumed L2A convention (quantification {L2A_QUANTIFICATION:g}, "
        f"offset {default_dn:g} DN: {why}); "
        "override with --scale/--offset"
    )
    scales: dict[str, float] = {}
    offsets: dict[str, float] = {}
    origin: dict[str, str] = {}
    conventions: dict[str, Convention] = {}
    for name in BAND_NAMES:
        conventions[name] = "dn"
        if name in found.declared:
            (scales[name], offsets[name]), origin[name] = (
                found.declared[name],
                found.declared_source,
            )
        elif name in file_declared:
            (scales[name], offsets[name]), origin[name] = (
                file_declared[name],
                "the files' scale/offset metadata",
            )
        elif name in floating:
            scales[name], offsets[name] = 1.0, 0.0
            origin[name] = FLOAT_REFLECTANCE_SOURCE
            conventions[name] = "reflectance"
        else:
            scales[name], offsets[name] = 1.0 / L2A_QUANTIFICATION, default_dn / L2A_QUANTIFICATION
            origin[name] = assumed_source
    # Bands not in the product do not decide how the convention is described.
    relevant = [n for n in BAND_NAMES if n in found.files] or list(BAND_NAMES)
    assumed = any(origin[n] == assumed_source or "assumed" in origin[n] for n in relevant)
    distinct = list(dict.fromkeys(origin[n] for n in relevant))
    if len(distinct) == 1:
        source = distinct[0]
    else:
        source = "; ".join(
            f"{s} for {', '.join(n for n in relevant if origin[n] == s)}" for s in distinct
        )

    overrides = []
    if scale_override is not None:
        scales = {n: float(scale_override) for n in BAND_NAMES}
        overrides.append(f"--scale {scale_override:g}")
    if offset_override is not None:
        offsets = {n: float(offset_override) for n in BAND_NAMES}
        overrides.append(f"--offset {offset_override:g}")
    if overrides:
        if scale_override is not None and offset_override is not None:
            source = f"user override ({', '.join(overrides)})"
            assumed = False
        else:
            source = f"user override ({', '.join(overrides)}); otherwise {source}"
    return Radiometry(
        scales,
        offsets,
        source,
        assumed=assumed,
        overridden=bool(overrides),
        conventions=conventions,
    )
