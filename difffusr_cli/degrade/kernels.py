"""Blur kernels and the blur itself: anisotropic / isotropic Gaussians on NCHW float32 tensors.

Shared by the RGB blind-SR degradation (:mod:`difffusr_cli.degrade.blind`) and Wald's protocol
(:mod:`difffusr_cli.degrade.wald`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def anisotropic_gaussian_kernel(
    sigma_x: float, sigma_y: float, theta: float, size: int = 21
) -> Tensor:
    """A rotated 2-D Gaussian kernel, normalised to sum 1.

    The covariance is ``R(θ) diag(σx², σy²) R(θ)ᵀ``: the kernel's own x axis (σx) is the column
    axis turned by ``theta`` radians towards the row axis. θ and θ + π give the same kernel, and
    θ + π/2 swaps the roles of σx and σy, so θ ~ U(0, π) covers every orientation.

    Args:
        sigma_x: standard deviation in pixels (> 0) along the kernel's own x axis.
        sigma_y: standard deviation in pixels (> 0) along the kernel's own y axis.
        theta: rotation in radians.
        size: kernel side in pixels (odd), centred on the middle pixel.

    Returns:
        ``(size, size)`` float32, indexed ``[row, column]``.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd number, got {size}")
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be positive, got {sigma_x}, {sigma_y}")
    half = size // 2
    coords = torch.arange(-half, half + 1, dtype=torch.float64)
    row, col = torch.meshgrid(coords, coords, indexing="ij")
    cos, sin = math.cos(theta), math.sin(theta)
    # Coordinates in the kernel's own (rotated) frame.
    u = cos * col + sin * row
    v = -sin * col + cos * row
    kernel = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (kernel / kernel.sum()).to(torch.float32)


def isotropic_kernel(sigma: float, size: int = 21) -> Tensor:
    """An isotropic Gaussian kernel ``(size, size)`` float32 summing to 1 (validation blur)."""
    return anisotropic_gaussian_kernel(sigma, sigma, 0.0, size=size)


def _pad_mode(x: Tensor, pad: int) -> str:
    """Reflect padding where the image is large enough for it, replicate otherwise."""
    return "reflect" if min(x.shape[-2:]) > pad else "replicate"


def blur(x: Tensor, kernels: Tensor) -> Tensor:
    """Convolve each image with its own kernel (same kernel for all its channels).

    Args:
        x: ``(B, C, H, W)`` float.
        kernels: ``(B, k, k)`` or ``(k, k)`` (shared) kernels, k odd.

    Returns:
        ``(B, C, H, W)``, borders handled by reflection.
    """
    batch, channels, height, width = x.shape
    if kernels.ndim == 2:
        kernels = kernels.expand(batch, *kernels.shape)
    size = kernels.shape[-1]
    pad = size // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode=_pad_mode(x, pad))
    # One grouped convolution: every (image, channel) pair is its own group.
    weight = kernels.to(x.dtype).repeat_interleave(channels, dim=0).unsqueeze(1)
    out = F.conv2d(
        padded.reshape(1, batch * channels, *padded.shape[-2:]), weight, groups=batch * channels
    )
    return out.reshape(batch, channels, height, width)
