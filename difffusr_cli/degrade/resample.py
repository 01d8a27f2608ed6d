"""Bilinear resampling on pixel centres (``align_corners=False``).

Shared by the fusion baselines, the fusion nets' Wald inputs and the pipeline.

A pixel of a grid ``ratio`` times coarser covers exactly ``ratio × ratio`` fine pixels and both
grids share their origin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from difffusr_cli.upsample import bilinear_up


def upsample_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize on pixel centres: ``(B, C, h, w)`` → ``(B, C, *size)``.

    A whole ×f upsampling runs separably (:func:`~difffusr_cli.upsample.bilinear_up`: the same
    to float rounding, 4 × faster on the CPU); any other size, and tensors that need gradients,
    through ``F.interpolate``.
    """
    if tuple(x.shape[-2:]) == size:
        return x
    *lead, h, w = x.shape
    factor = size[0] // h
    # (not for autograd: the kernel writes into its output; not under reduced precision)
    plain = x.dtype == torch.float32 and not (x.requires_grad and torch.is_grad_enabled())
    if plain and factor > 1 and size == (h * factor, w * factor):
        return bilinear_up(x.reshape(-1, h, w), factor).view(*lead, *size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def upsample_bilinear(x: Tensor, ratio: int) -> Tensor:
    """Bilinear upsampling on pixel centres ``(B, C, h, w)`` → ``(B, C, h·ratio, w·ratio)``."""
    height, width = x.shape[-2:]
    return upsample_to(x, (height * ratio, width * ratio))
