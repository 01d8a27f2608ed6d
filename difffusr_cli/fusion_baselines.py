"""Non-learned fusion baselines: Gram–Schmidt pansharpening and plain bilinear upsampling.

Both have the call signature of :class:`difffusr_cli.models.predictors.FusionPredictor`, so the
pipeline (``superres --fusion gs|bilinear``) and ``eval fusion`` can swap them for the learned nets:

- ``rgb_sr``: ``(B, 3, H, W)`` float32 reflectance, channels R, G, B (B04, B03, B02) on the
  2.5 m grid, ``H = 4h``, ``W = 4w``;
- ``groups``: ``{"10m": (B, 4, h, w), "20m": (B, 6, h/2, w/2), "60m": (B, 2, h/6, w/6)}`` float32
  reflectance in ``bands.GROUPS`` band order, all covering the same ground as ``rgb_sr``;
- result: ``(B, 12, H, W)`` float32 reflectance in product order (``bands.BAND_NAMES``).

Every band is upsampled with bilinear interpolation on pixel centres (``align_corners=False``:
a native pixel of the group with ratio ``r`` covers exactly ``4r × 4r`` output pixels, the grids
share their origin).

Gram–Schmidt (component substitution, SPEC §3) per group, per image:

1. ``pan`` = mean of the three SR RGB channels (2.5 m). Its low-pass at the group's resolution,
   ``pan_lp``, is the pan area-averaged onto the group's native grid and upsampled back exactly
   as the bands are.
2. The group's bands are upsampled to 2.5 m and combined into a synthetic pan ``I``:

   - ``synthetic="regression"`` (default): ``I = Σ_k w_k · band_k + w_0`` with the weights fitted
     by least squares to ``pan_lp`` (Aiazzi et al.'s adaptive Gram–Schmidt, GSA). The RGB pan
     and bands such as NIR or SWIR differ spectrally; the fit makes ``I`` the part of the pan
     the group's bands can explain, so ``pan − I`` is mostly spatial detail rather than a
     spectral difference. On the shared DSen2 scenes (Wald protocol, ×4) this beats bilinear
     upsampling, while the plain mean falls several dB below it.
   - ``synthetic="mean"``: the plain mean of the bands (the original Gram–Schmidt "average of
     the multispectral bands" mode, presumably the paper's baseline).
3. The pan is histogram-matched to ``I`` on mean and standard deviation, using the statistics of
   ``pan_lp`` rather than of the full-resolution pan: ``I`` only carries low-resolution content,
   so the pan's low-resolution content is what must match it (as in Vivone et al.'s
   pansharpening toolbox). With this choice a pan whose low-pass equals the synthetic pan is
   kept as is, and bands that are affine functions of the pan are recovered exactly.
4. ``detail = matched_pan − I``; per band ``gain = cov(band_up, I) / var(I)``;
   ``band_hr = band_up + gain · detail``.

All statistics (means, standard deviations, covariances, regression weights) are computed per
image over the valid pixels only. Degenerate cases inject nothing: a constant band and a group
whose synthetic pan is constant get gain 0, and a pan that is constant at the group's resolution
gives zero detail.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from difffusr_cli.bands import BAND_NAMES, GROUP_RATIO, GROUPS, SCALE, GroupName, indices
from difffusr_cli.degrade.resample import upsample_to
from difffusr_cli.upsample import bilinear_up

#: How the synthetic pan is formed from a group's bands (see the module docstring).
SyntheticPan = Literal["regression", "mean"]

#: The one signature of every fusion step (the baselines here and the learned nets through
#: :func:`learned_fusion`): ``fuse(rgb_sr (B, 3, 4h, 4w), groups {"10m": (B, 4, h, w), "20m":
#: (B, 6, h/2, w/2), "60m": (B, 2, h/6, w/6)}, valid (B, 1, 4h, 4w) or (4h, 4w) bool)`` →
#: ``(B, 12, 4h, 4w)`` reflectance in product order. ``valid`` marks the pixels whose
#: statistics a method may use (the baselines' regression); the nets ignore it.
FusionFn = Callable[[Tensor, Mapping[str, Tensor], Tensor], Tensor]


def learned_fusion(predictor: Callable[[Tensor, dict[GroupName, Any]], Tensor]) -> FusionFn:
    """A :class:`~difffusr_cli.models.predictors.FusionPredictor` as a :data:`FusionFn`.

    The predictor takes the groups keyed by group name and needs no validity mask.
    """

    def fuse(rgb_sr: Tensor, groups: Mapping[str, Tensor], valid: Tensor) -> Tensor:
        return predictor(rgb_sr, {g: groups[g] for g in GROUPS if g in groups})

    return fuse


#: Variance below which a statistic is treated as zero (reflectance², float32-safe).
_VAR_EPS = 1e-12
#: Singular values of the bands' covariance below this fraction of the largest are ignored, so
#: collinear or constant bands get a minimum-norm fit instead of a blow-up.
_FIT_RTOL = 1e-6


def _check_inputs(rgb_sr: Tensor, groups: Mapping[str, Tensor]) -> tuple[int, int]:
    """Validate the FusionPredictor-style inputs and return the output size ``(H, W)``."""
    if rgb_sr.ndim != 4 or rgb_sr.shape[1] != 3:
        raise ValueError(f"rgb_sr must be (B, 3, H, W), got {tuple(rgb_sr.shape)}")
    batch, _, height, width = rgb_sr.shape
    for group, ratio in GROUP_RATIO.items():
        if group not in groups:
            raise ValueError(f"groups is missing the {group} group")
        data = groups[group]
        factor = SCALE * ratio
        expected = (batch, len(GROUPS[group]), height // factor, width // factor)
        if height % factor or width % factor or tuple(data.shape) != expected:
            raise ValueError(
                f"the {group} group must be {expected} for rgb_sr of {tuple(rgb_sr.shape)} "
                f"(output size divisible by {factor}), got {tuple(data.shape)}"
            )
    return height, width


def _valid_weights(valid: Tensor | None, like: Tensor) -> Tensor:
    """``(B, 1, H, W)`` float weights, 1 on valid pixels (all ones when ``valid`` is None)."""
    if valid is None:
        return torch.ones_like(like[:, :1])
    if valid.shape != (like.shape[0], *like.shape[-2:]):
        raise ValueError(
            f"valid must be {(like.shape[0], *like.shape[-2:])}, got {tuple(valid.shape)}"
        )
    return valid.to(like.dtype).unsqueeze(1)


def _masked_mean(x: Tensor, weights: Tensor) -> Tensor:
    """Per-image, per-channel mean of ``x`` ``(B, C, H, W)`` over valid pixels → ``(B, C, 1, 1)``.

    An image without valid pixels gets mean 0 (its output is nodata anyway).
    """
    count = weights.sum(dim=(-2, -1), keepdim=True).clamp_min(1.0)
    return (x * weights).sum(dim=(-2, -1), keepdim=True) / count


def _regressed_synthetic_pan(bands: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Least-squares fit ``Σ_k w_k · bands_k + w_0 ≈ target`` per image over valid pixels.

    Args:
        bands: ``(B, C, H, W)`` upsampled bands.
        target: ``(B, 1, H, W)`` the pan at the bands' resolution.
        weights: ``(B, 1, H, W)`` 1 on valid pixels.

    Returns:
        ``(B, 1, H, W)`` the fitted synthetic pan.
    """
    count = weights.sum(dim=(-2, -1)).clamp_min(1.0)  # (B, 1)
    band_dev = bands - _masked_mean(bands, weights)
    target_mean = _masked_mean(target, weights)
    weighted = band_dev * weights
    # Centred normal equations: covariance (B, C, C) and cross-covariance (B, C), solved in
    # float64 with a pseudo-inverse.
    covariance = torch.einsum("bchw,bdhw->bcd", weighted, band_dev).double() / count[..., None]
    cross = torch.einsum("bchw,bhw->bc", weighted, (target - target_mean)[:, 0]).double() / count
    coef = torch.linalg.pinv(covariance, rtol=_FIT_RTOL, hermitian=True) @ cross[..., None]
    coef = coef.to(bands.dtype)[..., None]  # (B, C, 1, 1)
    return target_mean + (coef * band_dev).sum(dim=1, keepdim=True)


