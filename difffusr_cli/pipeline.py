"""The ``difffusr superres`` pipeline: Sentinel-2 L2A scenes → 12-band 2.5 m GeoTIFFs.

Flow for one scene (see docs/superres.md): the processed region is covered by diffusion patches
and by fusion tiles (:mod:`difffusr_cli.tiling`). Output blocks (strips of rows) are produced top
to bottom; each pulls the fusion-tile rows it needs, which pull the patch rows they need, each
computed once and blended into rolling buffers. A block is written, flushed and recorded in the
progress file, then its rows are dropped. Memory therefore depends on the block, patch, tile and
batch sizes and on the region's width, never on its height.

Entry points: :func:`superres_many` (what the CLI calls), :func:`superres_scene` (one opened
scene, models already loaded) and :func:`load_models`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import rasterio.windows
import torch
from rasterio.windows import Window
from torch import Tensor

from difffusr_cli import __version__
from difffusr_cli.bands import BAND_NAMES, GROUP_RATIO, GROUPS, RGB, SCALE, GroupName, indices
from difffusr_cli.device import (
    autocast,
    describe,
    peak_memory,
    precision_name,
    reset_peak_memory,
    select_device,
    select_precision,
)
from difffusr_cli.errors import InputError, OutputError
from difffusr_cli.tiling import (
    ALIGN,
    Contribution,
    Layout,
    RowStage,
    Span,
    blend_weights,
    fill_invalid,
    patch_noise,
    round_up,
)

if TYPE_CHECKING:
    from difffusr_cli.io import Scene
    from difffusr_cli.models.predictors import FusionPredictor, RGBSuperResolver
    from difffusr_cli.weights import Reporter

FusionMethod = Literal["net", "gs", "bilinear"]
OutputDType = Literal["uint16", "float32"]
FUSION_METHODS: tuple[str, ...] = ("net", "gs", "bilinear")
#: 10 m pixels per 60 m pixel: processed windows are widened to whole 60 m pixels.
WINDOW_ALIGN = GROUP_RATIO["60m"]
#: Product file name for an input in ``-o DIR`` mode: ``<input stem>`` + this.
PRODUCT_SUFFIX = "_difffusr.tif"
#: Columns written at a time (a multiple of the product's 512-pixel internal tiles).
WRITE_COLUMNS = 4096
#: A written piece: window on the region's 2.5 m grid, (12, h, w) reflectance, (h, w) validity.
Piece = tuple[Window, np.ndarray, np.ndarray]
#: How the validity of output pixels is decided (also written to the product's tags).
NODATA_RULE = (
    "an output pixel is nodata when the 10 m, 20 m or 60 m pixel containing it is nodata "
    "(DN 0 or outside the scene) in any band of its group"
)


# ---------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class SuperresOptions:
    """Everything that controls a ``superres`` run (the CLI options, validated once).

    Sizes are in 2.5 m output pixels unless said otherwise.

    Attributes:
        rgb_model, fusion_model: manifest name or weights file; None = the manifest's default.
        fusion: ``net`` (learned nets), ``gs`` (Gram–Schmidt) or ``bilinear``.
        steps: DDIM sampler steps (network calls) per patch.
        seed: noise seed; each patch's noise depends on (seed, patch row, patch column) only.
        patch_size, overlap: diffusion patch side and overlap (multiples of 4).
        batch_size: patches per network call (patches of one patch row only).
        device: ``auto | cpu | cuda | cuda:N | mps``.
        precision: ``auto | fp32 | bf16 | fp16`` (auto: bf16 autocast on CUDA, fp32 elsewhere).
        window: ``(col, row, width, height)`` on the 10 m grid, or None.
        bbox: ``(xmin, ymin, xmax, ymax)`` in the scene's CRS, or None.
        dtype: ``uint16`` (input DN convention, scale/offset in the metadata) or ``float32``.
        cog: write a Cloud-Optimized GeoTIFF with overviews.
        resume: continue an interrupted run; overwrite: replace existing outputs.
        quiet: no progress bar and no summary.
        scale, offset: override the input's radiometric convention (reflectance = DN·scale + offset).
        fusion_tile, fusion_overlap: fusion tile side and blended overlap (multiples of 24).
        block_rows: output rows written (and recorded for resume) at a time.
    """

    rgb_model: str | None = None
    fusion_model: str | None = None
    fusion: FusionMethod = "net"
    steps: int = 20
    seed: int = 0
    patch_size: int = 256
    overlap: int = 32
    batch_size: int = 4
    device: str = "auto"
    precision: str = "auto"
    window: tuple[int, int, int, int] | None = None
    bbox: tuple[float, float, float, float] | None = None
    dtype: OutputDType = "uint16"
    cog: bool = False
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    scale: float | None = None
    offset: float | None = None
    fusion_tile: int = 480
    fusion_overlap: int = 48
    block_rows: int = 512

    def validate(self) -> None:
        """Check values and combinations; raises ``InputError`` with the offending option."""
        if self.fusion not in FUSION_METHODS:
            raise InputError(f"--fusion {self.fusion!r}: expected one of {', '.join(FUSION_METHODS)}")
        if self.fusion_model is not None and self.fusion != "net":
            raise InputError(f"--fusion-model is only used with --fusion net, not with --fusion {self.fusion}")
        if not 2 <= self.steps <= 1000:
            # The DDIM sampler needs a first and a last step (difffusr_cli.diffusion.ddim_timesteps).
            raise InputError(f"--steps {self.steps}: expected 2 to 1000")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed}: expected a non-negative integer")
        if self.patch_size < 16 or self.patch_size % 4:
            raise InputError(f"--patch-size {self.patch_size}: expected a multiple of 4 (whole 10 m pixels), at least 16")
        if self.overlap < 0 or self.overlap % 4 or self.overlap > self.patch_size // 2:
            raise InputError(
                f"--overlap {self.overlap}: expected a multiple of 4 between 0 and half the patch size ({self.patch_size // 2})"
            )
        if self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size}: expected at least 1")
        if self.window is not None and self.bbox is not None:
            raise InputError("give --window or --bbox, not both")
        if self.window is not None:
            col, row, width, height = self.window
            if width <= 0 or height <= 0:
                raise InputError(f"--window {col} {row} {width} {height}: width and height must be positive")
        if self.bbox is not None:
            xmin, ymin, xmax, ymax = self.bbox
            if not (xmin < xmax and ymin < ymax):
                raise InputError(f"--bbox {xmin} {ymin} {xmax} {ymax}: expected XMIN < XMAX and YMIN < YMAX")
        if self.dtype not in ("uint16", "float32"):
            raise InputError(f"--dtype {self.dtype!r}: expected uint16 or float32")
        if self.resume and self.overwrite:
            raise InputError("give --resume or --overwrite, not both")
        if self.fusion_tile < ALIGN or self.fusion_tile % ALIGN:
            raise InputError(f"fusion tile {self.fusion_tile}: expected a positive multiple of {ALIGN}")
        if self.fusion_overlap < 0 or self.fusion_overlap % ALIGN or self.fusion_overlap >= self.fusion_tile:
            raise InputError(f"fusion overlap {self.fusion_overlap}: expected a multiple of {ALIGN} below the tile size")
        if self.block_rows < 1:
            raise InputError(f"block rows {self.block_rows}: expected at least 1")


# ---------------------------------------------------------------------------------------------
# Models


class SuperResolver(Protocol):
    """What the pipeline needs of :class:`~difffusr_cli.models.predictors.RGBSuperResolver`."""

    def super_resolve(self, lr: Tensor, steps: int = 20, *, noise: Tensor | None = None) -> Tensor: ...


#: ``(rgb_sr (B,3,H,W), groups, valid (B,H,W) bool) -> (B,12,H,W)`` reflectance in product order.
FusionFn = Callable[[Tensor, Mapping[str, Tensor], Tensor], Tensor]


@dataclass(frozen=True)
class ModelInfo:
    """Provenance of one model: the name or path it was asked by, and the weights' sha256."""

    name: str
    sha256: str


