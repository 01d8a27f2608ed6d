"""SEN2NAIP v2 (``tacofoundation/SEN2NAIPv2``): TACO containers read in place.

A ``.taco`` file (the container generation the SEN2NAIPv2 parts use) is laid out as:

- bytes 0–1: magic ``WX`` (a TACO; ``#y`` for a tortilla, the nested form); 2–9 and 10–17: the
  footer's offset and length (unsigned 64-bit little-endian);
- the footer: a Parquet table, one row per item, with ``tortilla:id``, ``tortilla:file_format``,
  ``tortilla:offset`` and ``tortilla:length``;
- an item of format ``TORTILLA`` is a sample: a tortilla at that offset, whose own footer's
  offsets count from the sample's start; other items are raw file bytes, here GeoTIFFs that GDAL
  reads as ``/vsisubfile/OFFSET_LENGTH,FILE``.

Two ways to use the samples (``pairs``):

- ``degrade``: each sample's ``hr`` item (case-insensitive) is one training image, resampled to
  2.5 m; the degradation model makes the LR, as for v1.
- ``own``: the sample's ``lr`` and ``hr`` items are a published pair (the cross-sensor set: LR
  130² Sentinel-2, HR 520² NAIP), both read on their own grids; the HR must be exactly 4× the
  LR in pixels (and in pixel size when both are georeferenced).

Values become reflectance by each GeoTIFF's own scale and offset (GDAL band scale/offset, else
``scale_factor``/``add_offset`` tags) when it has them, else by its data type: 1/10000 for
uint16 and int16, 1/255 for uint8, 1 for floats (the documented fallback). Reading the footers
needs ``pyarrow`` (``pip install "difffusr[taco]"``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from difffusr_cli.bands import OUTPUT_GSD
from difffusr_cli.errors import InputError
from difffusr_cli.train.hr_data import (
    PAIRS_MODES,
    HRDataset,
    HRImage,
    file_gsd,
    rgb_band_indexes,
)
from difffusr_cli.train.rgb_config import SCALE

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

_MAGICS = (b"WX", b"#y")
_HEADER = 18
#: Item ids (lower case) of a sample's high- and low-resolution images.
HR_ITEM, LR_ITEM = "hr", "lr"
#: Tolerance on the pixel-size ratio of a pair.
_RTOL = 0.01


@dataclass(frozen=True)
class TacoItem:
    """One item of a container: ``(id, format, absolute offset, length)``."""

    id: str
    file_format: str
    offset: int
    length: int


def is_taco(path: Path) -> bool:
    """A ``.taco`` file, or a folder holding some (searched recursively)."""
    if path.is_file():
        return path.suffix.lower() == ".taco"
    return path.is_dir() and any(path.rglob("*.taco"))


def _footer(stream: io.BufferedReader, start: int, where: str) -> list[TacoItem]:
    """The items of the container or tortilla that begins at byte ``start``."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(
            f'{where}: reading .taco files needs pyarrow (pip install "difffusr[taco]")'
        ) from None
    stream.seek(start)
    header = stream.read(_HEADER)
    if len(header) < _HEADER or header[:2] not in _MAGICS:
        raise InputError(f"{where}: not a TACO/tortilla container at byte {start}")
    offset = int.from_bytes(header[2:10], "little") + start
    length = int.from_bytes(header[10:18], "little")
    stream.seek(offset)
    raw = stream.read(length)
    try:
        table = pq.read_table(io.BytesIO(raw)).to_pydict()
        rows = zip(
            table["tortilla:id"],
            table["tortilla:file_format"],
            table["tortilla:offset"],
            table["tortilla:length"],
            strict=True,
        )
        return [TacoItem(str(i), str(f), int(o) + start, int(n)) for i, f, o, n in rows]
    except Exception as exc:  # noqa: BLE001 - a broken Parquet footer, whatever pyarrow raises
        raise InputError(
            f"{where}: unreadable container footer at byte {offset} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None


def sample_items(path: Path) -> list[tuple[str, dict[str, str]]]:
    """``(sample id, {item id (lower case): /vsisubfile/ URI})`` for every sample of a container.

    Raises:
        InputError: not a container, no pyarrow, a broken footer, or no samples.
    """
    absolute = path.absolute().as_posix()
    found = []
    try:
        with open(path, "rb") as stream:
            for sample in _footer(stream, 0, str(path)):
                if sample.file_format.upper() != "TORTILLA":
                    continue
                items = _footer(stream, sample.offset, f"{path} sample {sample.id}")
                uris = {
                    i.id.lower(): f"/vsisubfile/{i.offset}_{i.length},{absolute}" for i in items
                }
                found.append((sample.id, uris))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    if not found:
        raise InputError(f"{path}: the container holds no samples (TORTILLA items)")
    return found


def _file_scale(src: DatasetReader, rgb: tuple[int, int, int]) -> tuple[float, float, str]:
    """``(scale, offset, where from)``: reflectance = value × scale + offset."""
    scales = {float(src.scales[b - 1]) for b in rgb}
    offsets = {float(src.offsets[b - 1]) for b in rgb}
    if len(scales) != 1 or len(offsets) != 1:
        raise ValueError(f"per-band scales/offsets {sorted(scales)}/{sorted(offsets)}")
    scale, offset = scales.pop(), offsets.pop()
    if (scale, offset) != (1.0, 0.0):
        return scale, offset, "band scale"
    tags = {k.lower(): v for k, v in src.tags().items()}
    if "scale_factor" in tags:
        return float(tags["scale_factor"]), float(tags.get("add_offset", 0.0)), "scale_factor tag"
    dtype = src.dtypes[rgb[0] - 1]
    fallback = {"uint8": 1 / 255, "uint16": 1 / 10000, "int16": 1 / 10000}.get(dtype, 1.0)
    return fallback, 0.0, f"{dtype} default"


def _probe(uri: str, display: Path, *, native_gsd: float | None = None) -> tuple[HRImage, str]:
    """The image of one item and where its reflectance scale comes from.

    ``native_gsd``: sized on the file's own grid (a published pair), with this pixel size (m)
    when the file is not georeferenced; None: resampled to 2.5 m.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(uri) as src:
                count = src.count
                rgb = rgb_band_indexes(src.descriptions, src.colorinterp)
                scale, offset, origin = _file_scale(src, rgb) if count >= 3 else (1, 0, "")
                georef = file_gsd(src)
                width, height = src.width, src.height
    except (RasterioIOError, OSError) as exc:
        raise InputError(f"{display}: unreadable GeoTIFF ({exc})") from None
    except ValueError as exc:
        raise InputError(f"{display}: {exc} not supported") from None
    if count < 3:
        raise InputError(f"{display}: has {count} band(s); RGB training needs R, G, B")
    gsd = georef or native_gsd or OUTPUT_GSD
    factor = 1.0 if native_gsd else gsd / OUTPUT_GSD
    image = HRImage(
        path=display,
        rgb_bands=rgb,
        value_scale=scale,
        value_offset=offset,
        gsd=gsd,
        width=max(1, round(width * factor)),
        height=max(1, round(height * factor)),
        uri=uri,
        georeferenced=georef is not None,
    )
    return image, origin


def _pair(file: Path, sample: str, items: dict[str, str]) -> tuple[HRImage, str, str]:
    """The HR image of a published pair, its LR attached; the scale origins of HR and LR.

    Raises:
        InputError: a missing item, or HR not 4× the LR (in pixels, and in pixel size when both
            are georeferenced).
    """
    missing = [name for name in (LR_ITEM, HR_ITEM) if name not in items]
    if missing:
        raise InputError(
            f"{file}: sample {sample} has no {' or '.join(repr(m) for m in missing)} item (it "
            f"has {', '.join(items)}); --pairs own needs both, --pairs degrade uses 'hr' alone"
        )
    hr, hr_origin = _probe(items[HR_ITEM], file / sample / HR_ITEM, native_gsd=OUTPUT_GSD)
    lr, lr_origin = _probe(items[LR_ITEM], file / sample / LR_ITEM, native_gsd=OUTPUT_GSD * SCALE)
    sizes = f"HR {hr.width}×{hr.height} px, LR {lr.width}×{lr.height} px"
    if (hr.width, hr.height) != (SCALE * lr.width, SCALE * lr.height):
        raise InputError(
            f"{file}: sample {sample}: {sizes}, not a ×{SCALE} pair; --pairs own needs HR = "
            f"{SCALE} × LR (use --pairs degrade to train on the HR alone)"
        )
    if hr.georeferenced and lr.georeferenced and abs(lr.gsd / hr.gsd - SCALE) > SCALE * _RTOL:
        raise InputError(
            f"{file}: sample {sample}: pixel sizes HR {hr.gsd:g} m, LR {lr.gsd:g} m, not a "
            f"×{SCALE} pair (ratio {lr.gsd / hr.gsd:.3g})"
        )
    return replace(hr, lr=lr), hr_origin, lr_origin


def _scale_words(image: HRImage, origin: str) -> str:
    """``0.0001 (uint16 default)``, ``2e-05 + -0.1 (band scale)``."""
    offset = f" + {image.value_offset:g}" if image.value_offset else ""
    return f"{image.value_scale:g}{offset} ({origin})"


def open_taco(
    sources: Sequence[Path], where: str, *, min_size: int, pairs: str | None = None
) -> HRDataset:
    """The images of TACO containers (files, or folders searched for ``*.taco``).

    Args:
        sources: ``.taco`` files or folders.
        where: names the data in messages.
        min_size: smallest usable HR side (the patch size); smaller samples are skipped.
        pairs: ``own`` (the published LR/HR pairs), ``degrade`` (HR alone, our degradation
            makes the LR), or None/``auto``: ``own`` when every sample has ``lr`` and ``hr``.

    Raises:
        InputError: see :func:`sample_items`; an unreadable item; a pair that is not ×4; no
            image large enough.
    """
    files = [f for s in sources for f in ([s] if s.is_file() else sorted(s.rglob("*.taco")))]
    catalog = [(file, sample, items) for file in files for sample, items in sample_items(file)]
    if pairs in PAIRS_MODES:
        mode = pairs
    else:  # auto: the published pairs when every sample has them
        mode = "own" if all({LR_ITEM, HR_ITEM} <= set(i) for _, _, i in catalog) else "degrade"
    images, skipped = [], []
    origins: dict[str, set[str]] = {"HR": set(), "LR": set()}
    for file, sample, items in catalog:
        if mode == "own":
            image, hr_origin, lr_origin = _pair(file, sample, items)
            if image.lr is not None:
                origins["LR"].add(_scale_words(image.lr, lr_origin))
        elif HR_ITEM in items:
            image, hr_origin = _probe(items[HR_ITEM], file / sample / HR_ITEM)
        else:
            raise InputError(
                f"{file}: sample {sample} has no 'hr' item (it has {', '.join(items)})"
            )
        origins["HR"].add(_scale_words(image, hr_origin))
        if min(image.width, image.height) < min_size:
            skipped.append(f"{sample}: {image.width}×{image.height} px, under {min_size}")
            continue
        images.append(image)
    if not images:
        raise InputError(f"{where}: no HR item is at least {min_size} px; use a smaller patch")
    words = "; ".join(
        f"{role} reflectance = value × {', '.join(sorted(found))}"
        for role, found in origins.items()
        if found
    )
    line = (
        f"SEN2NAIP v2 (TACO) in {where}: {len(files)} file(s), {len(images) + len(skipped)} "
        f"sample(s); {words}; pairs: "
        + ("own (the published LR/HR, no degradation)" if mode == "own" else "degrade (HR alone)")
    )
    root = files[0] if len(files) == 1 else Path(where)
    return HRDataset(
        kind="sen2naip",
        root=root,
        images=tuple(images),
        skipped=tuple(skipped),
        layout=(line,),
        pairs="own" if mode == "own" else "degrade",
    )
