"""Training data: high-resolution RGB tiles for ``train rgb`` and Sentinel-2 patches for ``train fusion``.

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

**Fusion** (:func:`open_s2_products`, :class:`S2PatchSampler`): Sentinel-2 products read through
:func:`difffusr_cli.io.open_scene`, cut into patches of ``patch`` 10 m pixels (1440 m by default:
144/72/24 px at 10/20/60 m) aligned to the 60 m grid; patches with more than ``max_nodata`` of
invalid pixels in any group are skipped, the rest have nodata filled with the band mean.
Validation patches are held aside: the last products when there are several, else a strip at the
bottom of the only one.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from rasterio.windows import Window

from difffusr_cli.bands import GROUP_RATIO, GROUPS, OUTPUT_GSD, GroupName
from difffusr_cli.errors import InputError
from difffusr_cli.evaluate.fusion_blocks import read_native
from difffusr_cli.tiling import fill_invalid

HRKind = Literal["sen2naip", "worldstrat", "folder"]
HR_KINDS: tuple[str, ...] = ("sen2naip", "worldstrat", "folder")

#: File suffixes read as high-resolution images.
_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_TIFF_SUFFIXES = (".tif", ".tiff")
#: Pixel size (m) assumed for a dataset's files that carry no georeferencing.
_DEFAULT_GSD: dict[str, float | None] = {"sen2naip": 2.5, "worldstrat": 1.5, "folder": None}
#: Whether harmonisation (NAIP → Sentinel-2 look) is on unless the user says otherwise.
HARMONIZE_DEFAULT: dict[str, bool] = {"sen2naip": True, "worldstrat": False, "folder": False}
#: Images kept in memory (bytes of float32) before reads go back to the files.
_CACHE_BYTES = 2 << 30
#: Tolerance on "not coarser than 2.5 m".
_GSD_RTOL = 0.01
#: Smallest fusion patch, 10 m pixels (1440 m: whole pixels of every grid and of the
#: degraded Wald-protocol grids).
MIN_PATCH = 144


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
        if sum(a.nbytes for a in self._cache.values()) + image.nbytes <= _CACHE_BYTES:
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
                f"(smallest {min(sizes, default=0)} px, source pixel size {', '.join(f'{g:g}' for g in gsds)} m)"
            )
        ]
        lines += [f"  skipped {line}" for line in self.skipped]
        return lines


def open_hr_dataset(
    kind: HRKind,
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
    if kind not in HR_KINDS:
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
    files = _find_image_files(kind, root)
    images: list[HRImage] = []
    skipped: list[str] = []
    for path in files:
        image = _probe_hr(path, kind, gsd, value_scale)
        if min(image.width, image.height) < min_size:
            skipped.append(
                f"{path.name}: {image.width}×{image.height} px at {OUTPUT_GSD} m, smaller than the "
                f"{min_size} px patch"
            )
            continue
        images.append(image)
    if not images:
        raise InputError(
            f"{root}: none of the {len(files)} image(s) is at least {min_size} px at {OUTPUT_GSD} m "
            f"(first: {skipped[0]}); use a smaller --patch-size or a finer --gsd"
        )
    return HRDataset(kind=kind, root=root, images=tuple(images), skipped=tuple(skipped))


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
    """1-based indexes of R, G, B: from band descriptions, else colour interpretation, else 1, 2, 3."""
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
    if all(found.values()):
        return found["red"], found["green"], found["blue"]  # type: ignore[return-value]
    interp = [getattr(c, "name", str(c)).lower() for c in colorinterp]
    if all(c in interp for c in ("red", "green", "blue")):
        return interp.index("red") + 1, interp.index("green") + 1, interp.index("blue") + 1
    return 1, 2, 3


def _file_gsd(dataset: object) -> float | None:
    """The pixel size in metres of a georeferenced raster in a projected metric CRS, else None."""
    crs = getattr(dataset, "crs", None)
    if crs is None or not crs.is_projected:
        return None
    units = (crs.linear_units or "").lower()
    if units not in ("metre", "meter", "m", "metres", "meters"):
        return None
    res_x, res_y = dataset.res  # type: ignore[attr-defined]
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
            f"{path}: pixel size {pixel:g} m is coarser than the {OUTPUT_GSD} m the model learns to "
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
            f"--hub-repo {repo}: {why} and the dataset is not in the local cache; go online once, or "
            "download it yourself and pass --data-dir"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--hub-repo {repo}: download failed ({first})") from None
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Sentinel-2 products for fusion


def _list_file_entries(path: Path) -> list[tuple[int, Path]]:
    """``(line number, product path)`` of each entry of a ``.txt`` product list."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the product list ({exc})") from None
    entries = [
        (number, line.strip())
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if not entries:
        raise InputError(f"{path}: the product list is empty")
    return [
        (number, Path(e).expanduser() if Path(e).expanduser().is_absolute() else path.parent / e)
        for number, e in entries
    ]


#: Suffixes of the single-band rasters of a COG folder (a folder holding these is one product).
_BAND_FILE_SUFFIXES = (".tif", ".tiff", ".jp2")


def _is_product_itself(path: Path) -> bool:
    """True when a folder is meant as one product (a SAFE, or one holding band rasters), so that
    its open error is the real problem rather than a reason to look one level down."""
    from difffusr_cli.io.safe import looks_like_safe

    if looks_like_safe(path):
        return True
    return any(p.is_file() and p.suffix.lower() in _BAND_FILE_SUFFIXES for p in path.iterdir())


def _expand_products(paths: Iterable[Path]) -> list[tuple[Path, object]]:
    """``(path, Scene)`` for every product named or found one folder level down."""
    from difffusr_cli.io.safe import looks_like_safe
    from difffusr_cli.io.scene import open_scene

    scenes: list[tuple[Path, object]] = []
    for path in paths:
        if path.is_file() and path.suffix.lower() == ".txt":
            for number, entry in _list_file_entries(path):
                try:
                    scenes += _expand_products([entry])
                except InputError as exc:
                    raise InputError(f"{path}, line {number}: {exc}") from None
            continue
        if not path.exists():
            raise InputError(f"{path}: does not exist")
        try:
            scenes.append((path, open_scene(path)))
            continue
        except InputError as exc:
            # a product that fails to open (e.g. a truncated band file) is reported as it is
            if not path.is_dir() or _is_product_itself(path):
                raise
            first_error = str(exc)
        children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        found = []
        for child in children:
            if child.is_dir() or child.suffix.lower() in (".zip", ".json"):
                try:
                    found.append((child, open_scene(child)))
                except InputError:
                    # a broken SAFE among the products is an error, not a folder to skip
                    if child.is_dir() and looks_like_safe(child):
                        raise
                    continue
        if not found:
            raise InputError(
                f"{path}: no Sentinel-2 product found here or one level down ({first_error})"
            )
        scenes += found
    return scenes


@dataclass(frozen=True)
class _Region:
    """Rows ``[row0, row1)`` and columns ``[0, width)`` of a scene's 10 m grid."""

    scene_index: int
    row0: int
    row1: int
    width: int


class S2PatchSampler:
    """Random Sentinel-2 patches for the fusion nets, with validation patches held aside.

    Args:
        scenes: opened products (``difffusr_cli.io.Scene``) with all 12 bands.
        names: a label per scene for messages.
        patch: patch side in 10 m pixels (multiple of 6: the 60 m grid).
        max_nodata: largest invalid fraction of a patch in any group.
        val_fraction: share of the products (several) or of the rows (one product) held aside.

    Raises:
        InputError: a product too small for one patch, or no room for validation.
    """

    def __init__(
        self,
        scenes: Sequence[object],
        names: Sequence[str],
        patch: int,
        max_nodata: float,
        val_fraction: float,
    ) -> None:
        self.scenes = list(scenes)
        self.names = list(names)
        self.patch = patch
        self.max_nodata = max_nodata
        self._cache: dict[int, dict[GroupName, tuple[np.ndarray, np.ndarray]]] = {}
        for name, scene in zip(self.names, self.scenes):
            side = min(scene.width, scene.height)  # type: ignore[attr-defined]
            if side < MIN_PATCH:
                raise InputError(
                    f"{name}: {scene.width}×{scene.height} px at 10 m is too small for training; "  # type: ignore[attr-defined]
                    f"the smallest patch is {MIN_PATCH} px ({MIN_PATCH * 10} m)"
                )
            if side < patch:
                largest = side // MIN_PATCH * MIN_PATCH
                raise InputError(
                    f"{name}: {scene.width}×{scene.height} px at 10 m is smaller than one "  # type: ignore[attr-defined]
                    f"{patch} px patch; use --patch-size {largest} or less (a multiple of {MIN_PATCH})"
                )
        self.train_regions, self.val_regions = self._split(val_fraction)

    def _split(self, val_fraction: float) -> tuple[list[_Region], list[_Region]]:
        whole = [_Region(i, 0, s.height - s.height % 6, s.width) for i, s in enumerate(self.scenes)]  # type: ignore[attr-defined]
        if len(whole) >= 2:
            n_val = min(len(whole) - 1, max(1, round(val_fraction * len(whole))))
            return whole[:-n_val], whole[-n_val:]
        region = whole[0]
        strip = max(self.patch, 6 * math.ceil(val_fraction * region.row1 / 6))
        if region.row1 - strip < self.patch:
            raise InputError(
                f"{self.names[0]}: {region.row1} rows cannot hold a {self.patch} px training patch and "
                f"a {strip} px validation strip; give two or more products or a larger one"
            )
        return (
            [_Region(0, 0, region.row1 - strip, region.width)],
            [_Region(0, region.row1 - strip, region.row1, region.width)],
        )

    def summary(self) -> list[str]:
        """Human-readable lines: products, sizes, how the data were split."""
        lines = [
            (
                f"{len(self.scenes)} Sentinel-2 product(s), patches of {self.patch} px "
                f"({self.patch * 10} m) with at most {self.max_nodata:.0%} nodata:"
            )
        ]
        for i, (name, scene) in enumerate(zip(self.names, self.scenes)):
            uses = {
                role: region
                for role, regions in (
                    ("training", self.train_regions),
                    ("validation", self.val_regions),
                )
                for region in regions
                if region.scene_index == i
            }
            # one product serves both: say which rows each part uses
            detail = ", ".join(
                f"{role} rows {r.row0}–{r.row1}" if len(uses) > 1 else role
                for role, r in uses.items()
            )
            size = f"{scene.width}×{scene.height} px at 10 m"  # type: ignore[attr-defined]
            lines.append(f"  {name} ({scene.kind}, {size}): {detail}")  # type: ignore[attr-defined]
        return lines

    def _read(
        self, scene_index: int, row: int, col: int
    ) -> dict[GroupName, tuple[np.ndarray, np.ndarray]]:
        """``group → (data (C, h, w), valid (h, w))`` of one patch on the native grids.

        Bands delivered on the 10 m grid (a stacked GeoTIFF) are area-averaged to their native
        grid first (:func:`~difffusr_cli.evaluate.fusion_blocks.read_native`), so that a patch
        is the same whatever the product's format.
        """
        scene = self.scenes[scene_index]
        full = self._full_scene(scene_index)
        out: dict[GroupName, tuple[np.ndarray, np.ndarray]] = {}
        for group, ratio in GROUP_RATIO.items():
            if full is not None:
                data, valid = full[group]
                r0, c0, n = row // ratio, col // ratio, self.patch // ratio
                out[group] = (data[:, r0 : r0 + n, c0 : c0 + n], valid[r0 : r0 + n, c0 : c0 + n])
            else:
                out[group] = read_native(scene, group, Window(col, row, self.patch, self.patch))
        return out

    def _full_scene(
        self, scene_index: int
    ) -> dict[GroupName, tuple[np.ndarray, np.ndarray]] | None:
        """The whole scene in memory when it fits the cache budget (reads are then slices)."""
        if scene_index in self._cache:
            return self._cache[scene_index]
        scene = self.scenes[scene_index]
        pixels = scene.width * scene.height  # type: ignore[attr-defined]
        need = pixels * 4 * sum(len(GROUPS[g]) / GROUP_RATIO[g] ** 2 for g in GROUPS)
        used = sum(d.nbytes for c in self._cache.values() for d, _ in c.values())
        if used + need > _CACHE_BYTES:
            return None
        # whole 60 m cells only, so that every group nests (patches never reach past them)
        width, height = scene.width, scene.height  # type: ignore[attr-defined]
        window = Window(0, 0, width - width % 6, height - height % 6)
        full = {group: read_native(scene, group, window) for group in GROUPS}
        self._cache[scene_index] = full
        return full

    def _draw(
        self, rng: np.random.Generator, regions: Sequence[_Region], flips: bool
    ) -> dict[GroupName, np.ndarray]:
        tries = 0
        while True:
            region = regions[int(rng.integers(len(regions)))]
            rows = (region.row1 - region.row0 - self.patch) // 6 + 1
            cols = (region.width - self.patch) // 6 + 1
            row = region.row0 + 6 * int(rng.integers(rows))
            col = 6 * int(rng.integers(cols))
            patch = self._read(region.scene_index, row, col)
            if all(1.0 - valid.mean() <= self.max_nodata for _, valid in patch.values()):
                break
            tries += 1
            if tries >= 200:
                names = ", ".join(sorted({self.names[r.scene_index] for r in regions}))
                raise InputError(
                    f"{names}: no patch with at most {self.max_nodata:.0%} nodata found in 200 draws; "
                    "the products are mostly nodata"
                )
        result = {g: fill_invalid(data, valid) for g, (data, valid) in patch.items()}
        if flips:
            if rng.random() < 0.5:
                result = {g: a[:, :, ::-1] for g, a in result.items()}
            if rng.random() < 0.5:
                result = {g: a[:, ::-1, :] for g, a in result.items()}
        return {g: np.ascontiguousarray(a) for g, a in result.items()}

    def batch(
        self, rng: np.random.Generator, size: int, split: Literal["train", "val"]
    ) -> dict[GroupName, np.ndarray]:
        """``size`` patches: ``group → (size, C, h, w)`` float32 reflectance (group band order).

        Training patches are flipped at random; validation patches are not.
        """
        regions = self.train_regions if split == "train" else self.val_regions
        patches = [self._draw(rng, regions, flips=split == "train") for _ in range(size)]
        return {g: np.stack([p[g] for p in patches]) for g in GROUPS}


def open_s2_products(
    paths: Sequence[str | os.PathLike[str]], *, patch: int, max_nodata: float, val_fraction: float
) -> S2PatchSampler:
    """Open the Sentinel-2 products named by ``paths`` and prepare patch sampling.

    Each path is a product (``.SAFE``, ``.SAFE.zip``, ``MTD_MSIL2A.xml``, COG folder, STAC item,
    multi-band GeoTIFF), a folder holding products one level down, or a ``.txt`` file listing
    products one per line (relative to the list; ``#`` comments).

    Raises:
        InputError: nothing given, a path without products, a product lacking bands, or products
            too small for the patch size.
    """
    if not paths:
        raise InputError("train fusion needs Sentinel-2 products: --data-dir PATH (repeatable)")
    opened = _expand_products(Path(p).expanduser() for p in paths)
    for path, scene in opened:
        scene.require_bands()  # type: ignore[attr-defined]
    names = [str(path) for path, _ in opened]
    return S2PatchSampler([s for _, s in opened], names, patch, max_nodata, val_fraction)
