"""Training data for ``train rgb``: high-resolution RGB tiles.

**RGB** (:func:`open_hr_dataset`): a folder of high-resolution images, each resampled once to the
2.5 m output grid (area average when finer) and held as ``(3, H, W)`` float32 R, G, B reflectance:

- ``sen2naip``: SEN2NAIP's synthetic set, NAIP tiles (RGB or RGBN uint8, 2.5 m). As published:
  v1 ``synthetic_NN.zip`` shards read in place, or their extracted ``ROI_*/{early,late}`` trees
  (:mod:`.sen2naip`); v2 ``.taco`` containers (:mod:`.taco`; HR alone, or ``pairs="own"``: the
  published LR/HR pairs); either from a Hugging Face dataset repository (``hub_repo``) through
  the Hub cache (:mod:`.hub_data`). Any other folder of
  GeoTIFFs too: when it holds ``hr*.tif`` files only those are used (not the LR halves).
- ``worldstrat``: WorldStrat's high-resolution SPOT tiles (``*_ps.tif[f]``, pansharpened R, G, B,
  NIR, 1.5 m unless the file says otherwise), rescaled to 2.5 m.
- ``folder``: any GeoTIFF/PNG/JPEG with 3 or more bands; the pixel size is ``gsd`` when given,
  else the file's georeferencing (projected, metres).

Band order comes from band descriptions (``red``/``green``/``blue``), else colour interpretation,
else bands 1, 2, 3 are R, G, B. Values become reflectance by ``value_scale`` (default 1/255 for
uint8, 1/10000 for uint16, 1 for floats).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from difffusr_cli.bands import OUTPUT_GSD
from difffusr_cli.errors import InputError

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

    from difffusr_cli.train.sen2naip import Histogram

HRKind = Literal["sen2naip", "worldstrat", "folder"]
HR_KINDS: tuple[HRKind, ...] = ("sen2naip", "worldstrat", "folder")

#: File suffixes read as high-resolution images.
_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_TIFF_SUFFIXES = (".tif", ".tiff")
#: Pixel size (m) assumed for a dataset's files that carry no georeferencing.
_DEFAULT_GSD: dict[str, float | None] = {"sen2naip": 2.5, "worldstrat": 1.5, "folder": None}
#: Harmonisation modes: a fixed-form per-band gamma, histogram matching to SEN2NAIP v1's
#: ``sim_histograms``, or none.
HarmoniseMode = Literal["gamma", "histogram", "none"]
HARMONISE_MODES: tuple[HarmoniseMode, ...] = ("gamma", "histogram", "none")
#: Harmonisation (NAIP → Sentinel-2 look) unless the user says otherwise.
HARMONISE_DEFAULT: dict[str, HarmoniseMode] = {
    "sen2naip": "gamma",
    "worldstrat": "none",
    "folder": "none",
}
#: Whether harmonisation is on by default (kept for callers of earlier versions).
HARMONIZE_DEFAULT: dict[str, bool] = {k: v != "none" for k, v in HARMONISE_DEFAULT.items()}
#: Where ``train rgb`` gets its LR: published pairs (SEN2NAIP v2) or the degradation model.
PairsMode = Literal["own", "degrade"]
PAIRS_MODES: tuple[PairsMode, ...] = ("own", "degrade")
#: Images kept in memory (bytes of float32) before reads go back to the files.
HR_CACHE_BYTES = 2 << 30
#: Tolerance on "not coarser than 2.5 m".
_GSD_RTOL = 0.01

# ---------------------------------------------------------------------------------------------
# High-resolution RGB


@dataclass(frozen=True)
class HRImage:
    """One high-resolution image of an :class:`HRDataset`.

    Attributes:
        path: the file.
        rgb_bands: 1-based band indexes of R, G, B in the file.
        value_scale: reflectance = stored value × value_scale.
        gsd: the file's pixel size, metres.
        width, height: size once resampled to 2.5 m, pixels.
        uri: what GDAL opens when it is not ``path`` (a ``/vsizip/`` member); "" for ``path``.
        histogram: SEN2NAIP v1 ``sim_histograms`` of the tile's ROI era, if any.
        value_offset: reflectance = stored value × value_scale + value_offset.
        georeferenced: ``gsd`` comes from the file (else it is the dataset's default).
        lr: the published LR of a pair (``pairs == "own"``, on its own ×4 coarser grid), or None.
    """

    path: Path
    rgb_bands: tuple[int, int, int]
    value_scale: float
    gsd: float
    width: int
    height: int
    uri: str = ""
    histogram: Histogram | None = field(default=None, compare=False, repr=False)
    value_offset: float = 0.0
    georeferenced: bool = True
    lr: HRImage | None = field(default=None, compare=False, repr=False)

    @property
    def source(self) -> str:
        """The name rasterio opens."""
        return self.uri or str(self.path)


@dataclass
class HRDataset:
    """High-resolution images for RGB training, read once and cached.

    Attributes:
        kind: ``sen2naip``, ``worldstrat`` or ``folder``.
        root: the folder the images were found in.
        images: the usable images.
        skipped: one line per file left out and why.
        layout: lines describing the dataset's layout (SEN2NAIP v1: shards, ROIs, eras).
        pairs: ``own``: every image carries its published LR (:meth:`read_lr`); ``degrade``: the
            LR is made by the degradation model.
    """

    kind: str
    root: Path
    images: tuple[HRImage, ...]
    skipped: tuple[str, ...] = ()
    layout: tuple[str, ...] = ()
    pairs: PairsMode = "degrade"
    _cache: dict[tuple[int, bool], np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def harmonize_default(self) -> bool:
        """Whether harmonisation is on by default for the dataset kind (on for NAIP)."""
        return HARMONIZE_DEFAULT[self.kind]

    @property
    def harmonise_default(self) -> HarmoniseMode:
        """Harmonisation mode of the dataset kind unless the user says otherwise."""
        return HARMONISE_DEFAULT[self.kind]

    def missing_histograms(self) -> list[Path]:
        """Images without ``sim_histograms`` (histogram matching cannot serve them)."""
        return [im.path for im in self.images if im.histogram is None]

    def read(self, index: int, matched: bool = False) -> np.ndarray:
        """Image ``index`` as ``(3, H, W)`` float32 R, G, B reflectance on the 2.5 m grid.

        Args:
            index: the image.
            matched: histogram-matched to its ROI era's ``sim_histograms`` (SEN2NAIP v1).

        Raises:
            InputError: the file can no longer be read, or ``matched`` without histograms.
        """
        cached = self._cache.get((index, matched))
        if cached is not None:
            return cached
        image = _read_resampled(self.images[index])
        if matched:
            image = _match(image, self.images[index])
        if sum(a.nbytes for a in self._cache.values()) + image.nbytes <= HR_CACHE_BYTES:
            self._cache[(index, matched)] = image
        return image

    def read_lr(self, index: int) -> np.ndarray:
        """The published LR of image ``index``: ``(3, H/4, W/4)`` float32 R, G, B reflectance.

        Raises:
            InputError: the image has no LR (``pairs == "degrade"``), or it cannot be read.
        """
        lr = self.images[index].lr
        if lr is None:
            raise InputError(f"{self.images[index].path}: no published LR (pairs = degrade)")
        key = (-1 - index, False)  # LR entries: negative indexes beside the HR ones
        cached = self._cache.get(key)
        if cached is None:
            cached = _read_resampled(lr)
            if sum(a.nbytes for a in self._cache.values()) + cached.nbytes <= HR_CACHE_BYTES:
                self._cache[key] = cached
        return cached

    def summary(self) -> list[str]:
        """Human-readable lines: what was found, sizes, pixel sizes, what was skipped."""
        sizes = [im.width * im.height for im in self.images]
        gsds = sorted({round(im.gsd, 4) for im in self.images})
        lines = list(self.layout) + [
            (
                f"{self.kind} data in {self.root}: {len(self.images)} image(s), "
                f"{sum(sizes) / 1e6:.2f} Mpx at {OUTPUT_GSD} m "
                f"(smallest {min(sizes, default=0)} px, source pixel size "
                f"{', '.join(f'{g:g}' for g in gsds)} m)"
            )
        ]
        lines += [f"  skipped {line}" for line in self.skipped]
        return lines


def open_hr_dataset(
    kind: str,
    data_dir: str | os.PathLike[str] | None,
    *,
    min_size: int,
    gsd: float | None = None,
    value_scale: float | None = None,
    hub_repo: str | None = None,
    hub_revision: str | None = None,
    shards: Sequence[int] | None = None,
    pairs: str | None = None,
) -> HRDataset:
    """Find and check the high-resolution images of a dataset.

    ``sen2naip`` reads SEN2NAIP v1 as published (:mod:`~difffusr_cli.train.sen2naip`) when
    ``data_dir`` is a ``synthetic_NN.zip`` shard, a folder of them, or an extracted
    ``ROI_*/{early,late}/*.tif`` tree, and when ``hub_repo`` holds ``synthetic_NN.zip`` shards;
    other folders are searched for GeoTIFF tiles as before.

    Args:
        kind: ``sen2naip``, ``worldstrat`` or ``folder``.
        data_dir: the local folder (searched recursively); optional for ``sen2naip`` with
            ``hub_repo``.
        min_size: smallest usable side at 2.5 m (the HR patch size); smaller images are skipped.
        gsd: declared pixel size of every file, metres (overrides georeferencing).
        value_scale: reflectance = value × value_scale (default by dtype).
        hub_repo: a Hugging Face dataset repository to download (``sen2naip`` only).
        hub_revision: its branch, tag or commit.
        shards: SEN2NAIP v1 shard numbers to use (``synthetic_NN.zip``); None: all.
        pairs: ``own`` (published LR/HR pairs: SEN2NAIP v2 only), ``degrade``, or None/``auto``
            (``own`` for ``.taco`` files whose every sample has ``lr`` and ``hr`` items).

    Raises:
        InputError: unknown kind, missing/empty folder, an unreadable file, a file with fewer
            than 3 bands or no known pixel size, a pixel size coarser than 2.5 m, no image large
            enough, the Hub cannot be reached, or ``pairs="own"`` for data without pairs.
    """
    layout = next((known for known in HR_KINDS if known == kind), None)
    if layout is None:
        raise InputError(f"--data {kind!r}: expected one of {', '.join(HR_KINDS)}")
    if gsd is not None and not (math.isfinite(gsd) and gsd > 0):
        raise InputError(f"--gsd must be a positive number of metres, got {gsd}")
    if value_scale is not None and not (math.isfinite(value_scale) and value_scale > 0):
        raise InputError(f"--value-scale must be a positive number, got {value_scale}")
    if pairs not in (None, "auto", *PAIRS_MODES):
        raise InputError(f"--pairs {pairs!r}: expected own, degrade or auto")
    if shards is not None and kind != "sen2naip":
        raise InputError(f"--shards works with --data sen2naip, not {kind}")
    if hub_repo is not None:
        if kind != "sen2naip":
            raise InputError(f"--hub-repo works with --data sen2naip, not {kind}")
        from difffusr_cli.train.hub_data import download_hub_dataset, hub_shards
        from difffusr_cli.train.sen2naip import open_v1

        found = hub_shards(hub_repo, hub_revision, shards, data_dir)
        if found is not None:
            paths, where = found
            if paths[0].suffix.lower() == ".taco":
                from difffusr_cli.train.taco import open_taco

                return open_taco(paths, where, min_size=min_size, pairs=pairs)
            _refuse_own_pairs(pairs, where)
            return open_v1(paths, where, min_size=min_size)
        if shards is not None:
            raise InputError(f"--shards: {hub_repo} holds no synthetic/synthetic_NN.zip shards")
        root = download_hub_dataset(hub_repo, hub_revision, data_dir)
    elif data_dir is None:
        raise InputError(
            f"--data {kind} needs --data-dir PATH"
            + (" or --hub-repo ORG/NAME" if kind == "sen2naip" else "")
        )
    else:
        root = Path(data_dir).expanduser()
    if layout == "sen2naip":
        from difffusr_cli.train.sen2naip import looks_like_v1, open_v1
        from difffusr_cli.train.taco import is_taco, open_taco

        if is_taco(root) and shards is None:
            return open_taco([root], str(root), min_size=min_size, pairs=pairs)
    _refuse_own_pairs(pairs, str(root))
    if layout == "sen2naip" and (looks_like_v1(root) or shards is not None):
        return open_v1([root], str(root), min_size=min_size, shards=shards)
    files, uris = _find_image_files(layout, root)
    images: list[HRImage] = []
    skipped: list[str] = []
    for path in files:
        image = _probe_hr(path, layout, gsd, value_scale, uris.get(path, ""))
        if min(image.width, image.height) < min_size:
            skipped.append(
                f"{path.name}: {image.width}×{image.height} px at {OUTPUT_GSD} m, smaller than the "
                f"{min_size} px patch"
            )
            continue
        images.append(image)
    if not images:
        raise InputError(
            f"{root}: none of the {len(files)} image(s) is at least {min_size} px at {OUTPUT_GSD} "
            "m "
            f"(first: {skipped[0]}); use a smaller --patch-size or a finer --gsd"
        )
    return HRDataset(kind=layout, root=root, images=tuple(images), skipped=tuple(skipped))


def _refuse_own_pairs(pairs: str | None, where: str) -> None:
    if pairs == "own":
        raise InputError(
            f"--pairs own: {where} holds no SEN2NAIP v2 .taco containers, the only data with "
            "published LR/HR pairs (use --pairs degrade)"
        )


def _zip_members(root: Path) -> dict[Path, str]:
    """``archive/member`` → ``/vsizip/`` URI of each image in a zip (read in place)."""
    import zipfile

    try:
        with zipfile.ZipFile(root) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{root}: not a readable zip file ({exc})") from None
    absolute = root.absolute().as_posix()
    return {
        root / name: f"/vsizip/{{{absolute}}}/{name}"
        for name in sorted(names)
        if Path(name).suffix.lower() in _IMAGE_SUFFIXES
    }


def _find_image_files(kind: str, root: Path) -> tuple[list[Path], dict[Path, str]]:
    """The image files to probe, and the URIs of those that live inside a zip."""
    if not root.exists():
        raise InputError(f"--data-dir {root}: does not exist")
    uris: dict[Path, str] = {}
    if root.is_file() and root.suffix.lower() == ".zip":
        uris = _zip_members(root)
        candidates = list(uris)
    elif root.is_file():
        candidates = [root]
    else:
        candidates = sorted(
            p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
        )
    if kind == "sen2naip":
        candidates = [p for p in candidates if p.suffix.lower() in _TIFF_SUFFIXES]
        hr_only = [p for p in candidates if p.stem.lower().startswith("hr")]
        candidates = hr_only or candidates
        wanted = "GeoTIFF (.tif) tiles"
    elif kind == "worldstrat":
        candidates = [
            p
            for p in candidates
            if p.suffix.lower() in _TIFF_SUFFIXES and p.stem.lower().endswith("_ps")
        ]
        wanted = "WorldStrat pansharpened tiles (*_ps.tif/.tiff)"
    else:
        wanted = "images (.tif, .tiff, .png, .jpg)"
    if not candidates:
        raise InputError(f"--data-dir {root}: no {wanted} found (searched recursively)")
    return candidates, uris


def rgb_band_indexes(
    descriptions: Sequence[str | None], colorinterp: Sequence[object]
) -> tuple[int, int, int]:
    """1-based indexes of R, G, B.

    From band descriptions, else colour interpretation, else 1, 2, 3.
    """
    names = [(d or "").strip().lower() for d in descriptions]
    by_name = {n: i + 1 for i, n in enumerate(names) if n}
    aliases = {
        "red": ("red", "r", "b04"),
        "green": ("green", "g", "b03"),
        "blue": ("blue", "b", "b02"),
    }
    found = {
        c: next((by_name[a] for a in alias if a in by_name), None) for c, alias in aliases.items()
    }
    red, green, blue = found["red"], found["green"], found["blue"]
    if red and green and blue:
        return red, green, blue
    interp = [getattr(c, "name", str(c)).lower() for c in colorinterp]
    if all(c in interp for c in ("red", "green", "blue")):
        return interp.index("red") + 1, interp.index("green") + 1, interp.index("blue") + 1
    return 1, 2, 3


def file_gsd(dataset: DatasetReader) -> float | None:
    """The pixel size in metres of a georeferenced raster in a projected metric CRS, else None."""
    crs = getattr(dataset, "crs", None)
    if crs is None or not crs.is_projected:
        return None
    units = (crs.linear_units or "").lower()
    if units not in ("metre", "meter", "m", "metres", "meters"):
        return None
    res_x, res_y = dataset.res
    return float(math.sqrt(abs(res_x * res_y)))


def _probe_hr(
    path: Path, kind: str, gsd: float | None, value_scale: float | None, uri: str = ""
) -> HRImage:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(uri or path) as src:
                count, dtype = src.count, src.dtypes[0]
                rgb = rgb_band_indexes(src.descriptions, src.colorinterp)
                georef_gsd = file_gsd(src)
                width, height = src.width, src.height
    except (RasterioIOError, OSError) as exc:
        raise InputError(f"{path}: unreadable image ({exc})") from None
    if count < 3:
        raise InputError(
            f"{path}: has {count} band(s); RGB training needs R, G, B (3 or more bands)"
        )
    pixel = gsd or georef_gsd or _DEFAULT_GSD[kind]
    if pixel is None:
        raise InputError(
            f"{path}: carries no pixel size (not georeferenced in metres); pass --gsd METRES"
        )
    if pixel > OUTPUT_GSD * (1 + _GSD_RTOL):
        raise InputError(
            f"{path}: pixel size {pixel:g} m is coarser than the {OUTPUT_GSD} m the model learns "
            "to "
            "produce; high-resolution training data must be at least that fine"
        )
    if value_scale is None:
        value_scale = {"uint8": 1 / 255, "uint16": 1 / 10000, "int16": 1 / 10000}.get(dtype, 1.0)
    factor = pixel / OUTPUT_GSD
    return HRImage(
        path=path,
        rgb_bands=rgb,
        value_scale=float(value_scale),
        gsd=float(pixel),
        width=max(1, round(width * factor)),
        height=max(1, round(height * factor)),
        uri=uri,
    )


def _read_resampled(image: HRImage) -> np.ndarray:
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    # area average when shrinking (the sensor integrates over the coarser pixel)
    resampling = (
        Resampling.average if image.gsd < OUTPUT_GSD * (1 - _GSD_RTOL) else Resampling.bilinear
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(image.source) as src:
                data = src.read(
                    list(image.rgb_bands),
                    out_shape=(3, image.height, image.width),
                    resampling=resampling,
                    out_dtype="float32",
                )
    except (RasterioIOError, OSError) as exc:
        raise InputError(f"{image.path}: unreadable image ({exc})") from None
    data *= np.float32(image.value_scale)
    if image.value_offset:
        data += np.float32(image.value_offset)
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return data


def _match(image: np.ndarray, meta: HRImage) -> np.ndarray:
    """``image`` histogram-matched per band to ``meta``'s ``sim_histograms``."""
    import torch

    from difffusr_cli.degrade import match_histograms

    if meta.histogram is None:
        raise InputError(
            f"{meta.path}: its ROI era has no sim_histograms (metadata.json); histogram "
            "harmonisation needs them (use --harmonize gamma or none)"
        )
    matched = match_histograms(
        torch.from_numpy(image),
        torch.from_numpy(meta.histogram.counts),
        torch.from_numpy(meta.histogram.edges),
    )
    return matched.numpy()


def download_hub_dataset(
    repo: str, revision: str | None, local_dir: str | os.PathLike[str] | None
) -> Path:
    """See :func:`difffusr_cli.train.hub_data.download_hub_dataset`."""
    from difffusr_cli.train import hub_data

    return hub_data.download_hub_dataset(repo, revision, local_dir)