def gram_schmidt_sharpen(
    pan_hr: Tensor,
    bands_lr_up: Tensor,
    *,
    pan_lowpass: Tensor | None = None,
    valid: Tensor | None = None,
    synthetic: SyntheticPan = "regression",
) -> Tensor:
    """Gram–Schmidt detail injection of one band group (the core of :func:`gram_schmidt_fuse`).

    Args:
        pan_hr: ``(B, 1, H, W)`` high-resolution pan, float reflectance.
        bands_lr_up: ``(B, C, H, W)`` the group's low-resolution bands already upsampled to the
            pan's grid, float reflectance.
        pan_lowpass: ``(B, 1, H, W)`` the pan degraded to the bands' resolution and upsampled the
            same way: the regression target, and the statistics matched to the synthetic pan's.
            ``None`` uses the full-resolution pan for both (textbook GS).
        valid: ``(B, H, W)`` bool, pixels that enter the statistics; ``None`` means all.
        synthetic: ``"regression"`` (fitted weights) or ``"mean"`` (plain mean of the bands).

    Returns:
        ``(B, C, H, W)`` sharpened bands, same dtype as ``bands_lr_up``:
        ``band_up + cov(band_up, I)/var(I) · (matched_pan − I)`` with ``I`` the synthetic pan.
    """
    if pan_hr.ndim != 4 or pan_hr.shape[1] != 1:
        raise ValueError(f"pan_hr must be (B, 1, H, W), got {tuple(pan_hr.shape)}")
    if bands_lr_up.ndim != 4 or bands_lr_up.shape[-2:] != pan_hr.shape[-2:]:
        raise ValueError(
            f"bands_lr_up must be (B, C, H, W) on the pan's grid {tuple(pan_hr.shape[-2:])}, "
            f"got {tuple(bands_lr_up.shape)}"
        )
    reference = pan_hr if pan_lowpass is None else pan_lowpass
    weights = _valid_weights(valid, bands_lr_up)

    if synthetic == "regression":
        synthetic_pan = _regressed_synthetic_pan(bands_lr_up, reference, weights)
    elif synthetic == "mean":
        synthetic_pan = bands_lr_up.mean(dim=1, keepdim=True)
    else:
        raise ValueError(f"synthetic must be 'regression' or 'mean', got {synthetic!r}")
    synthetic_mean = _masked_mean(synthetic_pan, weights)
    synthetic_dev = synthetic_pan - synthetic_mean
    synthetic_var = _masked_mean(synthetic_dev.square(), weights)

    reference_mean = _masked_mean(reference, weights)
    reference_var = _masked_mean((reference - reference_mean).square(), weights)
    # A pan without low-resolution variation cannot be matched: scale 0 turns it into the
    # synthetic pan's mean, and the guard below then zeroes the detail.
    has_pan = reference_var > _VAR_EPS
    scale = torch.where(
        has_pan,
        (synthetic_var / reference_var.clamp_min(_VAR_EPS)).sqrt(),
        torch.zeros_like(reference_var),
    )
    matched_pan = (pan_hr - reference_mean) * scale + synthetic_mean
    detail = torch.where(has_pan, matched_pan - synthetic_pan, torch.zeros_like(synthetic_pan))

    band_mean = _masked_mean(bands_lr_up, weights)
    covariance = _masked_mean((bands_lr_up - band_mean) * synthetic_dev, weights)
    gain = torch.where(
        synthetic_var > _VAR_EPS,
        covariance / synthetic_var.clamp_min(_VAR_EPS),
        torch.zeros_like(covariance),
    )
    return bands_lr_up + gain * detail