@dataclass(frozen=True)
class Models:
    """The models of a run, loaded once and shared by every input.

    Attributes:
        rgb: the diffusion super-resolver.
        method: what ``fuse`` is; with ``gs``/``bilinear`` B02–B04 are the diffusion RGB itself.
        fuse: the fusion step (learned nets or a baseline) with the :data:`FusionFn` signature.
        fusion_halo: how far (10 m pixels) a fused pixel's inputs reach.
        patch_multiple: the patch size must be a multiple of this (the U-Net's down-sampling).
        rgb_info, fusion_info: provenance (``fusion_info`` is None for gs/bilinear).
    """

    rgb: SuperResolver
    method: FusionMethod
    fuse: FusionFn
    fusion_halo: int
    patch_multiple: int
    rgb_info: ModelInfo
    fusion_info: ModelInfo | None = None


def _weights_sha256(path: Path) -> str:
    """The sha256 of a weights file: its source checkpoint's, recorded beside a converted file,
    else computed."""
    from difffusr_cli.weights import StderrReporter, sha256_file

    record = path.with_suffix(".json")
    if path.suffix == ".safetensors" and record.is_file():
        try:
            recorded = json.loads(record.read_text(encoding="utf-8")).get("source", {}).get("sha256")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if isinstance(recorded, str) and recorded:
            return recorded
    return sha256_file(path, StderrReporter())


def build_models(
    rgb: RGBSuperResolver,
    fusion: FusionPredictor | None,
    method: FusionMethod,
    rgb_info: ModelInfo,
    fusion_info: ModelInfo | None = None,
) -> Models:
    """Bundle loaded networks for the pipeline (``fusion`` is used only with ``method="net"``)."""
    from difffusr_cli.evaluate.gram_schmidt import bilinear_fuse, gram_schmidt_fuse

    unet = rgb.config.unet
    # The U-Net folds the image by `fold`, then halves it once per level below the first.
    patch_multiple = unet.fold * 2 ** (unet.levels - 1)
    if method == "net":
        if fusion is None:
            raise ValueError("fusion method 'net' needs a fusion model")
        return Models(
            rgb=rgb,
            method="net",
            fuse=lambda rgb_sr, groups, valid: fusion(rgb_sr, groups),
            fusion_halo=fusion.receptive_halo,
            patch_multiple=patch_multiple,
            rgb_info=rgb_info,
            fusion_info=fusion_info,
        )
    baseline = gram_schmidt_fuse if method == "gs" else bilinear_fuse
    # Bilinear upsampling of the 60 m group reaches one 60 m pixel further.
    return Models(rgb, method, baseline, WINDOW_ALIGN, patch_multiple, rgb_info)


