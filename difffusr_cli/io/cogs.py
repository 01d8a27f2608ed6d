"""A folder of single-band GeoTIFF/COG (or JPEG 2000) files named by band.

Recognised file names (case-insensitive, any of ``.tif .tiff .jp2 .vrt``):

- the band id alone: ``B02.tif``, ``B8A.tif``, ``B2.tif``;
- the band id as the last ``_``-separated field, optionally followed by the resolution:
  ``T33UUB_20170527T102031_B02.tif``, ``T33UUB_20170527T102031_B02_10m.jp2``;
- Element 84 Earth Search asset names: ``blue.tif``, ``nir08.tif``, ``swir16.tif`` …

Other files (SCL, AOT, TCI, JSON, …) are ignored. When two files name the same band, the one whose
``_NNm`` suffix equals the band's native resolution wins; otherwise the folder is ambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from difffusr_cli.bands import BY_NAME
from difffusr_cli.errors import InputError
from difffusr_cli.io.geotiff import RASTER_SUFFIXES, band_from_name

_SUFFIXED = re.compile(r"(?:^|_)(?P<band>[A-Za-z][A-Za-z0-9]*)(?:_(?P<res>\d+)m)?$")


@dataclass(frozen=True)
class BandFolder:
    """Band files found in a folder.

    Attributes:
        path: the folder.
        band_files: band name → file path (only the bands found).
    """

    path: Path
    band_files: dict[str, Path]


def band_of_file(path: Path) -> tuple[str, int | None] | None:
    """``(band name, resolution in metres or None)`` a file name denotes, or None."""
    if path.suffix.lower() not in RASTER_SUFFIXES:
        return None
    stem = path.stem
    direct = band_from_name(stem)
    if direct is not None:
        return direct, None
    match = _SUFFIXED.search(stem)
    if match is None:
        return None
    name = band_from_name(match.group("band"))
    if name is None:
        return None
    res = match.group("res")
    return name, int(res) if res else None


def find_band_files(folder: Path) -> BandFolder:
    """Find the band files in ``folder`` (not recursive).

    Raises:
        InputError: no file names a band, or two files name one band with no way to choose.
    """
    candidates: dict[str, list[tuple[Path, int | None]]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        found = band_of_file(path)
        if found is not None:
            candidates.setdefault(found[0], []).append((path, found[1]))
    if not candidates:
        raise InputError(
            f"no Sentinel-2 band files recognised in {folder} (expected names such as B02.tif, "
            "T33UUB_20170527T102031_B02_10m.tif or Earth Search asset names such as blue.tif)"
        )
    chosen: dict[str, Path] = {}
    for name, files in candidates.items():
        if len(files) == 1:
            chosen[name] = files[0][0]
            continue
        native = [p for p, res in files if res == int(BY_NAME[name].gsd)]
        if len(native) != 1:
            listing = ", ".join(p.name for p, _ in files)
            raise InputError(f"{folder}: several files for band {name} ({listing}); keep only one")
        chosen[name] = native[0]
    return BandFolder(folder, chosen)
