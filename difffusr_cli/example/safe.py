"""The example product as an L2A SAFE: JPEG 2000 band files named and laid out as ESA's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from difffusr_cli.bands import BY_NAME
from difffusr_cli.example.metadata import product_metadata, tile_metadata
from difffusr_cli.example.synthetic import (
    _SCL,
    EXAMPLE_BASELINE,
    EXAMPLE_EPSG,
    EXAMPLE_GENERATION,
    EXAMPLE_ORIGIN,
    EXAMPLE_SENSING,
    EXAMPLE_TILE,
    _area_mean,
    _mode,
    _nodata_mask,
    _to_dn,
    synthetic_reflectance,
)

# Resolutions each band is delivered at in a real L2A product (native first).
_DELIVERED = {
    10: ("B02", "B03", "B04", "B08"),
    20: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12"),
    60: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B09", "B11", "B12"),
}


def _write_jp2(path: Path, array: np.ndarray, transform: Affine) -> None:
    with rasterio.open(
        path,
        "w",
        driver="JP2OpenJPEG",
        width=array.shape[1],
        height=array.shape[0],
        count=1,
        dtype=array.dtype,
        crs=f"EPSG:{EXAMPLE_EPSG}",
        transform=transform,
        QUALITY=100,
        REVERSIBLE=True,
    ) as dst:
        dst.write(array, 1)


def make_example_safe(directory: str | Path, *, size: int = 192, seed: int = 0) -> Path:
    """Write the synthetic L2A SAFE into ``directory`` and return the ``.SAFE`` folder.

    Args:
        directory: an existing folder to create the product in.
        size: width and height of the 10 m grid in pixels; a multiple of 6 (so 20 m and 60 m
            grids nest exactly).
        seed: content seed; the same seed gives the same pixels.
    """
    if size <= 0 or size % 6:
        raise ValueError(f"size must be a positive multiple of 6, got {size}")
    directory = Path(directory)
    baseline = EXAMPLE_BASELINE.replace(".", "")
    product = f"S2B_MSIL2A_{EXAMPLE_SENSING}_N{baseline}_R065_{EXAMPLE_TILE}_{EXAMPLE_GENERATION}"
    safe = directory / f"{product}.SAFE"
    granule_id = f"L2A_{EXAMPLE_TILE}_A033018_{EXAMPLE_SENSING}"
    granule = safe / "GRANULE" / granule_id
    stem = f"{EXAMPLE_TILE}_{EXAMPLE_SENSING}"

    reflectance, classes = synthetic_reflectance(size, seed)
    nodata10 = _nodata_mask(size)
    base = Affine(10.0, 0.0, EXAMPLE_ORIGIN[0], 0.0, -10.0, EXAMPLE_ORIGIN[1])
    image_files: list[str] = []
    for gsd, names in _DELIVERED.items():
        folder = granule / "IMG_DATA" / f"R{gsd}m"
        folder.mkdir(parents=True, exist_ok=True)
        factor = gsd // 10
        nodata = _area_mean(nodata10.astype(np.float32), factor) > 0
        for name in names:
            native = int(BY_NAME[name].gsd) // 10
            # Sensed at the native grid; coarser deliveries average it, finer ones repeat it.
            sensed = _area_mean(reflectance[BY_NAME[name].index], native)
            if factor >= native:
                values = _area_mean(sensed, factor // native)
            else:
                values = np.kron(sensed, np.ones((native // factor,) * 2, dtype=np.float32))
            rel = f"GRANULE/{granule_id}/IMG_DATA/R{gsd}m/{stem}_{name}_{gsd}m"
            _write_jp2(safe / f"{rel}.jp2", _to_dn(values, nodata), base @ Affine.scale(factor))
            image_files.append(rel)
        if gsd in (20, 60):
            scl = _SCL[_mode(classes, gsd // 10)]
            scl[nodata] = 0
            rel = f"GRANULE/{granule_id}/IMG_DATA/R{gsd}m/{stem}_SCL_{gsd}m"
            _write_jp2(safe / f"{rel}.jp2", scl, base @ Affine.scale(gsd // 10))
            image_files.append(rel)

    (safe / "MTD_MSIL2A.xml").write_text(
        product_metadata(product, granule_id, image_files, base, size, float(nodata10.mean()))
    )
    (granule / "MTD_TL.xml").write_text(tile_metadata(base, size))
    (granule / "QI_DATA").mkdir(exist_ok=True)
    (granule / "AUX_DATA").mkdir(exist_ok=True)
    (safe / "DATASTRIP").mkdir(exist_ok=True)
    return safe