def load_models(options: SuperresOptions, device: torch.device, reporter: Reporter | None = None) -> Models:
    """Resolve, verify and load the models ``options`` names, once, onto ``device``.

    Raises:
        WeightsError: unknown name, missing/unsafe/mismatched weights, or no Hub access.
    """
    from difffusr_cli import api, weights

    rgb_name = options.rgb_model or weights.default_model_name("rgb")
    rgb_path = weights.resolve(rgb_name, "rgb", reporter=reporter)
    rgb = api.load_rgb_model(rgb_path, device, reporter=reporter)
    rgb_info = ModelInfo(str(rgb_name), _weights_sha256(rgb_path))
    if options.fusion != "net":
        return build_models(rgb, None, options.fusion, rgb_info)
    fusion_name = options.fusion_model or weights.default_model_name("fusion")
    fusion_path = weights.resolve(fusion_name, "fusion", reporter=reporter)
    fusion = api.load_fusion_model(fusion_path, device, reporter=reporter)
    return build_models(rgb, fusion, "net", rgb_info, ModelInfo(str(fusion_name), _weights_sha256(fusion_path)))


# ---------------------------------------------------------------------------------------------
# The processed region


def resolve_region(scene: Scene, window: Sequence[int] | None, bbox: Sequence[float] | None) -> Window:
    """The part of the scene to process, on the 10 m grid, widened to whole 60 m pixels.

    ``window`` is ``(col, row, width, height)`` in 10 m pixels, ``bbox`` ``(xmin, ymin, xmax,
    ymax)`` in the scene's CRS (pixels it touches are included). The result is widened outward to
    multiples of 6 pixels from the scene origin (so every band group reads whole native pixels)
    and clipped to the scene.

    Raises:
        InputError: the window or bbox does not overlap the scene.
    """
    width, height = int(scene.width), int(scene.height)
    if window is not None:
        col0, row0 = int(window[0]), int(window[1])
        col1, row1 = col0 + int(window[2]), row0 + int(window[3])
        what = f"--window {' '.join(str(int(v)) for v in window)}"
    elif bbox is not None:
        exact = rasterio.windows.from_bounds(*bbox, transform=scene.transform)
        # Tolerate float noise so a bbox on pixel edges does not grow by a pixel.
        col0 = int(np.floor(exact.col_off + 1e-6))
        row0 = int(np.floor(exact.row_off + 1e-6))
        col1 = int(np.ceil(exact.col_off + exact.width - 1e-6))
        row1 = int(np.ceil(exact.row_off + exact.height - 1e-6))
        what = f"--bbox {' '.join(f'{v:g}' for v in bbox)}"
    else:
        col0, row0, col1, row1 = 0, 0, width, height
        what = "the scene"
    col0, row0 = max(col0 // WINDOW_ALIGN * WINDOW_ALIGN, 0), max(row0 // WINDOW_ALIGN * WINDOW_ALIGN, 0)
    col1, row1 = min(round_up(col1, WINDOW_ALIGN), width), min(round_up(row1, WINDOW_ALIGN), height)
    if col1 <= col0 or row1 <= row0:
        raise InputError(f"{what} does not overlap {scene.path} ({width} × {height} pixels at 10 m)")
    return Window(col0, row0, col1 - col0, row1 - row0)


def make_layout(region: Window, options: SuperresOptions, fusion_halo: int) -> Layout:
    """The tiling of ``region`` for ``options`` and a fusion step reaching ``fusion_halo`` 10 m pixels."""
    return Layout(
        height=int(region.height) * SCALE,
        width=int(region.width) * SCALE,
        patch=options.patch_size,
        overlap=options.overlap,
        tile=options.fusion_tile,
        tile_overlap=options.fusion_overlap,
        halo=round_up(fusion_halo * SCALE, ALIGN),
        block_rows=options.block_rows,
    )


# ---------------------------------------------------------------------------------------------
# Rendering one region


@dataclass
class Counters:
    """What a render did so far."""

    patches_run: int = 0
    patches_skipped: int = 0
    tiles_run: int = 0
    tiles_skipped: int = 0


class Renderer:
    """Produces the 12-band 2.5 m product of one region, block by block.

    Args:
        scene: an opened :class:`~difffusr_cli.io.Scene` (``read_bands``/``read_group``).
        region: the processed window of the 10 m grid (see :func:`resolve_region`).
        layout: the tiling of the region.
        models: the models (their ``method`` decides what B02–B04 are).
        steps, seed, batch_size: sampler settings.
        device, dtype: where and in what precision the networks run.
        on_patches: called with the number of patches finished (run or skipped).
    """

    def __init__(
        self,
        scene: Scene,
        region: Window,
        layout: Layout,
        models: Models,
        *,
        steps: int,
        seed: int,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
        on_patches: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.scene, self.region, self.layout, self.models = scene, region, layout, models
        self.steps, self.seed, self.batch_size = steps, seed, batch_size
        self.device, self.dtype = device, dtype
        self.on_patches = on_patches
        self.counters = Counters()
        self._patch_weights = blend_weights(layout.patch, layout.overlap)
        self._tile_weights = blend_weights(layout.tile_shape, layout.tile_overlaps)
        th, p = layout.tile_shape[0], layout.patch
        # The RGB rows one fusion-tile row reads, plus the patch row reaching furthest below them.
        sr_rows = min(max(layout.height, p), th + 2 * layout.halo + p)
        self.sr = RowStage(layout.patch_rows, p, layout.height, layout.width, 3, self._patch_row, sr_rows)
        # 12 bands + validity (blended like the bands; every tile agrees on it, so it stays 0 or 1);
        # held from a block's first row to the bottom of the last tile row it needed.
        fused_rows = min(max(layout.height, th), layout.block_rows + th)
        self.fused = RowStage(layout.tile_rows, th, layout.height, layout.width, 13, self._tile_row, fused_rows)

    # -- blocks ----------------------------------------------------------------------------
    def blocks(self, done: Iterable[int] = ()) -> Iterator[tuple[int, Iterator[Piece]]]:
        """Yield ``(block index, its pieces)`` for every block not in ``done``, top to bottom.

        The pieces (consume them before asking for the next block) are column chunks of the
        block: ``(window on the region's 2.5 m grid, (12, h, w) float32 reflectance, (h, w)
        bool validity)``, narrow enough that no full-width copy of the block is ever made.
        """
        done = set(done)
        restart = False
        for index in range(self.layout.block_count):
            rows = self.layout.block(index)
            if index in done:
                restart = True
                continue
            if restart:
                self._restart(rows.start)
                restart = False
            self.fused.ensure(rows.stop)
            yield index, self._pieces(rows)
            self.fused.drop_before(rows.stop)

    def _pieces(self, rows: Span) -> Iterator[Piece]:
        for start in range(0, self.layout.width, WRITE_COLUMNS):
            cols = Span(start, min(start + WRITE_COLUMNS, self.layout.width))
            data, covered = self.fused.read(rows, cols)
            yield Window(cols.start, rows.start, cols.size, rows.size), data[:12], covered & (data[12] > 0.5)

    def _restart(self, row: int) -> None:
        """Start computing again at output row ``row`` (after blocks skipped on resume)."""
        self.fused.restart(row)
        self.sr.restart(self._sr_rows_needed_from(row))

    def _sr_rows_needed_from(self, row: int) -> int:
        """The first RGB row the fusion tiles reaching below output row ``row`` read."""
        tops, tile_height = self.layout.tile_rows, self.layout.tile_shape[0]
        first = next((top for top in tops if top + tile_height > row), row)
        return max(first - self.layout.halo, 0)

    def patches_to_run(self, done: Iterable[int]) -> int:
        """How many patches a run that skips the ``done`` blocks goes through (progress total)."""
        done = set(done)
        todo = [i for i in range(self.layout.block_count) if i not in done]
        if not todo:
            return 0
        first = self._sr_rows_needed_from(self.layout.block(todo[0]).start) if done else 0
        rows = [top for top in self.layout.patch_rows if top + self.layout.patch > first]
        return len(rows) * len(self.layout.patch_cols)

    # -- reading ---------------------------------------------------------------------------
    def _read(self, names: Sequence[str], window: Window) -> tuple[np.ndarray, np.ndarray, int]:
        """Bands on their delivered grid for a window of the 10 m grid, ready for a network.

        Nodata inside the scene is filled with the mean of the valid pixels read (so it cannot
        spread); outside the scene the edge is replicated (like the RGB guidance). Returns the
        ``(C, h, w)`` data, the ``(h, w)`` validity (False outside the scene) and the grid's ratio
        to the 10 m grid. ``window`` must start on whole 60 m pixels.
        """
        scene = self.scene
        col0, row0 = max(int(window.col_off), 0), max(int(window.row_off), 0)
        col1 = min(int(window.col_off + window.width), scene.width)
        row1 = min(int(window.row_off + window.height), scene.height)
        block = scene.read_bands(names, Window(col0, row0, col1 - col0, row1 - row0))
        ratio = block.ratio
        h, w = int(window.height) // ratio, int(window.width) // ratio
        top, left = (row0 - int(window.row_off)) // ratio, (col0 - int(window.col_off)) // ratio
        bottom, right = h - top - block.valid.shape[0], w - left - block.valid.shape[1]
        if min(bottom, right) < 0:
            raise InputError(f"{scene.path}: the bands {', '.join(names)} do not nest in the 10 m grid")
        data = np.pad(fill_invalid(block.data, block.valid), ((0, 0), (top, bottom), (left, right)), mode="edge")
        valid = np.pad(block.valid, ((top, bottom), (left, right)), constant_values=False)
        return data, valid, ratio

    # -- diffusion patches -----------------------------------------------------------------
    def _patch_row(self, index: int, top: int) -> Iterator[Contribution]:
        """Super-resolve one row of patches (batched), skipping patches without valid pixels."""
        patch, cols = self.layout.patch, self.layout.patch_cols
        lr_size = patch // SCALE
        window = Window(self.region.col_off, self.region.row_off + top // SCALE, (cols[-1] + patch) // SCALE, lr_size)
        lr_strip, valid, _ = self._read(RGB, window)
        todo: list[tuple[int, int]] = []
        for col, left in enumerate(cols):
            if valid[:, left // SCALE : left // SCALE + lr_size].any():
                todo.append((col, left))
            else:
                self.counters.patches_skipped += 1
                self.on_patches(1)
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            lr = np.stack([lr_strip[:, :, left // SCALE : left // SCALE + lr_size] for _, left in batch])
            noise = torch.stack([patch_noise(self.seed, index, col, patch) for col, _ in batch])
            with autocast(self.device, self.dtype):
                sr = self.models.rgb.super_resolve(
                    torch.from_numpy(lr).to(self.device), steps=self.steps, noise=noise.to(self.device)
                )
            for (_, left), values in zip(batch, sr.float().cpu().numpy()):
                yield left, values, self._patch_weights
            self.counters.patches_run += len(batch)
            self.on_patches(len(batch))

    # -- fusion tiles ----------------------------------------------------------------------
    def _tile_row(self, index: int, top: int) -> Iterator[Contribution]:
        """Fuse one row of tiles: 12 bands + validity per tile, context ``halo`` cropped away."""
        layout, halo = self.layout, self.layout.halo
        th, tw = layout.tile_shape
        rows_in = Span(top - halo, top + th + halo)
        strip = Span(-halo, layout.tile_cols[-1] + tw + halo)  # the columns the row's tiles read
        window = Window(
            self.region.col_off + strip.start // SCALE,
            self.region.row_off + rows_in.start // SCALE,
            strip.size // SCALE,
            rows_in.size // SCALE,
        )
        groups: dict[GroupName, np.ndarray] = {}
        valid = np.ones((rows_in.size, strip.size), dtype=bool)
        for group in GROUPS:
            groups[group], group_valid = self._read_group(group, window)
            factor = SCALE * GROUP_RATIO[group]
            valid &= np.repeat(np.repeat(group_valid, factor, axis=0), factor, axis=1)
        core = slice(halo, halo + th)
        for left in layout.tile_cols:
            context = slice(left, left + tw + 2 * halo)  # the tile and its context, in strip columns
            tile_valid = valid[core, left + halo : left + halo + tw]
            out = np.zeros((13, th, tw), dtype=np.float32)
            if tile_valid.any():
                rgb = self._guidance(rows_in, Span(left - halo, left + tw + halo))
                fused = self._fuse(rgb, groups, left, tw + 2 * halo, valid[:, context])
                out[:12] = fused[:, core, halo : halo + tw]
                if self.models.method != "net":
                    # gs / bilinear: B04, B03, B02 are the diffusion RGB itself.
                    out[indices(RGB)] = rgb[:, core, halo : halo + tw]
                out[12] = tile_valid
                self.counters.tiles_run += 1
            else:
                self.counters.tiles_skipped += 1
            yield left, out, self._tile_weights
        if index + 1 < len(layout.tile_rows):
            self.sr.drop_before(layout.tile_rows[index + 1] - halo)

    def _guidance(self, rows: Span, cols: Span) -> np.ndarray:
        """The blended SR RGB of ``rows`` × ``cols`` (region pixels): ``(3, h, w)`` reflectance,
        nodata filled, edges replicated where the span reaches outside the region (nothing was
        super-resolved there)."""
        height, width = self.layout.height, self.layout.width
        inside_rows = Span(max(rows.start, 0), min(rows.stop, height))
        inside_cols = Span(max(cols.start, 0), min(cols.stop, width))
        rgb, covered = self.sr.read(inside_rows, inside_cols)
        pad = (
            (0, 0),
            (inside_rows.start - rows.start, rows.stop - inside_rows.stop),
            (inside_cols.start - cols.start, cols.stop - inside_cols.stop),
        )
        return np.pad(fill_invalid(rgb, covered), pad, mode="edge")

    def _read_group(self, group: GroupName, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """A group on its native grid: ``(C, h/r, w/r)`` filled reflectance and validity.

        Bands delivered already resampled to 10 m (a stacked GeoTIFF) are area-averaged back to
        their native pixel size; such a native pixel is valid when all its 10 m pixels are.
        """
        data, valid, delivered = self._read(GROUPS[group], window)
        ratio = GROUP_RATIO[group]
        if delivered == 1 and ratio > 1:
            c, h, w = data.shape
            data = data.reshape(c, h // ratio, ratio, w // ratio, ratio).mean(axis=(2, 4), dtype=np.float32)
            valid = valid.reshape(h // ratio, ratio, w // ratio, ratio).all(axis=(1, 3))
        elif delivered != ratio:
            raise InputError(f"{self.scene.path}: the {group} bands are on a {delivered * 10} m grid; expected {ratio * 10} m")
        return data, valid

    def _fuse(
        self, rgb: np.ndarray, groups: Mapping[GroupName, np.ndarray], left: int, width: int, valid: np.ndarray
    ) -> np.ndarray:
        """Run the fusion step on one tile with context: ``(12, th + 2·halo, width)``."""
        inputs: dict[str, Tensor] = {}
        for group, data in groups.items():
            factor = SCALE * GROUP_RATIO[group]
            cols = slice(left // factor, (left + width) // factor)
            inputs[group] = torch.from_numpy(np.ascontiguousarray(data[None, :, :, cols])).to(self.device)
        rgb_t = torch.from_numpy(np.ascontiguousarray(rgb[None])).to(self.device)
        valid_t = torch.from_numpy(np.ascontiguousarray(valid[None])).to(self.device)
        with autocast(self.device, self.dtype):
            out = self.models.fuse(rgb_t, inputs, valid_t)
        return out[0].float().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Resume bookkeeping


def progress_path_for(output: Path) -> Path:
    """Where a run records its finished blocks: ``<dir>/.<name>.progress.json``."""
    return output.parent / f".{output.name}.progress.json"


def fingerprint(
    scene: Scene,
    region: Window,
    layout: Layout,
    options: SuperresOptions,
    models: Models,
    device: torch.device,
    dtype: torch.dtype,
) -> dict:
    """Everything that affects the pixels of a product; ``--resume`` requires it unchanged."""
    radiometry = scene.radiometry
    return {
        "difffusr_version": __version__,
        "input": str(Path(scene.path).resolve()),
        "rgb_model_sha256": models.rgb_info.sha256,
        "fusion": options.fusion,
        "fusion_model_sha256": models.fusion_info.sha256 if models.fusion_info else None,
        "steps": options.steps,
        "seed": options.seed,
        "patch_size": layout.patch,
        "overlap": layout.overlap,
        "fusion_tile": layout.tile,
        "fusion_overlap": layout.tile_overlap,
        "fusion_halo": layout.halo,
        "block_rows": layout.block_rows,
        "batch_size": options.batch_size,
        "window": [int(region.col_off), int(region.row_off), int(region.width), int(region.height)],
        "dtype": options.dtype,
        "precision": precision_name(dtype),
        "device": device.type,
        "scale": {n: radiometry.scale[n] for n in BAND_NAMES},
        "offset": {n: radiometry.offset[n] for n in BAND_NAMES},
    }


@dataclass
class ProgressFile:
    """The progress record of one output: its fingerprint and the blocks already written."""

    path: Path
    fingerprint: dict
    done: set[int] = field(default_factory=set)

    def save(self) -> None:
        """Write atomically (a crash leaves the old or the new record, never half of one)."""
        record = {"difffusr_progress": 1, "fingerprint": self.fingerprint, "blocks_done": sorted(self.done)}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc}") from None

    @classmethod
    def load(cls, path: Path, expected: dict) -> ProgressFile:
        """Read a record and check it belongs to the same settings.

        Raises:
            OutputError: unreadable record, or different settings (naming what changed).
        """
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            stored, done = record["fingerprint"], {int(i) for i in record["blocks_done"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OutputError(f"cannot resume: {path} is unreadable ({exc}); run with --overwrite to start again") from None
        changed = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
        if changed:
            detail = ", ".join(f"{k} {_short(stored.get(k))} → {_short(expected.get(k))}" for k in changed[:4])
            raise OutputError(
                f"cannot resume: {path} was started with other settings ({detail}); "
                "rerun with the original options, or with --overwrite to start again"
            )
        return cls(path, expected, done)


def _check_no_interrupted_run(output: Path, options: SuperresOptions) -> None:
    """An interrupted run of ``output`` is continued or discarded only when asked to."""
    from difffusr_cli.io import partial_path_for

    partial = partial_path_for(output)
    if (partial.exists() or progress_path_for(output).exists()) and not (options.resume or options.overwrite):
        raise OutputError(
            f"{partial} holds an interrupted run of {output}; pass --resume to continue it or --overwrite to start again"
        )


def _short(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:21] + "..."


# ---------------------------------------------------------------------------------------------
# One scene, many scenes


@dataclass(frozen=True)
class RunSummary:
    """What one product's run did."""

    input: Path
    output: Path
    status: Literal["written", "skipped"]
    seconds: float = 0.0
    patches_run: int = 0
    patches_skipped: int = 0
    blocks_written: int = 0
    blocks_resumed: int = 0
    device: str = ""
    peak_memory: int = 0
    peak_memory_kind: str = ""
    width: int = 0
    height: int = 0

    def paragraph(self) -> str:
        """The one-paragraph summary printed at the end of a run."""
        if self.status == "skipped":
            return f"{self.output}: already complete, skipped."
        rate = self.patches_run / self.seconds if self.seconds > 0 else 0.0
        resumed = f", {_count(self.blocks_resumed, 'block')} kept from the interrupted run" if self.blocks_resumed else ""
        return (
            f"Wrote {self.output} ({self.width} × {self.height} px at 2.5 m, 12 bands) in {_duration(self.seconds)}: "
            f"{_count(self.patches_run, 'patch', 'patches')} diffused ({rate:.2f} patches/s), {self.patches_skipped} skipped as nodata, "
            f"{_count(self.blocks_written, 'block')} written{resumed}; device {self.device}; "
            f"peak memory {self.peak_memory / 2**20:,.0f} MiB ({self.peak_memory_kind})."
        )


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def product_stem(path: Path) -> str:
    """The name of an input without its format suffixes (``X.SAFE.zip`` → ``X``)."""
    if path.name.upper() == "MTD_MSIL2A.XML":
        path = path.parent
    name = path.name
    for suffix in (".zip", ".json", ".tiff", ".tif", ".vrt", ".SAFE", ".safe"):
        if name.lower().endswith(suffix.lower()):
            name = name[: -len(suffix)]
    return name or "product"


def output_paths(inputs: Sequence[Path], output: str | Path) -> tuple[list[Path], bool]:
    """Each input's product path, and whether ``output`` is a folder.

    ``output`` is a folder when there are several inputs, when it is an existing folder, or when
    it is a string ending in ``/`` (``-o outs/``: a folder to create); products in a folder are
    named ``<input stem>_difffusr.tif``. Otherwise it is the product itself and must end in
    ``.tif`` or ``.tiff``.

    Raises:
        InputError: a single product without a ``.tif``/``.tiff`` suffix, several inputs with a
            ``.tif`` output, or two inputs with the same stem.
    """
    # pathlib drops a trailing slash, so read it from the text the user gave.
    text = os.fspath(output)
    trailing_slash = text.endswith(("/", os.sep))
    output = Path(output)
    is_dir = trailing_slash or output.is_dir() or len(inputs) > 1
    if not is_dir:
        if output.suffix.lower() not in (".tif", ".tiff"):
            raise InputError(
                f"-o {output}: the product is a GeoTIFF, name it .tif or .tiff "
                "(or end -o with / for a folder of products)"
            )
        return [output], False
    if output.suffix.lower() in (".tif", ".tiff") and not output.is_dir():
        raise InputError(f"-o {output}: with {len(inputs)} inputs, -o must be a folder (one product per input)")
    paths = [output / f"{product_stem(p)}{PRODUCT_SUFFIX}" for p in inputs]
    seen: dict[Path, Path] = {}
    for source, target in zip(inputs, paths):
        if target in seen:
            raise InputError(f"{seen[target]} and {source} would both be written to {target}; process them separately")
        seen[target] = source
    return paths, True


def _product_tags(scene: Scene, region: Window, options: SuperresOptions, models: Models, dtype: torch.dtype, device: torch.device) -> dict:
    radiometry = scene.radiometry
    return {
        "difffusr_version": __version__,
        "source_product": scene.product_id,
        "source_path": str(scene.path),
        "source_format": scene.kind,
        "source_window_10m": [int(region.col_off), int(region.row_off), int(region.width), int(region.height)],
        "rgb_model": models.rgb_info.name,
        "rgb_model_sha256": models.rgb_info.sha256,
        "fusion_method": options.fusion,
        "fusion_model": models.fusion_info.name if models.fusion_info else "",
        "fusion_model_sha256": models.fusion_info.sha256 if models.fusion_info else "",
        "steps": options.steps,
        "seed": options.seed,
        "patch_size": options.patch_size,
        "overlap": options.overlap,
        "batch_size": options.batch_size,
        "precision": precision_name(dtype),
        "device": device.type,
        "radiometry": radiometry.to_dict(),
        "radiometric_offsets_applied_dn": radiometry.offsets,
        "nodata_rule": NODATA_RULE,
    }


def superres_scene(
    scene: Scene,
    output: Path,
    options: SuperresOptions,
    models: Models,
    device: torch.device,
    dtype: torch.dtype,
    *,
    on_patches: Callable[[int], None] = lambda n: None,
    on_total: Callable[[int], None] = lambda n: None,
    on_block_done: Callable[[int], None] = lambda i: None,
) -> RunSummary:
    """Write the product of one opened scene to ``output`` (models already loaded).

    ``on_total`` receives the number of patches this run will process, ``on_patches`` each
    increment, ``on_block_done`` each block index once it is written, flushed and recorded (an
    exception raised there interrupts the run like Ctrl-C: the partial file and the progress
    record stay for ``--resume``).

    Raises:
        InputError, OutputError: bad window, unusable output, or a resume that does not match.
    """
    from difffusr_cli.io import ProductWriter, output_grid, partial_path_for

    started = time.perf_counter()
    reset_peak_memory(device)
    if models.method != options.fusion:
        raise ValueError(f"models are for --fusion {models.method}, options ask for --fusion {options.fusion}")
    scene.require_bands()
    region = resolve_region(scene, options.window, options.bbox)
    if options.patch_size % models.patch_multiple:
        raise InputError(
            f"--patch-size {options.patch_size}: the RGB model {models.rgb_info.name} needs a multiple of {models.patch_multiple}"
        )
    layout = make_layout(region, options, models.fusion_halo)
    transform, width, height = output_grid(scene, region)
    record_path = progress_path_for(output)
    partial = partial_path_for(output)
    expected = fingerprint(scene, region, layout, options, models, device, dtype)
    _check_no_interrupted_run(output, options)
    if options.resume and record_path.is_file() and partial.is_file():
        progress = ProgressFile.load(record_path, expected)
    else:
        progress = ProgressFile(record_path, expected)
    resumed = len(progress.done)

    radiometry = scene.radiometry

    def open_writer(resume: bool) -> ProductWriter:
        return ProductWriter(
            output,
            crs=scene.crs,
            transform=transform,
            width=width,
            height=height,
            dtype=options.dtype,
            scale=[radiometry.scale[n] for n in BAND_NAMES],
            offset=[radiometry.offset[n] for n in BAND_NAMES],
            tags=_product_tags(scene, region, options, models, dtype, device),
            cog=options.cog,
            overwrite=options.overwrite,
            resume=resume,
        )

    writer: ProductWriter | None = None
    written = 0
    try:
        writer = open_writer(resume=bool(progress.done))
        progress.save()
        renderer = Renderer(
            scene,
            region,
            layout,
            models,
            steps=options.steps,
            seed=options.seed,
            batch_size=options.batch_size,
            device=device,
            dtype=dtype,
            on_patches=on_patches,
        )
        on_total(renderer.patches_to_run(progress.done))
        for index, pieces in renderer.blocks(progress.done):
            for window, data, valid in pieces:
                writer.write(window, data, valid)
            # Closing flushes the block to disk before it is recorded as done; reopen to go on.
            writer.abort()
            writer = open_writer(resume=True)
            progress.done.add(index)
            progress.save()
            written += 1
            on_block_done(index)
    except BaseException:
        try:
            if writer is not None:
                writer.abort()
        finally:
            if not progress.done:
                # Nothing recorded (e.g. a model error in the first block): nothing to resume, so
                # leave no partial file that would make the next run demand --resume/--overwrite.
                partial.unlink(missing_ok=True)
                record_path.unlink(missing_ok=True)
        raise
    writer.commit()
    record_path.unlink(missing_ok=True)
    peak, peak_kind = peak_memory(device)
    return RunSummary(
        input=Path(scene.path),
        output=output,
        status="written",
        seconds=time.perf_counter() - started,
        patches_run=renderer.counters.patches_run,
        patches_skipped=renderer.counters.patches_skipped,
        blocks_written=written,
        blocks_resumed=resumed,
        device=f"{describe(device)}, {precision_name(dtype)}",
        peak_memory=peak,
        peak_memory_kind=peak_kind,
        width=width,
        height=height,
    )


def superres_many(
    inputs: Sequence[Path],
    output: Path,
    options: SuperresOptions,
    *,
    models: Models | None = None,
    on_block_done: Callable[[int], None] = lambda i: None,
) -> list[RunSummary]:
    """Super-resolve every input into ``output`` (a file for one input, else a folder).

    Everything that can be checked without the models (options, device, inputs readable with all
    12 bands, outputs writable, nothing overwritten by accident) is checked before the models are
    loaded, once, and used for every input. In folder mode complete products are skipped.

    Args:
        inputs: scenes in any format :func:`~difffusr_cli.io.open_scene` accepts.
        output: the product (one input) or a folder (created if missing).
        options: the run's options.
        models: preloaded models (tests, notebooks); None loads those ``options`` names.
        on_block_done: see :func:`superres_scene`.

    Raises:
        InputError, OutputError, WeightsError: anything the user can fix (exit code 2).
    """
    from difffusr_cli.io import check_output_path, open_scene

    options.validate()
    if not inputs:
        raise InputError("no input given")
    device = select_device(options.device)
    dtype = select_precision(options.precision, device)
    targets, folder = output_paths([Path(p) for p in inputs], output)
    if folder:
        try:
            Path(output).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {output}: {exc}") from None
    jobs: list[tuple[Path, Path, bool]] = []
    for source, target in zip(inputs, targets):
        check_output_path(target, overwrite=True)  # folder exists and is writable
        complete = target.exists() and not options.overwrite
        if complete and not (folder or options.resume):
            raise OutputError(f"{target} already exists; pass --overwrite to replace it")
        if not complete:
            _check_no_interrupted_run(target, options)
        jobs.append((Path(source), target, complete))
    scenes = []
    for source, _, complete in jobs:
        if complete:
            scenes.append(None)
            continue
        scene = open_scene(source, scale=options.scale, offset=options.offset)
        scene.require_bands()
        resolve_region(scene, options.window, options.bbox)
        if scene.processing_level == "L1C":
            # A Level-1C SAFE is refused by the reader; COGs and STAC items only say so in their
            # metadata. Their pixels are processed (they are reflectance too), but never silently.
            print(
                f"warning: {source}: Level-1C (top-of-atmosphere) data; the models expect Level-2A "
                "surface reflectance, so expect a radiometric bias",
                file=sys.stderr,
            )
        # Checked; release its files until its turn (they reopen on the first read), so that a
        # batch of thousands of inputs does not hold thousands of open rasters.
        scene.close()
        scenes.append(scene)

    console = None if options.quiet else _console()
    summaries: list[RunSummary] = []
    if models is None and any(s is not None for s in scenes):
        from difffusr_cli.cli_console import ConsoleReporter
        from difffusr_cli.weights import StderrReporter

        reporter = StderrReporter() if options.quiet else ConsoleReporter()
        try:
            models = load_models(options, device, reporter)
        finally:
            if isinstance(reporter, ConsoleReporter):
                reporter.close()
    for (source, target, complete), scene in zip(jobs, scenes):
        if scene is None:
            summary = RunSummary(input=source, output=target, status="skipped")
        else:
            assert models is not None
            label = target.name if len(target.name) <= 32 else target.name[:29] + "..."
            with scene, _progress_bar(console, label) as (on_total, on_patches):
                try:
                    summary = superres_scene(
                        scene,
                        target,
                        options,
                        models,
                        device,
                        dtype,
                        on_patches=on_patches,
                        on_total=on_total,
                        on_block_done=on_block_done,
                    )
                except KeyboardInterrupt:
                    if console is not None:
                        console.print(f"interrupted: rerun with --resume to continue {target}", highlight=False)
                    raise
        summaries.append(summary)
        if console is not None:
            console.print(summary.paragraph(), highlight=False, soft_wrap=False)
    return summaries


# ---------------------------------------------------------------------------------------------
# Progress display


def _console():
    from rich.console import Console

    return Console(stderr=True)


class _progress_bar:
    """Context manager yielding ``(on_total, on_patches)`` callbacks that drive a rich bar
    (patches done/total, patches/s, elapsed, ETA); no-ops without a console."""

    def __init__(self, console: object | None, description: str) -> None:
        self.console, self.description = console, description
        self.progress = None

    def __enter__(self) -> tuple[Callable[[int], None], Callable[[int], None]]:
        if self.console is None:
            return (lambda n: None), (lambda n: None)
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("patches"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.start()
        task = self.progress.add_task(self.description, total=None, rate="")
        progress = self.progress

        def on_total(n: int) -> None:
            progress.update(task, total=n)

        def on_patches(n: int) -> None:
            progress.advance(task, n)
            speed = progress.tasks[0].speed
            progress.update(task, rate=f"{speed:.2f}/s" if speed else "")

        return on_total, on_patches

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


#: Side of the generated example product on the 10 m grid (a multiple of 6): 480 m × 480 m.
EXAMPLE_SIZE = 48
#: Models the example uses unless the user names others: shipped in the package, so the example
#: runs offline on a fresh install.
EXAMPLE_MODELS = {"rgb": "rgb-tiny", "fusion": "fusion-tiny"}


def superres_example(output: str | Path, options: SuperresOptions) -> list[RunSummary]:
    """Run the whole pipeline on a small generated L2A product (``difffusr superres --example``).

    The product is synthetic (:func:`difffusr_cli.example.make_example_safe`, 48 × 48 pixels at
    10 m), written to a temporary folder that is removed afterwards; the demonstration models
    ``rgb-tiny``/``fusion-tiny`` are used unless ``options`` names other models.
    """
    import tempfile

    from difffusr_cli.example import make_example_safe

    options = replace(
        options,
        rgb_model=options.rgb_model or EXAMPLE_MODELS["rgb"],
        fusion_model=options.fusion_model or (EXAMPLE_MODELS["fusion"] if options.fusion == "net" else None),
    )
    with tempfile.TemporaryDirectory(prefix="difffusr-example-") as tmp:
        safe = make_example_safe(Path(tmp), size=EXAMPLE_SIZE, seed=options.seed)
        if not options.quiet:
            _console().print(f"example: generated synthetic L2A product {safe.name} ({EXAMPLE_SIZE}×{EXAMPLE_SIZE} px at 10 m)")
        return superres_many([safe], output, options)
