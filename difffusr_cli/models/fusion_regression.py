"""Local regression fusion: each band's detail from its local ridge regression on R, G, B.

``band_hr = band_up + Σ_c g_c · (rgb_c − lp(rgb_c))``, the classical fusion the ``regression``
injection of :class:`~difffusr_cli.models.fusion_mtf.MTFNetFusion` starts from (GLP with local
regression gains; a multichannel guided filter on the band's grid):

- ``lp(rgb)``: Wald's MTF-matched Gaussian (Nyquist gain 0.3) and the ``ratio`` cell average,
  upsampled bilinearly as the bands are, i.e. the guidance as the band's sensor would see it;
- ``g``: on the band's grid (cell averages of both, so that they are smoothed alike), the ridge
  regression of the band on the low-passed R, G, B over the :data:`REGRESSION_WINDOW` ² cells
  around each cell, upsampled bilinearly.

NIR, SWIR and red-edge bands relate to R, G, B differently over water, vegetation and soil,
which one gain per band and image (Gram–Schmidt) cannot follow. Everything is local, so tiles
with the branch's halo agree where they overlap. Inputs are z-scores (any affine scaling per
channel gives the same result, up to the ridge). The Gaussian here equals
:func:`difffusr_cli.degrade.wald_degrade`'s (a test checks it); models import only torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: Side, in band pixels, of the window each local regression is fitted over.
REGRESSION_WINDOW = 5
#: Ridge added to the 3 × 3 covariance of the guidance, in z-score² (0.01 z ≈ 0.0017 reflectance:
#: contrast below that counts as noise, and flat areas get little injection instead of a blow-up).
REGRESSION_RIDGE = 1e-4
#: MTF gain at the band's Nyquist frequency assumed for the low-pass (as Wald's protocol).
NYQUIST_GAIN = 0.3


def wald_sigma(ratio: int, nyquist_gain: float = NYQUIST_GAIN) -> float:
    """σ (fine pixels) of the Gaussian with response ``nyquist_gain`` at the ×``ratio`` Nyquist."""
    return ratio * math.sqrt(-2.0 * math.log(nyquist_gain)) / math.pi


def mtf_lowpass(x: Tensor, ratio: int) -> Tensor:
    """``(B, C, H, W)`` → ``(B, C, H/ratio, W/ratio)``: MTF-matched Gaussian, then cell average.

    Borders reflect (replicate where the image is smaller than the kernel's half-width).
    """
    sigma = wald_sigma(ratio)
    half = math.ceil(3 * sigma)
    axis = torch.arange(-half, half + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (axis / sigma) ** 2)
    kernel = torch.outer(kernel, kernel)
    kernel = (kernel / kernel.sum()).to(device=x.device, dtype=x.dtype)
    channels = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > half else "replicate"
    padded = F.pad(x, (half, half, half, half), mode=mode)
    weight = kernel.expand(channels, 1, *kernel.shape)
    return F.avg_pool2d(F.conv2d(padded, weight, groups=channels), ratio)


def _local_mean(x: Tensor) -> Tensor:
    """Mean over the :data:`REGRESSION_WINDOW` ² neighbourhood of each pixel (edges replicated)."""
    pad = REGRESSION_WINDOW // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return F.avg_pool2d(padded, REGRESSION_WINDOW, stride=1)


def local_regression_details(rgb: Tensor, ms: Tensor, ratio: int) -> Tensor:
    """What the local regression fusion adds to each band (see the module docstring), float32.

    A band that is locally an affine function of R, G, B comes back exactly (up to the ridge).
    Runs outside autocast: the 3 × 3 solves need the precision (float64).

    Args:
        rgb: ``(B, 3, H, W)`` z-scored guidance, ``H, W`` multiples of ``ratio``.
        ms: ``(B, C, H, W)`` z-scored bands already upsampled bilinearly to the guidance grid.
        ratio: pixel size of the bands over the guidance's (4, 8 or 24).

    Returns:
        ``(B, C, H, W)`` float32 detail.
    """
    with torch.autocast(device_type=rgb.device.type, enabled=False):
        rgb, ms = rgb.float(), ms.float()
        size = (int(rgb.shape[-2]), int(rgb.shape[-1]))
        lowpass = F.interpolate(
            mtf_lowpass(rgb, ratio), size=size, mode="bilinear", align_corners=False
        )
        guide, bands = F.avg_pool2d(lowpass, ratio), F.avg_pool2d(ms, ratio)
        mean_g, mean_b = _local_mean(guide), _local_mean(bands)
        # (B, h, w, 3, 3) covariance of the guidance, (B, h, w, 3, C) cross-covariance
        cov = torch.stack(
            [
                _local_mean(guide[:, i : i + 1] * guide) - mean_g[:, i : i + 1] * mean_g
                for i in range(3)
            ],
            dim=1,
        ).permute(0, 3, 4, 1, 2)
        cross = torch.stack(
            [
                _local_mean(bands * guide[:, i : i + 1]) - mean_b * mean_g[:, i : i + 1]
                for i in range(3)
            ],
            dim=1,
        ).permute(0, 3, 4, 1, 2)
        ridge = REGRESSION_RIDGE * torch.eye(3, device=rgb.device, dtype=torch.float64)
        gains = torch.linalg.solve(cov.double() + ridge, cross.double()).float()
        # (B, h, w, 3, C) → (B, 3·C, h, w), upsampled like the bands → (B, 3, C, H, W)
        batch, height, width = gains.shape[:3]
        gains = gains.permute(0, 3, 4, 1, 2).reshape(batch, -1, height, width)
        gains = F.interpolate(gains, size=size, mode="bilinear", align_corners=False)
        gains = gains.view(batch, 3, ms.shape[1], *size)
        return (gains * (rgb - lowpass)[:, :, None]).sum(dim=1)