def _assemble(per_group: Mapping[GroupName, Tensor]) -> Tensor:
    """Scatter per-group ``(B, C_g, H, W)`` tensors into one ``(B, 12, H, W)`` in product order."""
    first = next(iter(per_group.values()))
    out = first.new_empty((first.shape[0], len(BAND_NAMES), *first.shape[-2:]))
    for group, data in per_group.items():
        for k, band in enumerate(indices(GROUPS[group])):  # plain copies, not an index kernel
            out[:, band].copy_(data[:, k])
    return out


def bilinear_fuse(
    rgb_sr: Tensor, groups: Mapping[str, Tensor], valid: Tensor | None = None
) -> Tensor:
    """Bilinear upsampling of every band to the SR grid (the no-guidance baseline).

    Args:
        rgb_sr: ``(B, 3, H, W)`` SR reflectance, R, G, B; only its size is used.
        groups: ``{"10m": (B, 4, H/4, W/4), "20m": (B, 6, H/8, W/8), "60m": (B, 2, H/24, W/24)}``
            reflectance in ``bands.GROUPS`` order.
        valid: accepted for signature compatibility with :func:`gram_schmidt_fuse`; unused.

    Returns:
        ``(B, 12, H, W)`` reflectance in product order.
    """
    size = _check_inputs(rgb_sr, groups)
    return _assemble({g: upsample_to(groups[g], size) for g in GROUP_RATIO})


