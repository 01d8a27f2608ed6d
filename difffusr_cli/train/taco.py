"""SEN2NAIP v2 (``tacofoundation/SEN2NAIPv2``): HR tiles read from TACO containers in place.

A ``.taco`` file (the container generation the SEN2NAIPv2 parts use) is laid out as:

- bytes 0–1: magic ``WX`` (a TACO; ``#y`` for a tortilla, the nested form); 2–9 and 10–17: the
  footer's offset and length (unsigned 64-bit little-endian);
- the footer: a Parquet table, one row per item, with ``tortilla:id``, ``tortilla:file_format``,
  ``tortilla:offset`` and ``tortilla:length``;
- an item of format ``TORTILLA`` is a sample: a tortilla at that offset, whose own footer's
  offsets count from the sample's start; other items are raw file bytes, here GeoTIFFs that GDAL
  reads as ``/vsisubfile/OFFSET_LENGTH,FILE``.

Each sample's ``hr`` item (case-insensitive) becomes one training image; the ``lr`` item is not
used (the degradation model makes the LR, as for v1). Values become reflectance by the
GeoTIFF's own scale (GDAL band scale/offset) when it has one, else 1/10000 for uint16 and 1/255
for uint8. Reading the footers needs ``pyarrow`` (``pip install "difffusr[taco]"``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from difffusr_cli.bands import OUTPUT_GSD
from difffusr_cli.errors import InputError
from difffusr_cli.train.hr_data import HRDataset, HRImage, file_gsd, rgb_band_indexes

_MAGICS = (b"WX", b"#y")
_HEADER = 18
#: Item ids that name the high-resolution image of a sample.
HR_ITEM = "hr"


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


def hr_items(path: Path) -> list[tuple[str, str]]:
    """``(sample id, /vsisubfile/ URI of its HR GeoTIFF)`` for every sample of a container.

    Raises:
        InputError: not a container, no pyarrow, a broken footer, or a sample without ``hr``.
    """
    try:
        with open(path, "rb") as stream:
            samples = _footer(stream, 0, str(path))
            found = []
            for sample in samples:
                if sample.file_format.upper() != "TORTILLA":
                    continue
                items = _footer(stream, sample.offset, f"{path} sample {sample.id}")
                hr = next((i for i in items if i.id.lower() == HR_ITEM), None)
                if hr is None:
                    raise InputError(
                        f"{path}: sample {sample.id} has no 'hr' item (it has "
                        f"{', '.join(i.id for i in items)})"
                    )
                uri = f"/vsisubfile/{hr.offset}_{hr.length},{path.absolute().as_posix()}"
                found.append((sample.id, uri))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    if not found:
        raise InputError(f"{path}: the container holds no samples (TORTILLA items)")
    return found


def _probe(uri: str, display: Path) -> HRImage:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(uri) as src:
                count, dtype = src.count, src.dtypes[0]
                rgb = rgb_band_indexes(src.descriptions, src.colorinterp)
                gsd = file_gsd(src) or OUTPUT_GSD
                width, height = src.width, src.height
                scales = {float(src.scales[b - 1]) for b in rgb}
                offsets = {float(src.offsets[b - 1]) for b in rgb}
    except (RasterioIOError, OSError) as exc:
        raise InputError(f"{display}: unreadable GeoTIFF ({exc})") from None
    if count < 3:
        raise InputError(f"{display}: has {count} band(s); RGB training needs R, G, B")
    if offsets != {0.0} or len(scales) != 1:
        raise InputError(f"{display}: per-band scales/offsets {scales}/{offsets} not supported")
    scale = scales.pop()
    if scale == 1.0:
        scale = {"uint8": 1 / 255, "uint16": 1 / 10000}.get(dtype, 1.0)
    factor = gsd / OUTPUT_GSD
    return HRImage(
        path=display,
        rgb_bands=rgb,
        value_scale=scale,
        gsd=gsd,
        width=max(1, round(width * factor)),
        height=max(1, round(height * factor)),
        uri=uri,
    )


def open_taco(sources: Sequence[Path], where: str, *, min_size: int) -> HRDataset:
    """The HR images of TACO containers (files, or folders searched for ``*.taco``).

    Raises:
        InputError: see :func:`hr_items`; an unreadable HR item; no image large enough.
    """
    files = [f for s in sources for f in ([s] if s.is_file() else sorted(s.rglob("*.taco")))]
    images, skipped = [], []
    for file in files:
        for sample, uri in hr_items(file):
            image = _probe(uri, file / sample / HR_ITEM)
            if min(image.width, image.height) < min_size:
                skipped.append(f"{sample}: {image.width}×{image.height} px, under {min_size}")
                continue
            images.append(image)
    if not images:
        raise InputError(f"{where}: no HR item is at least {min_size} px; use a smaller patch")
    scales = sorted({f"{im.value_scale:g}" for im in images})
    line = (
        f"SEN2NAIP v2 (TACO) in {where}: {len(files)} file(s), {len(images) + len(skipped)} "
        f"sample(s); HR reflectance = value × {', '.join(scales)}"
    )
    root = files[0] if len(files) == 1 else Path(where)
    return HRDataset(
        kind="sen2naip", root=root, images=tuple(images), skipped=tuple(skipped), layout=(line,)
    )
