"""A STAC item JSON whose assets are the band files.

An asset is a band when its key is a band id or an Earth Search asset name (``B02``, ``blue``,
``nir08``) or, failing that, when it carries exactly one ``eo:bands`` entry whose ``name`` is one.
``href`` may be relative to the JSON file, absolute, a ``file://`` URL, an ``http(s)://`` URL
(read through GDAL's ``/vsicurl/``) or ``s3://`` (``/vsis3/``).

Radiometry comes from each asset's ``raster:bands[0]`` ``scale``/``offset``
(reflectance = DN·scale + offset). When the item says the BOA offset was already applied to the
pixels (``earthsearch:boa_offset_applied`` or ``sentinel:boa_offset_applied`` true), the offset
is taken as 0 whatever ``raster:bands`` says: Earth Search items have been published with both.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from difffusr_cli.errors import InputError
from difffusr_cli.io.geotiff import band_from_name
from difffusr_cli.io.safe import parse_product_id

_OFFSET_APPLIED_KEYS = ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")


@dataclass(frozen=True)
class StacItem:
    """What a STAC item says about a Sentinel-2 product.

    Attributes:
        path: the JSON file.
        item_id: the item's ``id``.
        band_files: band name → GDAL path, for the band assets found.
        declared: band name → ``(scale, offset)`` from ``raster:bands`` (only bands that declare
            a scale or an offset).
        radiometry_source: how ``declared`` was derived, for reports.
        datetime, tile, processing_baseline, processing_level: from the properties (None if
            absent).
    """

    path: Path
    item_id: str
    band_files: dict[str, str] = field(default_factory=dict)
    declared: dict[str, tuple[float, float]] = field(default_factory=dict)
    radiometry_source: str = ""
    datetime: str | None = None
    tile: str | None = None
    processing_baseline: str | None = None
    processing_level: str | None = None


def looks_like_stac(path: Path) -> bool:
    """True for a JSON file (read as a STAC item)."""
    return path.is_file() and path.suffix.lower() in (".json", ".geojson")


def _href_to_gdal(href: str, base: Path) -> str:
    parsed = urlparse(href)
    if parsed.scheme in ("http", "https"):
        return "/vsicurl/" + href
    if parsed.scheme == "s3":
        return f"/vsis3/{parsed.netloc}{parsed.path}"
    if parsed.scheme == "file":
        return unquote(parsed.path)
    candidate = Path(href)
    return str(candidate if candidate.is_absolute() else (base / candidate).resolve())


def _asset_band(key: str, asset: dict) -> str | None:
    name = band_from_name(key)
    if name is not None:
        return name
    eo_bands = asset.get("eo:bands") or []
    if len(eo_bands) == 1 and isinstance(eo_bands[0], dict):
        return band_from_name(eo_bands[0].get("name"))
    return None


def read_stac_item(path: Path) -> StacItem:
    """Read a STAC item and locate its band assets.

    Raises:
        InputError: not JSON, not a STAC item, or no asset is a Sentinel-2 band.
    """
    try:
        item = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path}: not a JSON file ({exc})") from None
    if not isinstance(item, dict) or not isinstance(item.get("assets"), dict):
        raise InputError(f"{path} is not a STAC item (no 'assets' object)")
    props = item.get("properties") or {}

    offset_applied = next((props[k] for k in _OFFSET_APPLIED_KEYS if k in props), None)
    band_files: dict[str, str] = {}
    declared: dict[str, tuple[float, float]] = {}
    for key, asset in item["assets"].items():
        if not isinstance(asset, dict) or "href" not in asset:
            continue
        name = _asset_band(key, asset)
        if name is None or name in band_files:
            continue
        href = asset["href"]
        if not isinstance(href, str) or not href.strip():
            raise InputError(
                f"{path}: asset {key!r} (band {name}) has no usable href ({json.dumps(href)})"
            )
        band_files[name] = _href_to_gdal(href, path.parent)
        raster_bands = asset.get("raster:bands") or []
        first = raster_bands[0] if raster_bands and isinstance(raster_bands[0], dict) else {}
        if "scale" in first or "offset" in first:
            where = f"{path}: asset {key!r} raster:bands[0]"
            scale = _declared_number(first, "scale", 1.0, where)
            if scale <= 0:
                raise InputError(f"{where}: scale is {scale:g}; expected reflectance per DN > 0")
            offset = _declared_number(first, "offset", 0.0, where)
            declared[name] = (scale, 0.0 if offset_applied else offset)
    if not band_files:
        raise InputError(f"{path}: no STAC asset is a Sentinel-2 band (keys such as B02 or blue)")

    source = "STAC raster:bands scale/offset"
    if offset_applied is not None:
        flag = next(k for k in _OFFSET_APPLIED_KEYS if k in props)
        source += f" ({flag}={str(bool(offset_applied)).lower()}"
        source += ": offset already in the pixels, taken as 0)" if offset_applied else ")"

    parsed = parse_product_id(str(props.get("s2:product_uri", "")) + " " + str(item.get("id", "")))
    return StacItem(
        path=path,
        item_id=str(item.get("id", path.stem)),
        band_files=band_files,
        declared=declared,
        radiometry_source=source,
        datetime=props.get("datetime") or (parsed.datetime if parsed else None),
        tile=_tile(props) or (parsed.tile if parsed else None),
        processing_baseline=_baseline(props) or (parsed.processing_baseline if parsed else None),
        processing_level=props.get("processing:level") or (parsed.level if parsed else None),
    )


def _declared_number(raster_band: dict, key: str, default: float, where: str) -> float:
    """``raster_band[key]`` as a finite number (``default`` when the key is absent).

    Raises:
        InputError: the value is null, a string, a boolean, NaN or infinite.
    """
    if key not in raster_band:
        return default
    value = raster_band[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: {key} is {json.dumps(value)}; expected a number")
    if not math.isfinite(value):
        raise InputError(f"{where}: {key} is {value}; expected a finite number")
    return float(value)


def _tile(props: dict) -> str | None:
    tile = props.get("s2:mgrs_tile") or props.get("sentinel:mgrs_tile")
    if not tile and str(props.get("grid:code", "")).startswith("MGRS-"):
        tile = str(props["grid:code"])[5:]
    if not tile and all(
        k in props for k in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square")
    ):
        zone, band, square = (
            props[k] for k in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square")
        )
        tile = f"{int(zone):02d}{band}{square}"
    if not tile:
        return None
    tile = str(tile)
    return tile if tile.startswith("T") else "T" + tile


def _baseline(props: dict) -> str | None:
    for key in ("s2:processing_baseline", "sentinel:processing_baseline", "processing:version"):
        if props.get(key):
            return str(props[key])
    return None
