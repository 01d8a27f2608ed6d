"""Bilinear resampling on pixel centres (``align_corners=False``).

Shared by the fusion baselines, the fusion nets' Wald inputs and the pipeline.

A pixel of a grid ``ratio`` times coarser covers exactly ``ratio × ratio`` fine pixels and both
grids share their origin.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def upsample_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize on pixel centres: ``(B, C, h, w)`` → ``(B, C, *size)``."""
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def upsample_bilinear(x: Tensor, ratio: int) -> Tensor:
    """Bilinear upsampling on pixel centres ``(B, C, h, w)`` → ``(B, C, h·ratio, w·ratio)``."""
    height, width = x.shape[-2:]
    return upsample_to(x, (height * ratio, width * ratio))
