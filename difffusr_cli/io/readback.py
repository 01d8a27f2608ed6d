"""Reading a written product back, and the one-line message of a failed write."""

from __future__ import annotations

import os
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError


class _CopyMismatch(OSError):
    """The final copy does not read back as the partial file (a failed write)."""


def _verify_copy(source: Path, copy: Path) -> None:
    """Raise :class:`_CopyMismatch` unless ``copy`` reads back with ``source``'s pixels.

    Compares GDAL's per-band checksum (which reads every block) of both files.
    """
    try:
        with rasterio.open(source) as a, rasterio.open(copy) as b:
            same = (a.count, a.width, a.height) == (b.count, b.width, b.height) and all(
                a.checksum(i) == b.checksum(i) for i in range(1, a.count + 1)
            )
    except (RasterioError, OSError) as exc:
        raise _CopyMismatch(f"the written copy does not read back ({_first_line(exc)})") from None
    if not same:
        raise _CopyMismatch("the written copy does not read back as the partial file")


def _read_back(path: Path) -> None:
    """Decode every tile of ``path`` (GDAL's per-band checksum); raises when one does not."""
    with rasterio.open(path, NUM_THREADS="ALL_CPUS") as ds:
        for i in range(1, ds.count + 1):
            ds.checksum(i)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _write_failure(path: Path, exc: BaseException, *, kept: bool = False) -> str:
    """One line for a failed final write, saying so when the disk is full."""
    try:
        st = os.statvfs(path.parent)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = -1
    full = "No space left" in str(exc) or getattr(exc, "errno", None) == 28 or 0 <= free < 2**20
    reason = "no space left on the device" if full else _first_line(exc)
    if not kept:
        return f"cannot write {path}: {reason}"
    return (
        f"cannot write {path}: {reason}; the partial file and progress record are kept, "
        "rerun with --resume once the problem is fixed"
    )
