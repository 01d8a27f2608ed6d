"""Joint sampling of a patch row, the overlap-disagreement measure, and what a row leaves behind.

- :func:`noise_field`: the starting noise of joint sampling, one N(0, 1) field over the region
  seeded by position (a fixed grid of :data:`NOISE_TILE` pixel tiles), so overlapping patches
  and neighbouring patch rows share it and it depends on no batch, block or resume point.
- :func:`sample_row_jointly`: one patch row on one canvas
  (:meth:`~difffusr_cli.models.predictors.RGBSuperResolver.super_resolve_row`), its top rows
  fixed to the finished rows of the patch row above.

What one row leaves for the next, and the overlap-disagreement measure, are in
:mod:`difffusr_cli.superres.rows`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from rasterio.windows import Window
from torch import Tensor

from difffusr_cli.bands import SCALE
from difffusr_cli.errors import WeightsError
from difffusr_cli.superres.models import Models
from difffusr_cli.superres.options import SuperresOptions
from difffusr_cli.superres.rows import RowCarry
from difffusr_cli.tiling import Span, round_up

#: Side (2.5 m pixels) of the tiles of the joint noise field; each tile has its own generator.
NOISE_TILE = 64
#: Blend weight of a patch's margins: they decide only pixels no patch covers (the row's ends).
MARGIN_WEIGHT = 1e-6


class RowResultLike(Protocol):
    """What a joint sampler returns (see :class:`~difffusr_cli.models.predictors.RowResult`)."""

    canvas: Tensor
    patches_x0: Tensor


@runtime_checkable
class RowSuperResolver(Protocol):
    """A super-resolver that can sample a row of patches jointly (``--sampling joint``)."""

    def super_resolve_row(
        self,
        lr: Tensor,
        lefts: Sequence[int],
        noise: Tensor,
        weights: Tensor,
        steps: int = 20,
        batch_size: int = 4,
        known: Tensor | None = None,
        known_mask: Tensor | None = None,
    ) -> RowResultLike:
        """See :meth:`difffusr_cli.models.predictors.RGBSuperResolver.super_resolve_row`."""
        ...


def samples_jointly(rgb: object) -> bool:
    """Whether ``rgb`` has a joint sampler (models without one are sampled patch by patch)."""
    return isinstance(rgb, RowSuperResolver)


def effective_sampling(options: SuperresOptions, models: Models) -> str:
    """The sampling a run does (what the tags and the resume fingerprint record).

    ``options.sampling``, but ``independent`` for a model without a joint sampler.
    """
    return "joint" if options.sampling == "joint" and samples_jointly(models.rgb) else "independent"


def joint_margin_of(options: SuperresOptions, models: Models) -> int:
    """The ``--joint-margin`` a run uses (0 when it does not sample jointly)."""
    if effective_sampling(options, models) != "joint":
        return 0
    return joint_margin(options.joint_margin, models.patch_multiple)


def _tile_seed(seed: int, row: int, col: int) -> int:
    """A 63-bit generator seed from (seed, noise-tile row, noise-tile column) only."""
    text = f"difffusr-noise-field:{seed}:{row}:{col}".encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def noise_field(seed: int, rows: Span, cols: Span) -> Tensor:
    """The joint sampler's starting noise on ``rows`` × ``cols`` of the region's 2.5 m grid.

    Pixel (y, x) takes its value from tile ``(y // NOISE_TILE, x // NOISE_TILE)``, whose
    ``(3, NOISE_TILE, NOISE_TILE)`` float32 N(0, 1) values are drawn on the CPU from a generator
    seeded by (seed, tile row, tile column): the same on every device, for any view of it.

    Returns:
        ``(3, rows.size, cols.size)`` float32.
    """
    out = torch.empty((3, rows.size, cols.size), dtype=torch.float32)
    t = NOISE_TILE
    for ty in range(rows.start // t, -(-rows.stop // t)):
        for tx in range(cols.start // t, -(-cols.stop // t)):
            generator = torch.Generator(device="cpu").manual_seed(_tile_seed(seed, ty, tx))
            tile = torch.randn((3, t, t), generator=generator, dtype=torch.float32)
            y0, y1 = max(rows.start, ty * t), min(rows.stop, (ty + 1) * t)
            x0, x1 = max(cols.start, tx * t), min(cols.stop, (tx + 1) * t)
            out[:, y0 - rows.start : y1 - rows.start, x0 - cols.start : x1 - cols.start] = tile[
                :, y0 - ty * t : y1 - ty * t, x0 - tx * t : x1 - tx * t
            ]
    return out


@dataclass(frozen=True)
class JointRow:
    """One patch row sampled jointly.

    Attributes:
        canvas: ``(3, patch, W)`` float32 reflectance, the row's finished pixels.
        context: ``(3, margin + patch, W)`` float32, the canvas from ``margin`` rows above the
            row down to its bottom (what the next row reads as known pixels).
        covered: ``(margin + patch, W)`` bool, the columns a patch was computed in.
        patches_x0: ``(V, 3, patch, patch)`` float32, each patch's last x0 prediction before
            blending.
    """

    canvas: np.ndarray
    context: np.ndarray
    covered: np.ndarray
    patches_x0: np.ndarray


def joint_margin(requested: int, patch_multiple: int) -> int:
    """The context pixels a jointly sampled patch sees beyond each edge (``--joint-margin``).

    ``requested`` rounded up so that a patch plus its margins stays a multiple of the
    network's ``patch_multiple``.
    """
    return round_up(requested, max(patch_multiple // 2, SCALE))


def sample_row_jointly(
    rgb: RowSuperResolver,
    lr: np.ndarray,
    lefts: Sequence[int],
    *,
    margin: int,
    seed: int,
    top: int,
    width: int,
    weights: np.ndarray,
    steps: int,
    batch_size: int,
    above: RowCarry | None,
    device: torch.device,
) -> JointRow:
    """Sample the patches of one row on one canvas ``width`` columns wide from region row ``top``.

    Each patch runs on its window widened by ``margin`` pixels on every side, and only its own
    ``patch × patch`` pixels enter the blend (the margins' weight is negligible wherever a patch
    covers them): a network's predictions are worst at its input's edges, so neighbouring
    patches, beside and below, then agree where they overlap. The canvas therefore spans rows
    ``[top − margin, top + patch + margin)`` and columns ``[−margin, width + margin)``.

    Args:
        rgb: the joint sampler.
        lr: ``(3, (patch + 2·margin) / 4, (width + 2·margin) / 4)`` LR reflectance of the
            canvas, margins included.
        lefts: the patches' left columns on the region grid.
        margin: context pixels on each side (multiple of 4).
        seed: the noise seed (the canvas noise is :func:`noise_field`).
        top: the row's top edge on the region grid.
        width: the row's width (the last patch's right edge).
        weights: ``(patch, patch)`` blend weights of a patch.
        steps: network calls per patch.
        batch_size: patches per network call.
        above: the carry of the patch row above: its finished rows (where covered) are known
            pixels, with their x0 fixed to them at every step, returned unchanged, so the two
            rows agree exactly in their overlap.
        device: where the model runs.

    Returns:
        The row's canvas and context (margin columns cropped) and the patches' last predictions.
    """
    p, m = weights.shape[0], margin
    size, full = p + 2 * m, width + 2 * m
    noise = noise_field(seed, Span(top - m, top + p + m), Span(-m, width + m))
    known = mask = None
    if above is not None and above.canvas is not None and above.covered is not None:
        n = above.canvas.shape[1]  # rows from top − margin down to the bottom of the row above
        known = torch.zeros((3, size, full), dtype=torch.float32)
        mask = torch.zeros((size, full), dtype=torch.bool)
        known[:, :n, m : m + width] = torch.from_numpy(above.canvas)
        mask[:n, m : m + width] = torch.from_numpy(above.covered)
    view = np.full((size, size), MARGIN_WEIGHT, dtype=np.float32)
    view[m : m + p, m : m + p] = weights
    lr_views = np.stack([lr[:, :, left // SCALE : (left + size) // SCALE] for left in lefts])
    result = rgb.super_resolve_row(
        torch.from_numpy(lr_views).to(device),
        list(lefts),
        noise.to(device),
        torch.from_numpy(view),
        steps=steps,
        batch_size=batch_size,
        known=None if known is None else known.to(device),
        known_mask=None if mask is None else mask.to(device),
    )
    covered = np.zeros((p + m, width), dtype=bool)
    for left in lefts:
        covered[:, left : left + p] = True
    context = result.canvas.float().cpu().numpy()[:, : m + p, m : m + width]
    return JointRow(
        canvas=np.ascontiguousarray(context[:, m:]),
        context=np.ascontiguousarray(context),
        covered=covered,
        patches_x0=result.patches_x0[:, :, m : m + p, m : m + p].float().cpu().numpy(),
    )


def check_finite(
    model: str,
    region: Window,
    index: int,
    top: int,
    patches: Sequence[tuple[int, int]],
    values: Sequence[np.ndarray],
) -> None:
    """Stop at the first patch (``(column index, left)``) with non-finite values.

    Raises:
        WeightsError: naming the RGB ``model``, the patch and its 10 m pixel in the scene.
    """
    for (col, left), patch_values in zip(patches, values, strict=True):
        if not np.isfinite(patch_values).all():
            top_10m = int(region.row_off) + top // SCALE
            left_10m = int(region.col_off) + left // SCALE
            raise WeightsError(
                f"the RGB model {model} gave non-finite values for patch row {index}, column "
                f"{col} (10 m pixel {left_10m}, {top_10m}); its weights are probably broken"
            )
