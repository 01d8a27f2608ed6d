"""The example product in other formats: single-band COGs and a STAC item over them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import rasterio
import rasterio.shutil
from rasterio.warp import transform as warp_transform

from difffusr_cli.bands import BY_NAME
from difffusr_cli.example.synthetic import EXAMPLE_SENSING
from difffusr_cli.io.scene import Scene, open_scene

# -- the same product in other formats -------------------------------------------------------
CogNaming = Literal["band", "earth-search", "long"]


def write_example_cogs(
    source: Scene | str | Path, directory: str | Path, *, naming: CogNaming = "band"
) -> Path:
    """Store a product's bands as single-band COGs carrying its DN convention as scale/offset.

    Args:
        source: a ``Scene`` or anything :func:`~difffusr_cli.io.scene.open_scene` opens.
        directory: output folder (created if needed).
        naming: ``"band"`` (``B02.tif``), ``"earth-search"`` (``blue.tif``) or ``"long"``
            (``T32TMT_20230615T102021_B02_10m.tif``).

    Returns:
        The folder. Pixels are the source's DN, unchanged, with nodata 0.
    """
    scene = source if isinstance(source, Scene) else open_scene(source)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in scene.found_bands:
        src = scene.bands[name]
        assert src.path is not None
        with rasterio.open(src.path) as ds:
            dn = ds.read(src.bidx)
            crs = ds.crs
        if naming == "earth-search":
            filename = f"{BY_NAME[name].earth_search_asset}.tif"
        elif naming == "long":
            stamp = "".join(ch for ch in (scene.datetime or "")[:19] if ch.isdigit() or ch == "T")
            prefix = f"{scene.tile or 'T00XXX'}_{stamp or EXAMPLE_SENSING}"
            filename = f"{prefix}_{name}_{int(BY_NAME[name].gsd)}m.tif"
        else:
            filename = f"{name}.tif"
        staging = f"/vsimem/difffusr-example-{name}.tif"
        with rasterio.open(
            staging,
            "w",
            driver="GTiff",
            width=src.width,
            height=src.height,
            count=1,
            dtype=dn.dtype,
            crs=crs,
            transform=src.transform,
            nodata=0,
        ) as dst:
            dst.write(dn, 1)
            dst.descriptions = (name,)
            dst.scales = (scene.radiometry.scale[name],)
            dst.offsets = (scene.radiometry.offset[name],)
            dst.update_tags(PRODUCT_ID=scene.product_id)
        rasterio.shutil.copy(
            staging, directory / filename, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES"
        )
        rasterio.shutil.delete(staging)
    return directory


def write_example_stac(cog_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write a STAC item (``item.json`` in ``cog_dir`` by default) whose assets are the COGs.

    Asset keys are band ids, hrefs relative to the JSON, and each asset's ``raster:bands``
    carries the files' scale/offset.
    """
    cog_dir = Path(cog_dir)
    path = Path(path) if path is not None else cog_dir / "item.json"
    scene = open_scene(cog_dir)
    try:
        assets = {}
        for name in scene.found_bands:
            src = scene.bands[name]
            assert src.path is not None and src.transform is not None
            href = Path(src.path).resolve()
            try:
                href_text = "./" + href.relative_to(path.parent.resolve()).as_posix()
            except ValueError:
                href_text = str(href)
            b = BY_NAME[name]
            assets[name] = {
                "href": href_text,
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "gsd": b.gsd,
                "eo:bands": [
                    {
                        "name": name,
                        "common_name": b.common_name,
                        "center_wavelength": b.wavelength_nm / 1000,
                    }
                ],
                "proj:shape": [src.height, src.width],
                "proj:transform": list(src.transform)[:6],
                "raster:bands": [
                    {
                        "data_type": src.dtype,
                        "nodata": 0,
                        "scale": scene.radiometry.scale[name],
                        "offset": scene.radiometry.offset[name],
                        "spatial_resolution": b.gsd,
                    }
                ],
            }
        left, bottom, right, top = scene.bounds
        lons, lats = warp_transform(
            scene.crs, "EPSG:4326", [left, right, right, left], [bottom, bottom, top, top]
        )
        ring = [[lon, lat] for lon, lat in zip(lons, lats, strict=True)]
        item = {
            "type": "Feature",
            "stac_version": "1.0.0",
            "stac_extensions": [
                "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            ],
            "id": scene.product_id,
            "bbox": [min(lons), min(lats), max(lons), max(lats)],
            "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]},
            "properties": {
                "datetime": scene.datetime,
                "platform": "sentinel-2b",
                "constellation": "sentinel-2",
                "processing:level": scene.processing_level,
                "s2:mgrs_tile": (scene.tile or "")[1:] or None,
                "s2:processing_baseline": scene.processing_baseline,
                "proj:epsg": scene.crs.to_epsg() if scene.crs else None,
            },
            "links": [],
            "assets": assets,
        }
    finally:
        scene.close()
    path.write_text(json.dumps(item, indent=2))
    return path
