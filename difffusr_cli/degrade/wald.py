"""Wald's protocol degradation.

MTF-matched Gaussian blur then box average (fusion training and evaluation both degrade band groups
with it, so their numbers describe the same situation).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from difffusr_cli.degrade.kernels import blur, isotropic_kernel

#: Nyquist gain of the MTF-matched Gaussian used by the Wald degradation.
WALD_NYQUIST_GAIN = 0.3


def wald_sigma(ratio: int, nyquist_gain: float = WALD_NYQUIST_GAIN) -> float:
    """Standard deviation (input pixels) of the Wald Gaussian for a ×``ratio`` coarser grid.

    Its response at the Nyquist frequency of the ×``ratio`` coarser grid equals ``nyquist_gain``.

    A Gaussian of σ pixels has frequency response ``exp(−2π²σ²f²)``; at ``f = 1/(2·ratio)``
    cycles/pixel this gives ``σ = ratio · sqrt(−2 ln g) / π`` (≈ 0.49 · ratio for g = 0.3, the
    usual Sentinel-2-like MTF gain at Nyquist).
    """
    if not 0 < nyquist_gain < 1:
        raise ValueError(f"nyquist_gain must be in (0, 1), got {nyquist_gain}")
    return ratio * math.sqrt(-2.0 * math.log(nyquist_gain)) / math.pi


def wald_degrade(x: Tensor, ratio: int, nyquist_gain: float = WALD_NYQUIST_GAIN) -> Tensor:
    """Degrade by ``ratio`` for Wald's protocol: MTF-matched Gaussian blur, then box average.

    The Gaussian (σ from :func:`wald_sigma`, kernel side ``2·ceil(3σ) + 1``) models the sensor
    MTF at the coarser grid; the ``ratio × ratio`` box average models the coarser pixel's area
    integration and decimates.

    Args:
        x: ``(B, C, H, W)`` float reflectance, ``H`` and ``W`` multiples of ``ratio``.
        ratio: integer degradation factor (≥ 1; 1 returns ``x``).
        nyquist_gain: Gaussian response at the coarse grid's Nyquist frequency.

    Returns:
        ``(B, C, H/ratio, W/ratio)`` float reflectance.
    """
    if ratio == 1:
        return x
    height, width = x.shape[-2:]
    if ratio < 1 or height % ratio or width % ratio:
        raise ValueError(f"image size {height}×{width} is not a multiple of ratio {ratio}")
    sigma = wald_sigma(ratio, nyquist_gain)
    size = 2 * math.ceil(3 * sigma) + 1
    blurred = blur(x, isotropic_kernel(sigma, size=size).to(x.device))
    return F.avg_pool2d(blurred, ratio)
