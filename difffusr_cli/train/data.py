"""Training data for ``train fusion``: Sentinel-2 patches (RGB tiles and pairs: :mod:`.hr_data`).

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from rasterio.windows import Window

from difffusr_cli.bands import GROUP_RATIO, GROUPS, GroupName
from difffusr_cli.errors import InputError
from difffusr_cli.tiling import fill_invalid
from difffusr_cli.train.hr_data import (
    HARMONIZE_DEFAULT,
    HR_KINDS,
    PAIRS_MODES,
    HRDataset,
    HRImage,
    download_hub_dataset,
    open_hr_dataset,
)

if TYPE_CHECKING:
    from difffusr_cli.io.scene import Scene

__all__ = [
    "HARMONIZE_DEFAULT",
    "HR_KINDS",
    "MIN_PATCH",
    "PAIRS_MODES",
    "HRDataset",
    "HRImage",
    "S2PatchSampler",
    "download_hub_dataset",
    "open_hr_dataset",
    "open_s2_products",
]


#: Scene pixels kept in memory (bytes of float32) before reads go window by window.
_CACHE_BYTES = 2 << 30
#: Smallest fusion patch, 10 m pixels (1440 m: whole pixels of every grid and of the
#: degraded Wald-protocol grids).
MIN_PATCH = 144


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
    """True when a folder is meant as one product (a SAFE, or one holding band rasters).

    Then its open error is the real problem rather than a reason to look one level down.
    """
    from difffusr_cli.io.safe import looks_like_safe

    if looks_like_safe(path):
        return True
    return any(p.is_file() and p.suffix.lower() in _BAND_FILE_SUFFIXES for p in path.iterdir())


def _expand_products(paths: Iterable[Path]) -> list[tuple[Path, Scene]]:
    """``(path, Scene)`` for every product named or found one folder level down."""
    from difffusr_cli.io.safe import looks_like_safe
    from difffusr_cli.io.scene import open_scene

    scenes: list[tuple[Path, Scene]] = []
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
        scenes: Sequence[Scene],
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
        for name, scene in zip(self.names, self.scenes, strict=False):
            side = min(scene.width, scene.height)
            if side < MIN_PATCH:
                raise InputError(
                    f"{name}: {scene.width}×{scene.height} px at 10 m is too small for training; "
                    f"the smallest patch is {MIN_PATCH} px ({MIN_PATCH * 10} m)"
                )
            if side < patch:
                largest = side // MIN_PATCH * MIN_PATCH
                raise InputError(
                    f"{name}: {scene.width}×{scene.height} px at 10 m is smaller than one "
                    f"{patch} px patch; use --patch-size {largest} or less (a multiple of "
                    f"{MIN_PATCH})"
                )
        self.train_regions, self.val_regions = self._split(val_fraction)

    def _split(self, val_fraction: float) -> tuple[list[_Region], list[_Region]]:
        whole = [_Region(i, 0, s.height - s.height % 6, s.width) for i, s in enumerate(self.scenes)]
        if len(whole) >= 2:
            n_val = min(len(whole) - 1, max(1, round(val_fraction * len(whole))))
            return whole[:-n_val], whole[-n_val:]
        region = whole[0]
        strip = max(self.patch, 6 * math.ceil(val_fraction * region.row1 / 6))
        if region.row1 - strip < self.patch:
            raise InputError(
                f"{self.names[0]}: {region.row1} rows cannot hold a {self.patch} px training "
                "patch and "
                f"a {strip} px validation strip; give two or more products or a larger one"
            )
        return (
            [_Region(0, 0, region.row1 - strip, region.width)],
            [_Region(0, region.row1 - strip, region.row1, region.width)],
        )

    def scene_ids(self, split: Literal["train", "val"]) -> list[str]:
        """Product ids of the scenes whose pixels ``split`` draws from (the run's manifest).

        ``eval fusion`` reads them from the weights and does not score the nets on these scenes.
        """
        regions = self.train_regions if split == "train" else self.val_regions
        return list(dict.fromkeys(self.scenes[r.scene_index].product_id for r in regions))

    def summary(self) -> list[str]:
        """Human-readable lines: products, sizes, how the data were split."""
        lines = [
            (
                f"{len(self.scenes)} Sentinel-2 product(s), patches of {self.patch} px "
                f"({self.patch * 10} m) with at most {self.max_nodata:.0%} nodata:"
            )
        ]
        for i, (name, scene) in enumerate(zip(self.names, self.scenes, strict=False)):
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
            size = f"{scene.width}×{scene.height} px at 10 m"
            lines.append(f"  {name} ({scene.kind}, {size}): {detail}")
        return lines

    def _read(
        self, scene_index: int, row: int, col: int
    ) -> dict[GroupName, tuple[np.ndarray, np.ndarray]]:
        """``group → (data (C, h, w), valid (h, w))`` of one patch on the native grids.

        Bands delivered on the 10 m grid (a stacked GeoTIFF) are area-averaged to their native
        grid first (:meth:`~difffusr_cli.io.Scene.read_native`), so that a patch
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
                out[group] = scene.read_native(group, Window(col, row, self.patch, self.patch))
        return out

    def _full_scene(
        self, scene_index: int
    ) -> dict[GroupName, tuple[np.ndarray, np.ndarray]] | None:
        """The whole scene in memory when it fits the cache budget (reads are then slices)."""
        if scene_index in self._cache:
            return self._cache[scene_index]
        scene = self.scenes[scene_index]
        pixels = scene.width * scene.height
        need = pixels * 4 * sum(len(GROUPS[g]) / GROUP_RATIO[g] ** 2 for g in GROUPS)
        used = sum(d.nbytes for c in self._cache.values() for d, _ in c.values())
        if used + need > _CACHE_BYTES:
            return None
        # whole 60 m cells only, so that every group nests (patches never reach past them)
        width, height = scene.width, scene.height
        window = Window(0, 0, width - width % 6, height - height % 6)
        full = {group: scene.read_native(group, window) for group in GROUPS}
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
                    f"{names}: no patch with at most {self.max_nodata:.0%} nodata found in 200 "
                    "draws; "
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
    for _path, scene in opened:
        scene.require_bands()
    names = [str(path) for path, _ in opened]
    return S2PatchSampler([s for _, s in opened], names, patch, max_nodata, val_fraction)
