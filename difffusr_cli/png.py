"""Write ``(3, H, W)`` uint8 RGB arrays as PNG (used by evaluation quicklooks and training)."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from difffusr_cli.errors import OutputError


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write ``(3, H, W)`` uint8 as an RGB PNG (GDAL's PNG driver copies from a memory GeoTIFF)."""
    staging = f"/vsimem/difffusr-quicklook-{id(rgb)}.tif"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(
                staging,
                "w",
                driver="GTiff",
                width=rgb.shape[2],
                height=rgb.shape[1],
                count=3,
                dtype="uint8",
                photometric="RGB",
            ) as dst:
                dst.write(rgb)
            rasterio.shutil.copy(staging, path, driver="PNG")
    except (RasterioError, OSError) as exc:
        raise OutputError(f"cannot write {path}: {exc}") from None
    finally:
        with contextlib.suppress(RasterioError, OSError):
            rasterio.shutil.delete(staging)