def bilinear_core_into(
    groups: Mapping[str, Tensor],
    core: tuple[slice, slice],
    out: Tensor,
    skip: Collection[int] = (),
) -> None:
    """:func:`bilinear_fuse` of one tile, only its ``core``, written into ``out``.

    The same values, bit for bit, as ``bilinear_fuse(...)[0, :, rows, cols]``, without
    upsampling the tile's halo, without the bands in ``skip`` (the pipeline puts the diffusion
    RGB there) and without a copy: each band is upsampled straight into its plane of ``out``.

    Args:
        groups: one tile's ``{"10m": (4, h, w), "20m": (6, h/2, w/2), "60m": (2, h/6, w/6)}``
            float32 reflectance in ``bands.GROUPS`` order (``h × w`` = the tile with its halo on
            the 10 m grid).
        core: output ``(rows, cols)`` of the tile's 2.5 m grid, on whole 60 m pixels (multiples
            of 24): what is written. The pixels around it serve as the interpolation's
            neighbours, clamped at the tile's edges as in :func:`bilinear_fuse`.
        out: ``(12, core height, core width)`` float32 in product order; each band's plane
            contiguous.
        skip: product band indices left as they are.
    """
    rows, cols = core
    coarsest = SCALE * max(GROUP_RATIO.values())
    if any(v % coarsest for v in (rows.start, rows.stop, cols.start, cols.stop)):
        raise ValueError(f"core {core} is not on whole {coarsest}-pixel (60 m) cells")
    for group, ratio in GROUP_RATIO.items():
        factor = SCALE * ratio
        native = (
            slice(rows.start // factor, rows.stop // factor),
            slice(cols.start // factor, cols.stop // factor),
        )
        data = groups[group]
        for k, band in enumerate(indices(GROUPS[group])):
            if band not in skip:
                bilinear_up(data[k : k + 1], factor, *native, storage=out[band].view(-1))


def gram_schmidt_fuse(
    rgb_sr: Tensor,
    groups: Mapping[str, Tensor],
    valid: Tensor | None = None,
    *,
    synthetic: SyntheticPan = "regression",
) -> Tensor:
    """Gram–Schmidt pansharpening of every band group, guided by the SR RGB (SPEC §3).

    See the module docstring for the definition and the choices made.

    Args:
        rgb_sr: ``(B, 3, H, W)`` SR reflectance, R, G, B; the pan is the mean of the channels.
        groups: ``{"10m": (B, 4, H/4, W/4), "20m": (B, 6, H/8, W/8), "60m": (B, 2, H/24, W/24)}``
            reflectance in ``bands.GROUPS`` order.
        valid: ``(B, H, W)`` bool on the SR grid; statistics use only these pixels. ``None``: all.
        synthetic: how each group's synthetic pan is formed, ``"regression"`` or ``"mean"``.

    Returns:
        ``(B, 12, H, W)`` reflectance in product order. B02–B04 are sharpened too; the pipeline
        replaces them by the diffusion RGB.
    """
    size = _check_inputs(rgb_sr, groups)
    pan = rgb_sr.mean(dim=1, keepdim=True)
    sharpened: dict[GroupName, Tensor] = {}
    for group, ratio in GROUP_RATIO.items():
        factor = SCALE * ratio
        # The pan seen at the group's resolution: area average over native pixels, then the
        # same bilinear upsampling the bands get, so its statistics are comparable to theirs.
        pan_lowpass = upsample_to(F.avg_pool2d(pan, factor), size)
        sharpened[group] = gram_schmidt_sharpen(
            pan,
            upsample_to(groups[group], size),
            pan_lowpass=pan_lowpass,
            valid=valid,
            synthetic=synthetic,
        )
    return _assemble(sharpened)
