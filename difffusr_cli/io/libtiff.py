"""Keeping libtiff's own messages off the terminal (rasterio has no handle on them).

GDAL routes most libtiff errors through its error handler, which ``CPL_LOG`` redirects, but
its TIFF I/O layer reports a failed write (``_tiffWriteProc: No space left on device.``) with
libtiff's process-wide handler, whose default prints to stderr. difffusr checks every write
and says what failed in one line, so those lines only repeat it, before it, several times.
:func:`silence_libtiff` clears that handler (and the warning one) in the libtiff that
rasterio's GDAL loaded, through ctypes; where that library cannot be found it does nothing.
"""

from __future__ import annotations

import ctypes
import functools

from difffusr_cli.io.flush import bundled_libraries


@functools.lru_cache(maxsize=1)
def silence_libtiff() -> bool:
    """Clear libtiff's process-wide error and warning handlers; return whether it was done.

    Errors still reach GDAL (and so rasterio's exceptions) through its per-file handlers;
    only the copies printed to stderr go.
    """
    for path in bundled_libraries("libtiff"):
        try:
            lib = ctypes.CDLL(path)  # the copy already loaded by libgdal: same handle
            setters = (lib.TIFFSetErrorHandler, lib.TIFFSetWarningHandler)
        except (OSError, AttributeError):
            continue
        for setter in setters:
            setter.argtypes, setter.restype = [ctypes.c_void_p], ctypes.c_void_p
            setter(None)
        return True
    return False
