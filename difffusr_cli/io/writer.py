"""Streaming writer of the 12-band 2.5 m product, and the product grid.

The product is written window by window into a temporary GeoTIFF beside the target
(``<dir>/.<name>.partial.tif``): tiled 512 × 512, ZSTD (DEFLATE where the GDAL build lacks ZSTD)
with a predictor (2 for uint16, 3 for float32), BigTIFF when needed, band descriptions
B01 … B12, nodata (0 for uint16 DN, NaN for float32 reflectance), per-band scale/offset metadata so
GDAL, rasterio and QGIS show reflectance, and free-form provenance tags.
:meth:`ProductWriter.commit` renames it onto the target (writing a Cloud-Optimized GeoTIFF
with overviews first when asked); :meth:`ProductWriter.abort` leaves it for ``--resume``. The
target path only ever holds a complete product.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.io import DatasetWriter
from rasterio.windows import Window

from difffusr_cli import __version__
from difffusr_cli.bands import BAND_NAMES, SCALE
from difffusr_cli.errors import OutputError
from difffusr_cli.io.codecs import (
    LEVEL_OPTION,
    best_compression,
    compression_level,
    creation_options,
)
from difffusr_cli.io.readback import _first_line, _read_back, _verify_copy, _write_failure

OutputDType = Literal["uint16", "float32"]
#: Internal tile size of the product, pixels.
BLOCK_SIZE = 512


class _Gridded(Protocol):
    transform: Affine
    width: int
    height: int


def output_grid(scene: _Gridded, window: Window | None = None) -> tuple[Affine, int, int]:
    """The 2.5 m product grid nesting a scene's 10 m grid (or a 10 m sub-window of it).

    Args:
        scene: anything with the 10 m ``transform``, ``width`` and ``height`` (a ``Scene``).
        window: whole-pixel window of the 10 m grid (``--window``); the whole scene when None.

    Returns:
        ``(transform, width, height)``: the window's 10 m transform with pixel size / 4 and the
        same origin (exact: a power-of-two scale), and the window's size × 4.
    """
    if window is None:
        window = Window(0, 0, scene.width, scene.height)
    values = (window.col_off, window.row_off, window.width, window.height)
    if any(v != int(v) for v in values) or window.width <= 0 or window.height <= 0:
        raise ValueError(f"window {window} must be non-empty with whole-pixel offsets and sizes")
    origin = scene.transform @ Affine.translation(int(window.col_off), int(window.row_off))
    return origin @ Affine.scale(1.0 / SCALE), int(window.width) * SCALE, int(window.height) * SCALE


def partial_path_for(path: str | Path) -> Path:
    """The temporary file a product is written to before :meth:`ProductWriter.commit`."""
    path = Path(path)
    return path.parent / f".{path.name}.partial.tif"


def check_output_path(path: str | Path, *, overwrite: bool = False) -> Path:
    """Fail early, with ``OutputError``, when ``path`` cannot be written.

    Checks that the directory exists and is writable, and that ``path`` is absent (or
    ``overwrite``). Returns ``path`` as a ``Path``.
    """
    if os.fspath(path).endswith(("/", os.sep)):
        raise OutputError(f"cannot write {path}: a path ending in / names a folder, not a file")
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: directory {parent} is not writable")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it")
    return path


def _per_band(value: float | Sequence[float], count: int, what: str) -> np.ndarray:
    array = (
        np.full(count, value, dtype=np.float64)
        if np.isscalar(value)
        else np.asarray(value, np.float64)
    )
    if array.shape != (count,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{what} must be one finite number or {count} of them, got {value!r}")
    return array


def _tag_text(value: object) -> str:
    # Keys keep their insertion order: per-band objects read in product band order (B01 … B12).
    return value if isinstance(value, str) else json.dumps(value, sort_keys=False, default=str)


class ProductWriter:
    """Write a multi-band product window by window; the target appears only on :meth:`commit`.

    Args:
        path: the final GeoTIFF.
        crs, transform, width, height: the **2.5 m** grid (see :func:`output_grid`).
        dtype: ``"uint16"`` stores DN = round((reflectance − offset)/scale) clipped to [1, 65535]
            for valid pixels and 0 for nodata; ``"float32"`` stores reflectance and NaN for nodata.
        scale, offset: the uint16 DN convention (reflectance = DN·scale + offset), one value or one
            per band; written as band scale/offset metadata. Ignored for float32 (1 and 0).
        tags: free-form provenance (values that are not strings are stored as JSON);
            ``difffusr_version`` is added when absent, ``compression`` and
            ``compression_level`` (what the tiles are written with) always.
        cog: at :meth:`commit`, write a Cloud-Optimized GeoTIFF with overviews.
        overwrite: replace an existing ``path`` on commit; otherwise an existing path is an error.
        resume: reopen an existing partial file (same grid and dtype) instead of starting anew.
        bands: band names, used as band descriptions (default the 12 product bands).
        compress: the tiles' codec (``zstd`` falls back to ``deflate`` where GDAL lacks ZSTD).
        compress_level: the codec's level (None: its fastest, see :data:`COMPRESSION_LEVELS`).

    Raises:
        OutputError: the directory is missing or not writable, ``path`` exists without
            ``overwrite``, or a partial file to resume does not match.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        crs: CRS | str | None,
        transform: Affine,
        width: int,
        height: int,
        dtype: OutputDType = "uint16",
        scale: float | Sequence[float] = 1e-4,
        offset: float | Sequence[float] = 0.0,
        tags: Mapping[str, object] | None = None,
        cog: bool = False,
        overwrite: bool = False,
        resume: bool = False,
        bands: Sequence[str] = BAND_NAMES,
        compress: str = "zstd",
        compress_level: int | None = None,
    ) -> None:
        if dtype not in ("uint16", "float32"):
            raise ValueError(f"dtype must be 'uint16' or 'float32', got {dtype!r}")
        level = compression_level(compress, compress_level)  # validated for the codec asked
        self.compression = best_compression(compress)
        self.compress_level = (
            level if self.compression == compress else compression_level(self.compression, None)
        )
        self.path = check_output_path(path, overwrite=overwrite)
        self.partial_path = partial_path_for(self.path)
        self.dtype: OutputDType = dtype
        self.bands = tuple(bands)
        self.count = len(self.bands)
        self.width, self.height = int(width), int(height)
        self.cog = cog
        self.overwrite = overwrite
        if dtype == "uint16":
            self.scale = _per_band(scale, self.count, "scale")
            self.offset = _per_band(offset, self.count, "offset")
            if np.any(self.scale <= 0):
                raise ValueError(f"scale must be positive, got {scale!r}")
        else:
            self.scale = np.ones(self.count)
            self.offset = np.zeros(self.count)
        self.resumed = False
        self._committed = False
        all_tags = {
            "difffusr_version": __version__,
            **(tags or {}),
            # What the tiles are written with (never changes pixels).
            "compression": self.compression,
            "compression_level": "" if self.compress_level is None else self.compress_level,
        }
        if dtype == "uint16":
            all_tags.setdefault(
                "dn_convention", "reflectance = DN * scale + offset (band metadata); DN 0 = nodata"
            )
        else:
            all_tags.setdefault("dn_convention", "float32 reflectance; NaN = nodata")
        self._tags = {str(k): _tag_text(v) for k, v in all_tags.items()}
        self._crs, self._transform = crs, transform
        self._dataset: DatasetWriter | None = None
        self._opened_as = str(self.partial_path)  # GDAL's name of the open dataset
        try:
            if resume and self.partial_path.exists():
                try:
                    self._dataset = rasterio.open(self.partial_path, "r+", NUM_THREADS="ALL_CPUS")
                except (RasterioError, OSError) as exc:
                    raise OutputError(
                        f"cannot resume: {self.partial_path} is damaged ({_first_line(exc)}); "
                        "run with --overwrite to start again"
                    ) from None
                self._check_resumable(self._dataset, crs, transform)
                self.resumed = True
            else:
                self._dataset = rasterio.open(
                    self.partial_path, "w", **self._profile(crs, transform)
                )
                self._dataset.descriptions = self.bands
                self._dataset.scales = tuple(float(s) for s in self.scale)
                self._dataset.offsets = tuple(float(o) for o in self.offset)
            self._dataset.update_tags(**self._tags)
        except (RasterioError, OSError) as exc:
            raise OutputError(f"cannot write {self.partial_path}: {exc}") from None

    def checkpoint(self) -> None:
        """Make everything written so far durable and readable through other handles.

        The file stays open in the session it was created in (:mod:`difffusr_cli.io.flush`);
        where GDAL cannot be flushed from Python it is closed and reopened instead.

        Raises:
            OutputError: the flush failed (a full disk is said).
        """
        from difffusr_cli.io.flush import gdal_flusher

        dataset = self._open_dataset()
        flush = gdal_flusher()
        try:
            # Dirty metadata makes GDAL write the directory (the tiles' offsets) on a flush.
            dataset.update_tags(**self._tags)
            flushed = flush(self._opened_as) if flush is not None else None
            if flushed is False:
                raise OSError("flushing the file to disk failed")
        except (RasterioError, OSError) as exc:
            raise OutputError(_write_failure(self.partial_path, exc)) from None
        if flushed:
            return
        self._close()
        try:
            self._dataset = rasterio.open(self.partial_path, "r+", NUM_THREADS="ALL_CPUS")
            self._opened_as = str(self.partial_path)
            self._dataset.update_tags(**self._tags)
        except (RasterioError, OSError, CPLE_BaseError) as exc:
            raise OutputError(_write_failure(self.partial_path, exc)) from None

    def retarget(self, path: str | Path) -> None:
        """Make this writer's product ``path``, moving the open partial file to its partial path.

        The file stays open (POSIX renames open files); used to build a file beside the real
        partial file and put it in place once it is complete.
        """
        target = partial_path_for(path)
        os.replace(self.partial_path, target)
        self.path, self.partial_path = Path(path), target

    def _profile(self, crs: CRS | str | None, transform: Affine) -> dict:
        return {
            "driver": "GTiff",
            "width": self.width,
            "height": self.height,
            "count": self.count,
            "dtype": self.dtype,
            "crs": crs,
            "transform": transform,
            "nodata": 0 if self.dtype == "uint16" else math.nan,
            "tiled": True,
            "blockxsize": BLOCK_SIZE,
            "blockysize": BLOCK_SIZE,
            **creation_options(self.compression, self.compress_level, self.dtype),
            "BIGTIFF": "IF_SAFER",
            "NUM_THREADS": "ALL_CPUS",
        }

    def _check_resumable(self, ds: DatasetWriter, crs: CRS | str | None, transform: Affine) -> None:
        expected = (
            self.width,
            self.height,
            self.count,
            self.dtype,
            CRS.from_user_input(crs) if crs else None,
            transform,
        )
        actual = (ds.width, ds.height, ds.count, ds.dtypes[0], ds.crs, ds.transform)
        if expected != actual:
            ds.close()
            raise OutputError(
                f"cannot resume: {self.partial_path} was started for another grid or dtype; "
                "delete it or run without --resume"
            )

    # -- writing ---------------------------------------------------------------------------
    def write(self, window: Window, data: np.ndarray, valid: np.ndarray) -> None:
        """Write one window of the 2.5 m grid.

        Args:
            window: whole-pixel window of the product grid; parts outside the raster are dropped.
            data: ``(bands, h, w)`` float32 reflectance.
            valid: ``(h, w)`` bool; False (or a non-finite value in any band) writes nodata.
        """
        dataset = self._open_dataset()
        h, w = int(window.height), int(window.width)
        if data.shape != (self.count, h, w) or valid.shape != (h, w):
            raise ValueError(
                f"data {data.shape} / valid {valid.shape} do not match window {h}×{w} "
                f"with {self.count} bands"
            )
        c0, r0 = int(window.col_off), int(window.row_off)
        ic0, ir0 = max(c0, 0), max(r0, 0)
        ic1, ir1 = min(c0 + w, self.width), min(r0 + h, self.height)
        if ic1 <= ic0 or ir1 <= ir0:
            return
        rows, cols = slice(ir0 - r0, ir1 - r0), slice(ic0 - c0, ic1 - c0)
        stored = self.encode(data[:, rows, cols], valid[rows, cols])
        self._write(dataset, Window(ic0, ir0, ic1 - ic0, ir1 - ir0), stored)

    def encode(
        self, data: np.ndarray, valid: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The stored values of ``(bands, h, w)`` float reflectance and ``(h, w)`` validity.

        Args:
            data: ``(bands, h, w)`` reflectance.
            valid: ``(h, w)`` bool.
            out: a ``(bands, h, w)`` array of the product's dtype to fill (a recycled buffer),
                or None for a new one.

        Returns:
            ``(bands, h, w)`` of the product's dtype: DN (0 = nodata) or float32 (NaN = nodata);
            a pixel non-finite in any band is nodata.
        """
        ok = valid.copy()
        work = np.empty(valid.shape, dtype=np.float32)  # one band at a time: small temporaries
        # One reduction says whether anything is non-finite (almost never: the pipeline stops on
        # non-finite network output); only then is each pixel of each band checked.
        # (float32: a finite sum of reflectances cannot overflow; an overflow only means the
        # exact check runs.)
        if not np.isfinite(data.sum()):
            finite = np.empty(valid.shape, dtype=bool)
            for band in data:
                ok &= np.isfinite(band, out=finite)
        invalid = np.logical_not(ok, out=ok)
        if out is None or out.shape != data.shape or out.dtype != np.dtype(self.dtype):
            out = np.empty(data.shape, dtype=self.dtype)
        for i in range(self.count):
            if self.dtype == "uint16":
                np.subtract(data[i], np.float32(self.offset[i]), out=work, dtype=np.float32)
                work /= np.float32(self.scale[i])
                np.rint(work, out=work)
                # clipped straight into the stored band (whole numbers in [1, 65535]: exact); a
                # non-finite value casts to garbage, set to nodata on the next line
                with np.errstate(invalid="ignore"):
                    np.clip(work, 1, 65535, out=out[i], casting="unsafe")
                np.putmask(out[i], invalid, 0)
            else:
                np.copyto(out[i], data[i], casting="same_kind")
                np.putmask(out[i], invalid, np.float32(np.nan))
        return out

    def write_stored(self, window: Window, stored: np.ndarray) -> None:
        """Write values already encoded (:meth:`encode`, or read from a product) to ``window``.

        Args:
            window: whole-pixel window inside the product grid.
            stored: ``(bands, h, w)`` of the product's dtype.
        """
        h, w = int(window.height), int(window.width)
        if stored.shape != (self.count, h, w) or stored.dtype != np.dtype(self.dtype):
            raise ValueError(f"stored {stored.shape} {stored.dtype} do not match window {h}×{w}")
        self._write(self._open_dataset(), window, stored)

    def _write(self, dataset: DatasetWriter, window: Window, stored: np.ndarray) -> None:
        try:
            dataset.write(stored, window=window)
        except (RasterioError, OSError) as exc:
            raise OutputError(_write_failure(self.partial_path, exc)) from None

    def _open_dataset(self) -> DatasetWriter:
        """The partial file's open dataset; ``RuntimeError`` once the writer is closed."""
        if self._dataset is None or self._dataset.closed:
            raise RuntimeError("ProductWriter is closed")
        return self._dataset

    def update_tags(self, tags: Mapping[str, object]) -> None:
        """Add or replace provenance tags (non-strings stored as JSON)."""
        self._open_dataset().update_tags(**{str(k): _tag_text(v) for k, v in tags.items()})

    # -- finishing -------------------------------------------------------------------------
    def commit(
        self, *, compact: bool | None = None, verify: Callable[[Path], None] | None = None
    ) -> Path:
        """Finish the product and move it onto ``path``; returns ``path``.

        The partial file is written with the product's creation options, so it *is* the product:
        it is read back in full (``verify``, default: every band decoded) and renamed into place,
        with no second compression pass. A compacting copy is made instead when asked, for a COG
        (overviews, its own layout) and by default when the partial file was resumed: its tiles
        were then written over several sessions, and their order and dead space depend on where
        a run stopped; the copy makes the bytes a function of the pixels and tags alone.

        Args:
            compact: copy rather than rename (None: when the partial file was resumed); a COG
                is always copied.
            verify: raises ``OSError``/``RasterioError`` unless the partial file at the given path
                reads back as written (e.g. against digests recorded while writing).

        Raises:
            OutputError: the product cannot be written (a full disk is said); the partial file
                is kept for ``--resume``.
        """
        if self._committed:
            return self.path
        self._close()
        if self.path.exists() and not self.overwrite:
            raise OutputError(f"{self.path} appeared while writing; pass --overwrite to replace it")
        if not (self.cog or (self.resumed if compact is None else compact)):
            try:
                (verify or _read_back)(self.partial_path)
                os.replace(self.partial_path, self.path)
            except (RasterioError, OSError) as exc:
                raise OutputError(_write_failure(self.path, exc, kept=True)) from None
        else:
            self._compact()
        self._committed = True
        return self.path

    def _compact(self) -> None:
        """Copy the partial file into a compact product (a COG when asked), verify, rename."""
        staging = self.path.parent / f".{self.path.name}.final.tif"
        codec = {
            k.upper(): v
            for k, v in creation_options(self.compression, self.compress_level, self.dtype).items()
        }
        if self.cog:
            level = codec.pop(LEVEL_OPTION.get(self.compression, ""), None)
            layout = {
                "driver": "COG",
                "BLOCKSIZE": BLOCK_SIZE,
                "RESAMPLING": "AVERAGE",
                "OVERVIEWS": "AUTO",
                "COMPRESS": codec["COMPRESS"],
                **({"PREDICTOR": "YES"} if "PREDICTOR" in codec else {}),
                **({"LEVEL": level} if level is not None else {}),
            }
        else:
            layout = {
                "driver": "GTiff",
                "TILED": "YES",
                "BLOCKXSIZE": BLOCK_SIZE,
                "BLOCKYSIZE": BLOCK_SIZE,
                **codec,
            }
        try:
            rasterio.shutil.copy(
                self.partial_path, staging, BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS", **layout
            )
            # GDAL reports some write errors (a full disk among them) only as log lines, and
            # rasterio.shutil.copy returns as if all went well: read the copy back and compare
            # every band with the partial file before anything is renamed into place.
            _verify_copy(self.partial_path, staging)
            os.replace(staging, self.path)
            self.partial_path.unlink()
        except (RasterioError, OSError) as exc:
            staging.unlink(missing_ok=True)
            raise OutputError(_write_failure(self.path, exc, kept=True)) from None

    def abort(self) -> None:
        """Close the partial file and leave it in place for ``resume=True``."""
        self._close()

    def _close(self) -> None:
        if self._dataset is not None and not self._dataset.closed:
            try:
                self._dataset.close()
            except (RasterioError, OSError) as exc:
                raise OutputError(_write_failure(self.partial_path, exc)) from None

    def __enter__(self) -> ProductWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
