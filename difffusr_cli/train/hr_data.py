"""Training data for ``train rgb``: high-resolution RGB tiles.

**RGB** (:func:`open_hr_dataset`): a folder of high-resolution images, each resampled once to the
2.5 m output grid (area average when finer) and held as ``(3, H, W)`` float32 R, G, B reflectance:

- ``sen2naip``: SEN2NAIP's synthetic set, NAIP tiles (RGB or RGBN uint8, 2.5 m) as GeoTIFF; a
  folder, or a Hugging Face dataset repository (``hub_repo``) downloaded through the Hub cache.
  When a folder holds ``hr*.tif`` files only those are used (the LR halves are not needed).
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

HRKind = Literal["sen2naip", "worldstrat", "folder"]
HR_KINDS: tuple[HRKind, ...] = ("sen2naip", "worldstrat", "folder")

#: File suffixes read as high-resolution images.
_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_TIFF_SUFFIXES = (".tif", ".tiff")
#: Pixel size (m) assumed for a dataset's files that carry no georeferencing.
_DEFAULT_GSD: dict[str, float | None] = {"sen2naip": 2.5, "worldstrat": 1.5, "folder": None}
#: Whether harmonisation (NAIP → Sentinel-2 look) is on unless the user says otherwise.
HARMONIZE_DEFAULT: dict[str, bool] = {"sen2naip": True, "worldstrat": False, "folder": False}
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
    """

    path: Path
    rgb_bands: tuple[int, int, int]
    value_scale: float
    gsd: float
    width: int
    height: int


@dataclass
class HRDataset:
    """High-resolution images for RGB training, read once and cached.

    Attributes:
        kind: ``sen2naip``, ``worldstrat`` or ``folder``.
        root: the folder the images were found in.
        images: the usable images.
        skipped: one line per file left out and why.
    """

    kind: str
    root: Path
    images: tuple[HRImage, ...]
    skipped: tuple[str, ...] = ()
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def harmonize_default(self) -> bool:
        """Harmonisation default of the dataset kind (on for NAIP)."""
        return HARMONIZE_DEFAULT[self.kind]

    def read(self, index: int) -> np.ndarray:
        """Image ``index`` as ``(3, H, W)`` float32 R, G, B reflectance on the 2.5 m grid.

        Raises:
            InputError: the file can no longer be read.
        """
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        image = _read_resampled(self.images[index])
        if sum(a.nbytes for a in self._cache.values()) + image.nbytes <= HR_CACHE_BYTES:
            self._cache[index] = image
        return image

    def summary(self) -> list[str]:
        """Human-readable lines: what was found, sizes, pixel sizes, what was skipped."""
        sizes = [im.width * im.height for im in self.images]
        gsds = sorted({round(im.gsd, 4) for im in self.images})
        lines = [
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
) -> HRDataset:
    """Find and check the high-resolution images of a dataset.

    Args:
        kind: ``sen2naip``, ``worldstrat`` or ``folder``.
        data_dir: the local folder (searched recursively); optional for ``sen2naip`` with
            ``hub_repo``.
        min_size: smallest usable side at 2.5 m (the HR patch size); smaller images are skipped.
        gsd: declared pixel size of every file, metres (overrides georeferencing).
        value_scale: reflectance = value × value_scale (default by dtype).
        hub_repo: a Hugging Face dataset repository to download (``sen2naip`` only).
        hub_revision: its branch, tag or commit.

    Raises:
        InputError: unknown kind, missing/empty folder, an unreadable file, a file with fewer
            than 3 bands or no known pixel size, a pixel size coarser than 2.5 m, no image large
            enough, or the Hub cannot be reached.
    """
    layout = next((known for known in HR_KINDS if known == kind), None)
    if layout is None:
        raise InputError(f"--data {kind!r}: expected one of {', '.join(HR_KINDS)}")
    if gsd is not None and not (math.isfinite(gsd) and gsd > 0):
        raise InputError(f"--gsd must be a positive number of metres, got {gsd}")
    if value_scale is not None and not (math.isfinite(value_scale) and value_scale > 0):
        raise InputError(f"--value-scale must be a positive number, got {value_scale}")
    if hub_repo is not None:
        if kind != "sen2naip":
            raise InputError(f"--hub-repo works with --data sen2naip, not {kind}")
        root = download_hub_dataset(hub_repo, hub_revision, data_dir)
    elif data_dir is None:
        raise InputError(
            f"--data {kind} needs --data-dir PATH"
            + (" or --hub-repo ORG/NAME" if kind == "sen2naip" else "")
        )
    else:
        root = Path(data_dir).expanduser()
    files = _find_image_files(layout, root)
    images: list[HRImage] = []
    skipped: list[str] = []
    for path in files:
        image = _probe_hr(path, layout, gsd, value_scale)
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


def _find_image_files(kind: str, root: Path) -> list[Path]:
    if not root.exists():
        raise InputError(f"--data-dir {root}: does not exist")
    if root.is_file():
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
    return candidates


def _rgb_band_indexes(
    path: Path, descriptions: Sequence[str | None], colorinterp: Sequence[object]
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


def _file_gsd(dataset: DatasetReader) -> float | None:
    """The pixel size in metres of a georeferenced raster in a projected metric CRS, else None."""
    crs = getattr(dataset, "crs", None)
    if crs is None or not crs.is_projected:
        return None
    units = (crs.linear_units or "").lower()
    if units not in ("metre", "meter", "m", "metres", "meters"):
        return None
    res_x, res_y = dataset.res
    return float(math.sqrt(abs(res_x * res_y)))


def _probe_hr(path: Path, kind: str, gsd: float | None, value_scale: float | None) -> HRImage:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                count, dtype = src.count, src.dtypes[0]
                rgb = _rgb_band_indexes(path, src.descriptions, src.colorinterp)
                file_gsd = _file_gsd(src)
                width, height = src.width, src.height
    except (RasterioIOError, OSError) as exc:
        raise InputError(f"{path}: unreadable image ({exc})") from None
    if count < 3:
        raise InputError(
            f"{path}: has {count} band(s); RGB training needs R, G, B (3 or more bands)"
        )
    pixel = gsd or file_gsd or _DEFAULT_GSD[kind]
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
            with rasterio.open(image.path) as src:
                data = src.read(
                    list(image.rgb_bands),
                    out_shape=(3, image.height, image.width),
                    resampling=resampling,
                    out_dtype="float32",
                )
    except (RasterioIOError, OSError) as exc:
        raise InputError(f"{image.path}: unreadable image ({exc})") from None
    data *= np.float32(image.value_scale)
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return data


def download_hub_dataset(
    repo: str, revision: str | None, local_dir: str | os.PathLike[str] | None
) -> Path:
    """Download (or find cached) a Hugging Face *dataset* repository's GeoTIFFs; returns its folder.

    Raises:
        InputError: offline (``HF_HUB_OFFLINE``) with nothing cached, the Hub unreachable, or an
            unknown repository.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        path = snapshot_download(
            repo_id=repo,
            repo_type="dataset",
            revision=revision,
            allow_patterns=["*.tif", "*.tiff", "**/*.tif", "**/*.tiff"],
            local_dir=None if local_dir is None else str(local_dir),
            local_files_only=offline,
        )
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub cannot be reached"
        raise InputError(
            f"--hub-repo {repo}: {why} and the dataset is not in the local cache; go online once, "
            "or "
            "download it yourself and pass --data-dir"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--hub-repo {repo}: download failed ({first})") from None
    return Path(path)
