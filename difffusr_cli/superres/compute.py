"""Compute settings of a ``superres`` run chosen for the device and the models.

- :func:`fusion_tiling`: the fusion tile and blended overlap for the fusion step, sized so the
  halo costs little (the halo is the nets' receptive field, rounded to 60 m pixels).
- :func:`resolve_compute`: fills in what the options leave to ``auto`` (tile, overlap, patch and
  tile batch sizes) so that the layout, the product tags and the resume fingerprint see numbers.

None of these choices changes what a pixel is computed from except the patch size (the patch
grid and its noise); batch sizes change only how reductions are ordered (float tolerance; see
docs/superres.md). ``--compile`` and ``--channels-last`` are applied where the models are loaded
(:func:`difffusr_cli.superres.models.accelerate`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from difffusr_cli.bands import SCALE
from difffusr_cli.errors import InputError
from difffusr_cli.superres.options import SuperresOptions
from difffusr_cli.tiling import ALIGN, round_up

if TYPE_CHECKING:
    from difffusr_cli.superres.models import Models

#: ``(tile, overlap)`` of the fusion tiles per fusion step (2.5 m pixels, multiples of 24).
#: MTF nets: nothing global, so tiles with the halo agree exactly and need no blended overlap;
#: 960 × 2928 (see :data:`FUSION_TILE_ROWS`): (960 + 2·96)(2928 + 2·96) / (960 · 2928) = 1.28 ×
#: the tile interior's compute (1536²: 1.27; on a full tile 1.29 against 1.30: 15 tiles span
#: its 43,920 columns exactly). RRDB nets pool over the tile
#: (channel attention): blended over 48 pixels, (1536 + 2·192)² / 1488² = 1.66 ×.
#: Gram–Schmidt (statistics per tile): small tiles, blended. Bilinear depends on position only:
#: small tiles that agree exactly without a blended overlap (copied into the product, not
#: weighted and divided; small tiles keep the rows held, and the memory, low).
FUSION_TILING: dict[str, tuple[int, int]] = {
    "mtf": (2928, 0),
    "rrdb": (1536, 48),
    "gs": (480, 48),
    "bilinear": (960, 0),
}
#: Tile height, where it differs from the width: each row of fusion tiles is held full-width
#: until the blocks below have used it, so short, wide tiles hold fewer rows. Bilinear:
#: 120 × 960 tiles. On the CPU only their cores are upsampled (the halo is read, not computed),
#: so short tiles cost nothing extra there and hold 360 rows fewer than 480² tiles (0.3 GB less
#: peak memory than 240 rows on a full tile's width, the same time); on a GPU the halo costs
#: (120 + 48)(960 + 48) / (120 · 960) = 1.47 × the interior, which a GPU does not notice. MTF: 960
#: rows instead of 1536 hold 576 fewer (1.3 GB at a full tile's width) for the same compute.
FUSION_TILE_ROWS: dict[str, int] = {"bilinear": 120, "mtf": 960}
#: Batches on devices without a memory query (CPU, MPS): patches, fusion tiles.
FIXED_BATCH = 4
FIXED_FUSION_BATCH = 2
#: Largest automatic batches on a GPU (beyond them a GPU is saturated anyway).
MAX_BATCH = 32
MAX_FUSION_BATCH = 8
#: Share of the free GPU memory an automatic batch may fill (the rest: fragmentation, the other
#: stage's activations, cuDNN workspaces).
GPU_MEMORY_SHARE = 0.5
#: Estimated peak activation memory per output pixel of one item under bf16/fp16 autocast
#: (fp32: twice). Patch: the official U-Net (skip connections of 5 levels, GroupNorm in fp32)
#: and the RRDB encoder; tile: the official fusion nets (dense blocks of the detail net, run one
#: band at a time). Conservative estimates: ``benchmarks/gpu_check.py`` measures the real peak.
PATCH_BYTES_PER_PIXEL = 2048
TILE_BYTES_PER_PIXEL = 1024


def fusion_tiles_agree(models: Models) -> bool:
    """Whether neighbouring fusion tiles give the same pixels where they overlap.

    True for steps that depend on position only: bilinear, and the MTF nets (their halo is their
    receptive field). False for Gram–Schmidt and the RRDB nets (statistics per tile). Tiles that
    agree and have no blended overlap are copied into the product instead of averaged.
    """
    return models.method == "bilinear" or (models.method == "net" and models.fusion_arch == "mtf")


def fusion_tiling(models: Models) -> tuple[int, int]:
    """The default ``(tile, overlap)`` of the fusion tiles for the run's fusion step."""
    return FUSION_TILING.get(_fusion_key(models), FUSION_TILING["rrdb"])


def _fusion_key(models: Models) -> str:
    return models.fusion_arch if models.method == "net" else models.method


#: The automatic diffusion patch: at most this side (2.5 m pixels) ...
AUTO_PATCH = 672
#: ... and at most this many self-attention positions per side (attention costs the square of
#: the positions: the published U-Net attends at 21 × 21 on 672-pixel patches; the demo model,
#: attending at stride 4, would attend at 160 × 160 and run 3–4 × slower per pixel than at 256).
MAX_ATTENTION_SIDE = 64


