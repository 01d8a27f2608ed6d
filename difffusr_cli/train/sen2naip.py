"""SEN2NAIP v1 as published: ``synthetic_NN.zip`` shards read in place, or their extracted trees.

The Hugging Face dataset ``isp-uv-es/SEN2NAIP`` ships its synthetic set as ``synthetic/
synthetic_NN.zip`` shards (about 10 GB each). Inside a shard::

    synthetic_N/ROI_XXXX/early/<NN>__<naip name>.tif     HR only: 1100 × 1100, 4-band uint8
    synthetic_N/ROI_XXXX/early/metadata.json             R, G, B, NIR at 2.5 m; sim_histograms
    synthetic_N/ROI_XXXX/late/...

A shard is read where it lies, through GDAL's ``/vsizip/`` (nothing is extracted); an extracted
tree (``ROI_*/{early,late}/*.tif``) is read the same way from the file system. Bands 1, 2, 3 are
R, G, B (NIR is not used); tiles of any size are accepted (the published size is 1100 px).

``sim_histograms`` (:func:`parse_sim_histograms`): the per-era reference histograms the dataset
ships for harmonisation by histogram matching. Their exact JSON structure could not be checked
offline; the accepted forms are documented in docs/training.md and in that function.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from difffusr_cli.bands import OUTPUT_GSD
from difffusr_cli.errors import InputError
from difffusr_cli.train.hr_data import HRDataset, HRImage, file_gsd, rgb_band_indexes

#: ``…/ROI_XXXX/{early,late}/<file>``: the two folders above a tile or its metadata.
_MEMBER = re.compile(r"(?:^|/)(ROI_[^/]+)/(early|late)/([^/]+)$", re.IGNORECASE)
_ROI_FOLDER = re.compile(r"(?:^|/)ROI_[^/]+/", re.IGNORECASE)
_SHARD_NUMBER = re.compile(r"synthetic_0*(\d+)\.zip$", re.IGNORECASE)
_TIFF = (".tif", ".tiff")
#: Band-name keys accepted for R, G, B in a ``sim_histograms`` mapping.
_BAND_KEYS = (("red", "r", "b04"), ("green", "g", "b03"), ("blue", "b", "b02"))
LAYOUT = "synthetic_N/ROI_XXXX/{early,late}/NN__name.tif"


@dataclass(frozen=True)
class Histogram:
    """Reference histograms of R, G, B for histogram matching.

    Attributes:
        counts: ``(3, N)`` float64 bin counts.
        edges: ``(3, N + 1)`` float64 ascending bin edges, reflectance.
    """

    counts: np.ndarray
    edges: np.ndarray


@dataclass(frozen=True)
class Tile:
    """One HR tile of SEN2NAIP v1.

    Attributes:
        shard: the shard it comes from (zip name, or the extracted tree's top folder).
        roi: ``ROI_XXXX``.
        era: ``early`` or ``late``.
        path: a readable display path (``shard.zip/member`` for zipped tiles).
        uri: what GDAL opens (``/vsizip/…`` or the file).
        histogram: the era's ``sim_histograms`` (None: no ``metadata.json`` or no histograms).
    """

    shard: str
    roi: str
    era: str
    path: Path
    uri: str
    histogram: Histogram | None


def shard_number(path: str | Path) -> int | None:
    """``synthetic_07.zip`` → 7; None for other names."""
    match = _SHARD_NUMBER.search(str(path))
    return int(match.group(1)) if match else None


def looks_like_v1(root: Path) -> bool:
    """True when ``root`` is a shard, or a folder holding shards or extracted ROI trees."""
    if root.is_file():
        return root.suffix.lower() == ".zip"
    if not root.is_dir():
        return False
    if any(root.rglob("*.zip")):
        return True
    return any(_MEMBER.search(p.absolute().as_posix()) for p in root.rglob("*.tif*"))


def find_tiles(sources: Sequence[Path], shards: Sequence[int] | None = None) -> list[Tile]:
    """Every tile of the given shards, folders of shards or extracted trees, in sorted order.

    Args:
        sources: zip shards, folders holding shards (searched recursively), or extracted trees.
        shards: keep only these shard numbers (``synthetic_NN.zip``); None: all.

    Raises:
        InputError: a missing path, an unreadable zip, a zip or folder without ROI folders or
            without tiles, a ``metadata.json`` that is not JSON, or no shard of ``shards``.
    """
    tiles: list[Tile] = []
    for source in sources:
        if not source.exists():
            raise InputError(f"--data-dir {source}: does not exist")
        if source.is_file():
            zips = [source]
            trees: list[Path] = []
        else:
            zips = sorted(source.rglob("*.zip"))
            trees = [source]
        any_zip = bool(zips)
        if shards is not None:
            zips = [z for z in zips if shard_number(z) in shards]
        for shard in zips:
            tiles += _zip_tiles(shard)
        for tree in trees:
            tiles += _tree_tiles(tree, required=not any_zip)
    if shards is not None and not tiles:
        raise InputError(
            f"--shards {','.join(map(str, shards))}: no synthetic_NN.zip with those numbers in "
            + ", ".join(map(str, sources))
        )
    return tiles


def _zip_tiles(shard: Path) -> list[Tile]:
    try:
        with zipfile.ZipFile(shard) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            metadata = {
                m.group(1, 2): _read_json(archive.read(name), f"{shard}!{name}")
                for name in names
                if (m := _MEMBER.search(name)) and m.group(3).lower() == "metadata.json"
            }
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{shard}: not a readable zip file ({exc})") from None
    if not any(_ROI_FOLDER.search(n) for n in names):
        raise InputError(f"{shard}: no ROI_* folders inside; a SEN2NAIP v1 shard holds {LAYOUT}")
    tiles = []
    # braces: GDAL finds the archive's end without relying on a .zip suffix (Hub cache blobs)
    absolute = shard.absolute()
    for name in sorted(names):
        match = _MEMBER.search(name)
        if not match or PurePosixPath(name).suffix.lower() not in _TIFF:
            continue
        roi, era, _ = match.groups()
        tiles.append(
            Tile(
                shard=shard.name,
                roi=roi,
                era=era.lower(),
                path=shard / name,
                uri=f"/vsizip/{{{absolute.as_posix()}}}/{name}",
                histogram=_era_histogram(metadata.get((roi, era)), f"{shard}!{name}"),
            )
        )
    if not tiles:
        raise InputError(
            f"{shard}: ROI_* folders but no early/ or late/ GeoTIFF tiles (expected {LAYOUT})"
        )
    return tiles


def _tree_tiles(tree: Path, *, required: bool) -> list[Tile]:
    found = sorted(
        (p, m)
        for p in tree.rglob("*")
        if p.is_file() and (m := _MEMBER.search(p.absolute().as_posix()))
    )
    tiles = []
    metadata_of: dict[Path, Any] = {}
    for path, match in found:
        if path.suffix.lower() not in _TIFF:
            continue
        roi, era, _ = match.groups()
        era_dir = path.parent
        if era_dir not in metadata_of:
            meta_file = era_dir / "metadata.json"
            metadata_of[era_dir] = (
                _read_json(meta_file.read_bytes(), str(meta_file)) if meta_file.is_file() else None
            )
        metadata = metadata_of[era_dir]
        tiles.append(
            Tile(
                shard=era_dir.absolute().parent.parent.name,
                roi=roi,
                era=era.lower(),
                path=path,
                uri=str(path),
                histogram=_era_histogram(metadata, str(path)),
            )
        )
    if required and not tiles:
        if any(p.is_dir() and p.name.upper().startswith("ROI_") for p in tree.rglob("ROI_*")):
            raise InputError(f"{tree}: ROI_* folders but no early/ or late/ GeoTIFF tiles")
        raise InputError(
            f"{tree}: no SEN2NAIP v1 shards (synthetic_NN.zip) and no extracted tiles ({LAYOUT})"
        )
    return tiles


def _read_json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{where}: not valid JSON ({exc})") from None


def _era_histogram(metadata: Any, tile: str) -> Histogram | None:
    if not isinstance(metadata, Mapping) or "sim_histograms" not in metadata:
        return None
    section = metadata["sim_histograms"]
    name = PurePosixPath(tile.replace("!", "/")).name
    # one set of histograms per tile (keyed by file name or stem) or one for the whole era
    if isinstance(section, Mapping):
        for key in (name, PurePosixPath(name).stem):
            if key in section:
                section = section[key]
                break
    return parse_sim_histograms(section, tile)


def parse_sim_histograms(section: Any, where: str) -> Histogram:
    """R, G, B reference histograms from a ``sim_histograms`` entry (assumed structure).

    Accepted (the published structure could not be verified offline):

    - a list with one entry per band in file order R, G, B, NIR (the first three are used), or
      a mapping with keys ``red``/``green``/``blue`` (also ``r``/``g``/``b``, ``B04``/``B03``/
      ``B02``, any case);
    - each band entry a list of bin counts over equal-width bins spanning [0, 1] reflectance, or
      a mapping with ``counts`` (or ``hist``/``histogram``) and ``bin_edges`` (or ``edges``/
      ``bins``).

    Edges up to 1.5 are reflectance, up to 255.5 uint8 digital numbers (÷ 255), larger ones
    reflectance × 10000.

    Raises:
        InputError: none of these forms, or counts and edges that do not fit.
    """
    bands: list[Any]
    if isinstance(section, Mapping):
        lowered = {str(k).lower(): v for k, v in section.items()}
        picked = [next((lowered[k] for k in keys if k in lowered), None) for keys in _BAND_KEYS]
        if any(b is None for b in picked):
            raise InputError(
                f"{where}: sim_histograms has keys {', '.join(map(str, section))}; expected "
                "red, green, blue (or a list R, G, B, NIR)"
            )
        bands = picked
    elif isinstance(section, list) and len(section) >= 3:
        bands = section[:3]
    else:
        raise InputError(f"{where}: sim_histograms must hold R, G, B histograms")
    counts, edges = zip(*(_band_histogram(b, where) for b in bands), strict=True)
    if len({c.size for c in counts}) != 1:
        raise InputError(f"{where}: sim_histograms bands have different bin counts")
    return Histogram(counts=np.stack(counts), edges=np.stack(edges))


def _band_histogram(entry: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(entry, Mapping):
        raw_counts = next((entry[k] for k in ("counts", "hist", "histogram") if k in entry), None)
        raw_edges = next((entry[k] for k in ("bin_edges", "edges", "bins") if k in entry), None)
    else:
        raw_counts, raw_edges = entry, None
    try:
        counts = np.asarray(raw_counts, dtype=np.float64).reshape(-1)
        edges = (
            np.linspace(0.0, 1.0, counts.size + 1)
            if raw_edges is None
            else np.asarray(raw_edges, dtype=np.float64).reshape(-1)
        )
    except (TypeError, ValueError):
        raise InputError(f"{where}: sim_histograms entries must be lists of numbers") from None
    good = (
        counts.size >= 1
        and edges.size == counts.size + 1
        and np.isfinite(counts).all()
        and np.isfinite(edges).all()
        and (counts >= 0).all()
        and counts.sum() > 0
        and (np.diff(edges) >= 0).all()
    )
    if not good:
        raise InputError(
            f"{where}: sim_histograms needs N >= 1 non-negative counts and N + 1 ascending edges"
        )
    top = float(edges[-1])
    scale = 1.0 if top <= 1.5 else (1 / 255 if top <= 255.5 else 1 / 10000)
    return counts, edges * scale


def probe_tile(tile: Tile) -> tuple[int, int, float, tuple[int, int, int]]:
    """``(width, height, pixel size m, R/G/B band indexes)`` of a tile, checked.

    Raises:
        InputError: unreadable, not 3 or 4 bands, not uint8, or coarser than 2.5 m.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tile.uri) as src:
                count, dtype = src.count, src.dtypes[0]
                rgb = rgb_band_indexes(src.descriptions, src.colorinterp)
                gsd = file_gsd(src) or OUTPUT_GSD
                width, height = src.width, src.height
    except (RasterioIOError, OSError) as exc:
        raise InputError(f"{tile.path}: unreadable GeoTIFF ({exc})") from None
    if count not in (3, 4):
        raise InputError(
            f"{tile.path}: has {count} band(s); SEN2NAIP HR tiles have 4 (R, G, B, NIR)"
        )
    if dtype != "uint8":
        raise InputError(f"{tile.path}: data type {dtype}; SEN2NAIP HR tiles are uint8")
    if gsd > OUTPUT_GSD * 1.01:
        raise InputError(f"{tile.path}: pixel size {gsd:g} m is coarser than {OUTPUT_GSD} m")
    return width, height, gsd, rgb


