"""Format dispatch and band discovery.

Which reader recognises a path (SAFE, COG folder, STAC item, multi-band GeoTIFF), and opening and
checking every band file it names.
"""

from __future__ import annotations

from pathlib import Path

from rasterio.io import DatasetReader

from difffusr_cli.bands import BAND_NAMES, BANDS, GROUPS
from difffusr_cli.errors import InputError
from difffusr_cli.io.cogs import find_band_files
from difffusr_cli.io.geotiff import (
    RASTER_SUFFIXES,
    RasterGrid,
    described_bands,
    file_scale_offset,
    grid_of,
    open_raster,
    probe,
)
from difffusr_cli.io.grids import check_nesting, reference_grid
from difffusr_cli.io.radiometry import L2A_QUANTIFICATION, default_offset_dn
from difffusr_cli.io.safe import looks_like_safe, parse_product_id, read_safe
from difffusr_cli.io.sources import BandSource, Discovered
from difffusr_cli.io.stac import looks_like_stac, read_stac_item


def discover(path: Path) -> Discovered:
    """Recognise the format of ``path`` and list its band files and declared metadata.

    Args:
        path: an existing ``.SAFE`` folder or ``.zip``, ``MTD_MSIL2A.xml``, folder of band
            rasters, STAC item JSON, or multi-band GeoTIFF with band descriptions.

    Returns:
        What the format reader found; no band file has been opened yet.

    Raises:
        InputError: the path is not a recognised input, or a multi-band GeoTIFF names no band.
    """
    if looks_like_safe(path):
        safe = read_safe(path)
        declared: dict[str, tuple[float, float]] = {}
        quant = safe.quantification if safe.quantification else L2A_QUANTIFICATION
        if safe.offsets_dn:
            offsets = safe.offsets_dn
            source = "MTD_MSIL2A.xml (BOA_QUANTIFICATION_VALUE, BOA_ADD_OFFSET)"
        else:
            default = default_offset_dn(safe.processing_baseline)
            offsets = {}
            source = (
                f"MTD_MSIL2A.xml (BOA_QUANTIFICATION_VALUE; no BOA_ADD_OFFSET list, "
                f"offset {default:g} DN for baseline {safe.processing_baseline})"
            )
        if not safe.quantification:
            source += f"; quantification {L2A_QUANTIFICATION:g} assumed (none in the metadata)"
        for b in BANDS:
            off_dn = offsets.get(b.name, default_offset_dn(safe.processing_baseline))
            declared[b.name] = (1.0 / quant, off_dn / quant)
        return Discovered(
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
        return Discovered(
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
        return Discovered(
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
        return Discovered(
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


def fill_metadata_from_tags(found: Discovered, dataset: DatasetReader) -> None:
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


def open_bands(
    found: Discovered, handles: dict[str, DatasetReader]
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
            fill_metadata_from_tags(found, handles[gdal_path])
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

    ref_name, reference = reference_grid(found, grids)
    sources: dict[str, BandSource] = {}
    for name in BAND_NAMES:
        if name not in grids:
            sources[name] = BandSource(name, None, False)
            continue
        ratio = (
            1
            if found.kind == "geotiff"
            else check_nesting(found, name, grids[name], ref_name, reference)
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