def auto_patch(models: Models, region_shape: tuple[int, int], overlap: int) -> int:
    """The default diffusion patch side for the RGB model and a region.

    Args:
        models: the loaded models (the U-Net's patch multiple and attention stride).
        region_shape: ``(height, width)`` of the region on the 2.5 m grid.
        overlap: the patch overlap (the patch is at least twice it).

    Returns:
        :data:`AUTO_PATCH`, lowered to a multiple of the U-Net's down-sampling so self-attention
        spans at most :data:`MAX_ATTENTION_SIDE` positions per side and so the patch is not
        larger than the region's shorter side needs (rounded up to the multiple).
    """
    multiple = max(models.patch_multiple, 4)
    patch = AUTO_PATCH
    if models.attention_stride:
        patch = min(patch, MAX_ATTENTION_SIDE * models.attention_stride)
    patch = min(patch, round_up(min(region_shape), multiple))
    patch = max(patch // multiple * multiple, round_up(max(2 * overlap, 16), multiple))
    return patch


def auto_batch(device: torch.device, item_bytes: int, *, fixed: int, cap: int) -> int:
    """Items per network call: what fits in the free GPU memory on CUDA, else ``fixed``.

    Args:
        device: where the networks run.
        item_bytes: estimated peak memory of one item (bytes).
        fixed: the batch on devices without a memory query.
        cap: the largest batch returned.

    Returns:
        On CUDA the largest power of two ≤ ``cap`` whose items fill at most
        :data:`GPU_MEMORY_SHARE` of the free memory (at least 1): powers of two keep the choice
        stable when free memory moves a little. Elsewhere ``fixed``.
    """
    if device.type != "cuda":
        return fixed
    free, _total = torch.cuda.mem_get_info(device)
    fits = int(free * GPU_MEMORY_SHARE // max(item_bytes, 1))
    batch = 1
    while batch * 2 <= min(fits, cap):
        batch *= 2
    return batch


def resolve_compute(
    options: SuperresOptions,
    models: Models,
    device: torch.device,
    dtype: torch.dtype,
    region_shape: tuple[int, int],
    recorded: dict[str, Any] | None = None,
) -> SuperresOptions:
    """``options`` with every ``auto`` compute setting replaced by a number.

    Args:
        options: the run's options (``None`` = auto for the fusion tile/overlap and batch sizes).
        models: the loaded models (fusion step, halo).
        device: where the networks run.
        dtype: their compute precision (bf16/fp16 activations take half the memory).
        region_shape: ``(height, width)`` of the region on the 2.5 m grid (bounds the patch).
        recorded: the fingerprint of the run being resumed or the product being checked, if
            any: its batch sizes (and the fusion tiles' rows, for default tiles of its width)
            are reused for ``auto`` so a resumed run goes on as it started.

    Returns:
        The options with ``patch_size``, ``fusion_tile``, ``fusion_tile_rows``,
        ``fusion_overlap``, ``batch_size``
        and ``fusion_batch_size`` set.
    """
    # at least twice the overlap and at least the joint-sampling margin
    floor = max(options.overlap, -(-options.joint_margin // 2))
    patch = options.patch_size or auto_patch(models, region_shape, floor)
    tile, overlap = fusion_tiling(models)
    if options.fusion_tile is not None:
        tile, rows = options.fusion_tile, options.fusion_tile_rows or options.fusion_tile
    else:
        # A run resumed (or a product checked) goes on with the rows it was made with when
        # the defaults have changed since (bilinear: 240 before 120).
        made = _recorded_int(recorded, "fusion_tile_rows")
        if made is not None and _recorded_int(recorded, "fusion_tile") != tile:
            made = None
        rows = options.fusion_tile_rows or made or FUSION_TILE_ROWS.get(_fusion_key(models), tile)
        if options.fusion_overlap is not None:  # default tiles grow to hold a given overlap
            tile = max(tile, options.fusion_overlap + ALIGN)
            if options.fusion_tile_rows is None:
                rows = max(rows, options.fusion_overlap + ALIGN)
    if options.fusion_overlap is not None:
        overlap = options.fusion_overlap
        if overlap >= min(tile, rows):
            raise InputError(
                f"fusion overlap {overlap}: expected less than the fusion tile ({rows} × {tile})"
            )
    else:
        overlap = min(overlap, min(tile, rows) - ALIGN)
    halo = round_up(models.fusion_halo * SCALE, ALIGN)
    scale = 1 if dtype in (torch.bfloat16, torch.float16) else 2
    batch = options.batch_size or _recorded_int(recorded, "batch_size")
    if batch is None:
        item = scale * PATCH_BYTES_PER_PIXEL * patch**2
        batch = auto_batch(device, item, fixed=FIXED_BATCH, cap=MAX_BATCH)
    fusion_batch = options.fusion_batch_size or _recorded_int(recorded, "fusion_batch_size")
    if fusion_batch is None:
        item = scale * TILE_BYTES_PER_PIXEL * (tile + 2 * halo) * (rows + 2 * halo)
        fusion_batch = auto_batch(device, item, fixed=FIXED_FUSION_BATCH, cap=MAX_FUSION_BATCH)
    return replace(
        options,
        patch_size=patch,
        # the default margin shrinks to a smaller patch (SuperresOptions.validate)
        joint_margin=min(options.joint_margin, patch),
        fusion_tile=tile,
        fusion_tile_rows=rows,
        fusion_overlap=overlap,
        batch_size=batch,
        fusion_batch_size=fusion_batch,
    )


def _recorded_int(recorded: dict[str, Any] | None, key: str) -> int | None:
    value = (recorded or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def recorded_fingerprint(progress_record: Path) -> dict[str, Any] | None:
    """The fingerprint stored in a progress record, or None when there is none readable."""
    try:
        record = json.loads(progress_record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    stored = record.get("fingerprint") if isinstance(record, dict) else None
    return stored if isinstance(stored, dict) else None
