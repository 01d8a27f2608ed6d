"""Sentinel-2 L2A SAFE products: a ``.SAFE`` folder, a ``.SAFE.zip`` or a ``MTD_MSIL2A.xml`` path.

Only the product metadata (``MTD_MSIL2A.xml``) and the band files' own georeferencing are used.
GDAL's SENTINEL2 driver is deliberately avoided: it takes raster sizes from the XML and misplaces
cropped products. Band files are found from the product's own file list (``IMAGE_FILE``
entries) and, failing that, by globbing ``GRANULE/*/IMG_DATA/R{10,20,60}m``; each band is taken
from its native-resolution folder (B02 from R10m, never the resampled copy in R60m). Zipped
products are listed with :mod:`zipfile` and their rasters read through GDAL's ``/vsizip/``.
"""

from __future__ import annotations

import fnmatch
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree

from difffusr_cli.bands import BANDS
from difffusr_cli.errors import InputError
from difffusr_cli.io.geotiff import band_from_name

L2A_METADATA = "MTD_MSIL2A.xml"
L1C_METADATA = "MTD_MSIL1C.xml"

# ESA's fixed band_id order in the product metadata (used when Spectral_Information is absent).
_ESA_BAND_IDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")

_PRODUCT_ID = re.compile(
    r"S2[A-D]_MSI(?P<level>L1C|L2A)_(?P<datetime>\d{8}T\d{6})_N(?P<baseline>\d{4})_R\d{3}_"
    r"T(?P<tile>\d{2}[A-Z]{3})_\d{8}T\d{6}"
)


@dataclass(frozen=True)
class ProductId:
    """Fields of an ESA product name such as ``S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_…``.

    Attributes:
        level: ``"L1C"`` or ``"L2A"``.
        datetime: sensing start, ISO 8601 UTC (``"2022-10-05T11:54:11Z"``).
        processing_baseline: ``"04.00"``.
        tile: MGRS tile with its ``T`` prefix (``"T29UNU"``).
    """

    level: str
    datetime: str
    processing_baseline: str
    tile: str


def parse_product_id(text: str) -> ProductId | None:
    """Find an ESA product name anywhere in ``text`` and return its fields, or None."""
    match = _PRODUCT_ID.search(text)
    if match is None:
        return None
    stamp = match.group("datetime")
    iso = f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}Z"
    baseline = match.group("baseline")
    return ProductId(
        match.group("level"), iso, f"{baseline[:2]}.{baseline[2:]}", "T" + match.group("tile")
    )


@dataclass(frozen=True)
class SafeProduct:
    """What a SAFE product says about itself.

    Attributes:
        path: the path the user gave (folder, zip or XML), as a string.
        root: GDAL-readable root of the product (a folder or a ``/vsizip/`` path).
        product_id: product name without ``.SAFE``.
        tile, datetime, processing_baseline, product_type: from the metadata (None if absent).
        quantification: ``BOA_QUANTIFICATION_VALUE`` (None if absent).
        offsets_dn: ``BOA_ADD_OFFSET`` per band name in DN; empty when the list is absent
            (products before baseline 04.00).
        band_files: band name → GDAL path of its native-resolution file, for the bands present.
        scl_file: GDAL path of the 20 m scene classification, if present.
    """

    path: str
    root: str
    product_id: str
    tile: str | None
    datetime: str | None
    processing_baseline: str | None
    product_type: str | None
    quantification: float | None
    offsets_dn: dict[str, float] = field(default_factory=dict)
    band_files: dict[str, str] = field(default_factory=dict)
    scl_file: str | None = None


def looks_like_safe(path: Path) -> bool:
    """True for a path that should be read as a SAFE product (folder, zip or metadata XML)."""
    name = path.name.upper()
    if path.is_file():
        return name in (L2A_METADATA.upper(), L1C_METADATA.upper()) or name.endswith(".ZIP")
    if path.is_dir():
        return (
            name.endswith(".SAFE")
            or (path / L2A_METADATA).is_file()
            or (path / L1C_METADATA).is_file()
        )
    return False


