"""Flushing an open GDAL dataset to disk without closing it (rasterio has no ``flush``).

A GeoTIFF reopened in update mode is written with GDAL's default codec level (ZSTD 9, whatever
the file was created with): five times slower than ZSTD 1. The product is therefore written in
one session, and each finished block is made durable and readable by other handles with
``GDALFlushCache`` through ctypes on the ``libgdal`` rasterio loaded. Where that library cannot
be found, :func:`gdal_flusher` returns None and the writer closes and reopens the file instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
from collections.abc import Callable

import rasterio


def bundled_libraries(stem: str) -> list[str]:
    """Paths of the shared libraries named ``stem*`` that rasterio's wheel bundles (may be none)."""
    here = os.path.dirname(rasterio.__file__)
    return sorted(glob.glob(os.path.join(here, "..", "rasterio.libs", f"{stem}*")))


@functools.lru_cache(maxsize=1)
def gdal_flusher() -> Callable[[str], bool | None] | None:
    """``flush(description)``, or None without a usable libgdal.

    ``description`` is the path the dataset was opened with; every open dataset of that path is
    flushed (``GDALFlushCache``). The call returns whether all flushes succeeded, or None when
    no such dataset is open in this GDAL.
    """
    found = ctypes.util.find_library("gdal")
    for path in [*bundled_libraries("libgdal"), *([found] if found else [])]:
        try:
            lib = ctypes.CDLL(path)
            get_open, describe, flush = (
                lib.GDALGetOpenDatasets,
                lib.GDALGetDescription,
                lib.GDALFlushCache,
            )
        except (OSError, AttributeError):
            continue
        if _same_gdal(lib):
            break
    else:
        return None
    get_open.argtypes = [
        ctypes.POINTER(ctypes.POINTER(ctypes.c_void_p)),
        ctypes.POINTER(ctypes.c_int),
    ]
    get_open.restype = None
    describe.argtypes, describe.restype = [ctypes.c_void_p], ctypes.c_char_p
    flush.argtypes, flush.restype = [ctypes.c_void_p], ctypes.c_int

    def flush_path(description: str) -> bool | None:
        handles = ctypes.POINTER(ctypes.c_void_p)()
        count = ctypes.c_int()
        get_open(ctypes.byref(handles), ctypes.byref(count))
        target = os.fsencode(description)
        hits = [handles[i] for i in range(count.value) if describe(handles[i]) == target]
        if not hits:
            return None
        return all([flush(h) == 0 for h in hits])

    return flush_path


def _same_gdal(lib: ctypes.CDLL) -> bool:
    """Whether ``lib`` is the GDAL rasterio runs on (same version), so its datasets are ours."""
    try:
        version = lib.GDALVersionInfo
        version.argtypes, version.restype = [ctypes.c_char_p], ctypes.c_char_p
        text = version(b"RELEASE_NAME")
    except AttributeError:
        return False
    return bool(text) and text.decode().startswith(rasterio.__gdal_version__.split("e")[0])