def summary_line(where: str, tiles: Sequence[Tile]) -> str:
    """One line: shards, ROIs, tiles per era, eras with ``sim_histograms``."""
    shards = sorted({t.shard for t in tiles})
    rois = {(t.shard, t.roi) for t in tiles}
    eras = {(t.shard, t.roi, t.era): t.histogram is not None for t in tiles}
    per_era = ", ".join(f"{era} {sum(t.era == era for t in tiles)}" for era in ("early", "late"))
    return (
        f"SEN2NAIP v1 in {where}: {len(shards)} shard(s) ({', '.join(shards)}), {len(rois)} "
        f"ROI(s), {len(tiles)} tile(s) ({per_era}); sim_histograms for {sum(eras.values())} of "
        f"{len(eras)} ROI era(s)"
    )


def open_v1(
    sources: Sequence[Path], where: str, *, min_size: int, shards: Sequence[int] | None = None
) -> HRDataset:
    """The tiles of SEN2NAIP v1 sources as an :class:`~difffusr_cli.train.hr_data.HRDataset`.

    Args:
        sources: shards, folders of shards or extracted trees.
        where: how the summary names them (a folder, or ``repo@commit``).
        min_size: smallest usable tile side at 2.5 m; smaller tiles are skipped.
        shards: keep only these shard numbers.

    Raises:
        InputError: see :func:`find_tiles` and :func:`probe_tile`; no tile large enough.
    """
    tiles = find_tiles(sources, shards)
    images: list[HRImage] = []
    skipped: list[str] = []
    for tile in tiles:
        width, height, gsd, rgb = probe_tile(tile)
        factor = gsd / OUTPUT_GSD
        image = HRImage(
            path=tile.path,
            rgb_bands=rgb,
            value_scale=1 / 255,
            gsd=gsd,
            width=max(1, round(width * factor)),
            height=max(1, round(height * factor)),
            uri=tile.uri,
            histogram=tile.histogram,
        )
        if min(image.width, image.height) < min_size:
            skipped.append(f"{tile.path.name}: {image.width}×{image.height} px, under {min_size}")
            continue
        images.append(image)
    if not images:
        raise InputError(
            f"{where}: none of the {len(tiles)} SEN2NAIP tile(s) is at least {min_size} px "
            f"(first: {skipped[0]}); use a smaller --patch-size"
        )
    root = sources[0] if len(sources) == 1 else Path(where)
    return HRDataset(
        kind="sen2naip",
        root=root,
        images=tuple(images),
        skipped=tuple(skipped),
        layout=(summary_line(where, tiles),),
    )