class _Tree:
    """Read-only view of a product's files, whether in a folder or a zip archive."""

    def __init__(self, user_path: Path) -> None:
        self.user_path = user_path
        self._zip: zipfile.ZipFile | None = None
        self._names: list[str] = []
        if user_path.is_file() and user_path.suffix.lower() == ".zip":
            if not zipfile.is_zipfile(user_path):
                raise InputError(f"cannot read {user_path}: not a zip archive")
            try:
                self._zip = zipfile.ZipFile(user_path)
                self._names = [n for n in self._zip.namelist() if not n.endswith("/")]
            except (zipfile.BadZipFile, OSError) as exc:
                raise InputError(f"cannot read {user_path}: {exc}") from None
            self.prefix = self._zip_prefix()
        elif user_path.is_file():
            self.prefix = str(user_path.parent)
        else:
            self.prefix = str(user_path)

    def _zip_prefix(self) -> str:
        candidates = [
            n for n in self._names if PurePosixPath(n).name in (L2A_METADATA, L1C_METADATA)
        ]
        if not candidates:
            raise InputError(
                f"{self.user_path} holds no {L2A_METADATA}: "
                "not a zipped Sentinel-2 L2A SAFE product"
            )
        shallowest = min(candidates, key=lambda n: n.count("/"))
        return str(PurePosixPath(shallowest).parent) if "/" in shallowest else ""

    def _member(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def exists(self, rel: str) -> bool:
        if self._zip is not None:
            return self._member(rel) in self._names
        return (Path(self.prefix) / rel).is_file()

    def read_bytes(self, rel: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(self._member(rel))
            return (Path(self.prefix) / rel).read_bytes()
        except (KeyError, OSError) as exc:
            raise InputError(f"cannot read {self.display(rel)}: {exc}") from None

    def glob(self, pattern: str) -> list[str]:
        """Relative paths matching a ``/``-separated glob pattern, sorted."""
        if self._zip is not None:
            start = len(self.prefix) + 1 if self.prefix else 0
            rels = [n[start:] for n in self._names if n.startswith(self._member(""))]
            return sorted(r for r in rels if fnmatch.fnmatchcase(r, pattern))
        return sorted(
            str(p.relative_to(self.prefix).as_posix()) for p in Path(self.prefix).glob(pattern)
        )

    def gdal_path(self, rel: str) -> str:
        """A path GDAL can open for ``rel``."""
        if self._zip is not None:
            return f"/vsizip/{self.user_path.resolve()}/{self._member(rel)}"
        return str(Path(self.prefix) / rel)

    def display(self, rel: str) -> str:
        if self._zip is not None:
            return f"{self.user_path}:{self._member(rel)}"
        return str(Path(self.prefix) / rel)

    @property
    def product_name(self) -> str:
        if self._zip is not None:
            base = PurePosixPath(self.prefix).name if self.prefix else self.user_path.name
        else:
            base = Path(self.prefix).name
        for suffix in (".zip", ".SAFE"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        return base


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _iter(root: ElementTree.Element, name: str):
    return (el for el in root.iter() if _local(el.tag) == name)


def _text(root: ElementTree.Element, name: str) -> str | None:
    for el in _iter(root, name):
        if el.text and el.text.strip():
            return el.text.strip()
    return None


def _level1c_error(path: str, why: str) -> InputError:
    return InputError(
        f"{path} is a Level-1C product ({why}); difffusr needs a Level-2A (surface reflectance) "
        "product: download the L2A product or process this one with Sen2Cor"
    )


def read_safe(path: Path) -> SafeProduct:
    """Read a SAFE product's metadata and locate its band files.

    Raises:
        InputError: the path holds no L2A metadata, is Level-1C, or its XML cannot be parsed.
    """
    tree = _Tree(path)
    if not tree.exists(L2A_METADATA):
        if tree.exists(L1C_METADATA) or path.name == L1C_METADATA:
            raise _level1c_error(str(path), L1C_METADATA)
        raise InputError(f"{path} holds no {L2A_METADATA}: not a Sentinel-2 L2A SAFE product")
    xml_bytes = tree.read_bytes(L2A_METADATA)
    try:
        root = ElementTree.fromstring(xml_bytes)
    except ElementTree.ParseError as exc:
        raise InputError(f"cannot parse {tree.display(L2A_METADATA)}: {exc}") from None

    product_type = _text(root, "PRODUCT_TYPE")
    if _local(root.tag).startswith("Level-1C") or (product_type or "").upper().endswith("1C"):
        raise _level1c_error(str(path), f"PRODUCT_TYPE {product_type}")

    uri = _text(root, "PRODUCT_URI") or tree.product_name
    parsed = parse_product_id(uri) or parse_product_id(tree.product_name)
    quant_el = next(_iter(root, "BOA_QUANTIFICATION_VALUE"), None)
    if quant_el is None:
        quant_el = next(_iter(root, "QUANTIFICATION_VALUE"), None)
    where = tree.display(L2A_METADATA)
    quant = None
    if quant_el is not None:
        quant = _number(quant_el.text, where, _local(quant_el.tag))
        if quant <= 0:
            raise InputError(
                f"{where}: {_local(quant_el.tag)} is {quant:g}; expected a positive number "
                "of DN per unit reflectance (10000 for L2A)"
            )

    band_files, scl = _find_band_files(tree, root)
    return SafeProduct(
        path=str(path),
        root=tree.gdal_path(""),
        product_id=uri[:-5] if uri.endswith(".SAFE") else uri,
        tile=parsed.tile if parsed else _tile_from_granules(tree),
        datetime=_text(root, "PRODUCT_START_TIME") or (parsed.datetime if parsed else None),
        processing_baseline=_text(root, "PROCESSING_BASELINE")
        or (parsed.processing_baseline if parsed else None),
        product_type=product_type,
        quantification=quant,
        offsets_dn=_boa_offsets(root, where),
        band_files=band_files,
        scl_file=scl,
    )


def _number(text: str | None, where: str, what: str) -> float:
    """A finite number from a metadata element's text; ``InputError`` naming ``where`` otherwise.

    Empty text, ``nan``, ``inf`` and anything :func:`float` refuses are all errors: a missing
    element is the caller's business, a present but unusable one is the product's.
    """
    stripped = (text or "").strip()
    if not stripped:
        raise InputError(f"{where}: {what} is empty; expected a number")
    try:
        value = float(stripped)
    except ValueError:
        raise InputError(f"{where}: {what} is not a number ({stripped!r})") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {what} is {stripped!r}; expected a finite number")
    return value


def _boa_offsets(root: ElementTree.Element, where: str) -> dict[str, float]:
    """``BOA_ADD_OFFSET`` per band name (DN), mapped through Spectral_Information's band ids."""
    physical = {
        el.get("bandId"): el.get("physicalBand")
        for el in _iter(root, "Spectral_Information")
        if el.get("bandId") is not None
    }
    offsets: dict[str, float] = {}
    for el in _iter(root, "BOA_ADD_OFFSET"):
        band_id = el.get("band_id")
        if band_id is None:
            continue
        esa = physical.get(band_id)
        if esa is None and band_id.isdigit() and int(band_id) < len(_ESA_BAND_IDS):
            esa = _ESA_BAND_IDS[int(band_id)]
        name = band_from_name(esa)
        if name is not None:
            offsets[name] = _number(el.text, where, f"BOA_ADD_OFFSET band_id={band_id}")
    return offsets


def _find_band_files(tree: _Tree, root: ElementTree.Element) -> tuple[dict[str, str], str | None]:
    """Band name → GDAL path of the native-resolution file, plus the 20 m SCL if present."""
    listed = [el.text.strip() for el in _iter(root, "IMAGE_FILE") if el.text and el.text.strip()]
    files: dict[str, str] = {}
    for band in BANDS:
        suffix = f"_{band.name}_{int(band.gsd)}m"
        rel = _listed_or_globbed(tree, listed, suffix, int(band.gsd))
        if rel is not None:
            files[band.name] = tree.gdal_path(rel)
    scl = _listed_or_globbed(tree, listed, "_SCL_20m", 20)
    return files, tree.gdal_path(scl) if scl else None


def _listed_or_globbed(tree: _Tree, listed: list[str], suffix: str, gsd: int) -> str | None:
    for entry in listed:
        if entry.endswith(suffix):
            for rel in (entry + ".jp2", entry):
                if tree.exists(rel):
                    return rel
    matches = tree.glob(f"GRANULE/*/IMG_DATA/R{gsd}m/*{suffix}.jp2")
    return matches[0] if matches else None


def _tile_from_granules(tree: _Tree) -> str | None:
    for rel in tree.glob("GRANULE/*/MTD_TL.xml"):
        match = re.search(r"_(T\d{2}[A-Z]{3})_", rel)
        if match:
            return match.group(1)
    return None
