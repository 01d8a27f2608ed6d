"""The product's codecs: ``--compress``/``--compress-level`` and their GDAL creation options."""

from __future__ import annotations

import contextlib
import functools
from typing import Literal

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.errors import RasterioError

#: ``--compress`` values: the codec of the product's tiles.
Compression = Literal["zstd", "deflate", "lzw", "none"]
COMPRESSIONS: tuple[str, ...] = ("zstd", "deflate", "lzw", "none")
#: Levels each codec takes (``--compress-level``) and its default: the fastest level, which
#: writes ~5× faster than GDAL's default (ZSTD 9) for files ~13 % larger (docs/superres.md).
COMPRESSION_LEVELS: dict[str, tuple[int, int, int]] = {"zstd": (1, 22, 1), "deflate": (1, 9, 1)}
#: The creation option that carries each codec's level.
LEVEL_OPTION = {"zstd": "ZSTD_LEVEL", "deflate": "ZLEVEL"}


def compression_level(compression: str, level: int | None) -> int | None:
    """The level a product is written with: ``level``, or the codec's default (None: no level).

    Raises:
        ValueError: an unknown codec, or a level outside the codec's range (or for a codec
            without levels); the message names the option.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"--compress {compression!r}: expected one of {', '.join(COMPRESSIONS)}")
    if compression not in COMPRESSION_LEVELS:
        if level is not None:
            raise ValueError(f"--compress-level: --compress {compression} takes no level")
        return None
    low, high, default = COMPRESSION_LEVELS[compression]
    if level is None:
        return default
    if not low <= level <= high:
        raise ValueError(
            f"--compress-level {level}: expected {low} to {high} for --compress {compression}"
        )
    return level


def creation_options(compression: str, level: int | None, dtype: str) -> dict[str, object]:
    """GDAL creation options of a codec: codec, level and predictor (2 uint16, 3 float32).

    ``compression`` is the codec as written (:func:`best_compression` of the one asked).
    """
    if compression == "none":
        return {"compress": "none"}
    options: dict[str, object] = {
        "compress": compression,
        "predictor": 2 if dtype == "uint16" else 3,
    }
    level = compression_level(compression, level)
    if level is not None:
        options[LEVEL_OPTION[compression]] = level
    return options


def best_compression(asked: str = "zstd") -> str:
    """The codec written for ``--compress asked``.

    ``zstd`` falls back to ``deflate`` on a GDAL build without ZSTD; the others are as asked.
    """
    return asked if asked != "zstd" or _zstd_available() else "deflate"


@functools.lru_cache(maxsize=1)
def _zstd_available() -> bool:
    """Whether this GDAL build writes ZSTD."""
    probe = "/vsimem/difffusr-zstd-probe.tif"
    try:
        with rasterio.open(
            probe,
            "w",
            driver="GTiff",
            width=16,
            height=16,
            count=1,
            dtype="uint16",
            compress="zstd",
            # A georeferenced probe: an identity transform makes rasterio warn on stderr.
            crs="EPSG:4326",
            transform=Affine(1.0, 0.0, 0.0, 0.0, -1.0, 16.0),
        ) as dst:
            dst.write(np.zeros((1, 16, 16), dtype="uint16"))
        with rasterio.open(probe) as src:
            ok = src.compression is not None and src.compression.name.lower() == "zstd"
    except (RasterioError, ValueError):
        ok = False
    finally:
        with contextlib.suppress(RasterioError, OSError):
            rasterio.shutil.delete(probe)
    return ok
