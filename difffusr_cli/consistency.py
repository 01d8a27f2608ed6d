"""Reflectance consistency: box-averaged over each native pixel, a band gives back the input.

Pure torch on ``(C, H, W)`` float32 images; no files, no models. With ``D`` the box average over
``f × f`` pixels (``f`` = output pixels per native pixel: 4, 8 or 24), ``B`` bilinear upsampling
by ``f`` (``align_corners=False``, edges clamped) and ``R`` box repetition, :func:`project` returns

    y = x + B(c) + R(b − D(x + B(c)))      with  c ≈ (D∘B)⁻¹ (b − D(x)),

so ``D(y) = b`` exactly (up to float rounding), and the correction is smooth: ``B(c)`` is a
bilinear surface and the last, blocky ``R`` step only removes what the smooth step left, which
is tiny (see :data:`RADIUS`). It is the back-projection ``x ← x + B(b − D(x))`` iterated to
convergence, computed on the native grid: ``D∘B`` is a separable 3-tap filter ``[1/8, 3/4,
1/8]`` (for every even ``f``; replicate edges), whose inverse decays like ``0.1716^|n|``, so a
truncated inverse of radius :data:`RADIUS` solves it to about ``0.17^(RADIUS+1)``.

Native pixels marked invalid get zero residual: nothing pulls them towards ``b``; the smooth
correction of their valid neighbours reaches into them.

Every operation is elementwise with weights that depend only on a pixel's position inside its
native pixel, so a pixel's result does not depend on where the arrays start (given the same
``REACH`` native pixels around it): computing a strip by pieces with that much context gives the
same numbers as computing it whole.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Radius (native pixels) of the truncated inverse of ``D∘B``. The smooth step leaves a residual
#: of about ``0.17^(RADIUS+1)`` of the correction (2.5e-4 for 4), removed by the exact box step.
RADIUS = 4
#: How far (native pixels, each side) the result at a pixel depends on the inputs.
REACH = RADIUS + 1


def box_average(x: Tensor, factor: int) -> Tensor:
    """``D``: mean over each ``factor × factor`` cell; ``(C, H, W)`` → ``(C, H/f, W/f)``."""
    return F.avg_pool2d(x[None], factor)[0]


def box_repeat(r: Tensor, factor: int) -> Tensor:
    """``R``: each native pixel repeated over its cell; ``(C, h, w)`` → ``(C, hf, wf)``."""
    return r.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def bilinear_up(
    c: Tensor,
    factor: int,
    rows: slice | None = None,
    cols: slice | None = None,
    storage: Tensor | None = None,
) -> Tensor:
    """``B``: bilinear upsampling by ``factor`` (``align_corners=False``, clamped edges).

    ``(C, h, w)`` → ``(C, h·f, w·f)``, or only the output pixels of the native ``rows`` ×
    ``cols``. Equals ``F.interpolate(..., mode="bilinear")`` but with weights that depend only on
    the position inside the native pixel (position-independent rounding). ``storage``: a flat
    tensor of at least the result's size to hold it (a caller's reused buffer).
    """
    rows, cols = rows or slice(0, c.shape[1]), cols or slice(0, c.shape[2])
    padded = c.index_select(1, _clamped_index(rows, c.shape[1], c.device))
    padded = padded.index_select(2, _clamped_index(cols, c.shape[2], c.device))
    return _up_axis(_up_axis(padded, factor, 2), factor, 1, storage)  # columns first


def _clamped_index(span: slice, n: int, device: torch.device) -> Tensor:
    """Indices ``span.start − 1 … span.stop`` clamped to ``[0, n)`` (one neighbour each side)."""
    return torch.arange(span.start - 1, span.stop + 1, device=device).clamp(0, n - 1)


def _up_axis(p: Tensor, factor: int, dim: int, storage: Tensor | None = None) -> Tensor:
    """Upsample ``p`` along ``dim`` (1 or 2), which holds one neighbour on each side.

    Output pixel ``o`` of a native pixel sits at ``d = (o + ½)/f − ½`` native pixels from its
    centre: it interpolates linearly towards the previous native pixel (``d < 0``) or the next.
    """
    n = p.shape[dim] - 2
    prev, own, nxt = (p.narrow(dim, k, n) for k in range(3))
    size = list(p.shape)
    size.insert(dim + 1, factor)
    size[dim] = n
    if storage is None:
        out = torch.empty(size, dtype=p.dtype, device=p.device)
    else:
        out = storage[: math.prod(size)].view(size)
    for o in range(factor):
        d = (o + 0.5) / factor - 0.5
        torch.lerp(own, prev if d < 0 else nxt, abs(d), out=out.select(dim + 1, o))
    size[dim : dim + 2] = [n * factor]
    return out.view(size)


@functools.lru_cache(maxsize=4)
def inverse_kernel(radius: int = RADIUS) -> tuple[float, ...]:
    """The central ``2·radius + 1`` taps of the inverse of the filter ``[1/8, 3/4, 1/8]``.

    Normalised to sum 1 (the inverse of a filter of gain 1 at zero frequency).
    """
    n = 8 * radius + 41
    matrix = np.diag(np.full(n, 0.75)) + np.diag(np.full(n - 1, 0.125), 1)
    matrix += np.diag(np.full(n - 1, 0.125), -1)
    row = np.linalg.inv(matrix)[n // 2, n // 2 - radius : n // 2 + radius + 1]
    return tuple(float(v) for v in row / row.sum())


def _symmetric_index(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices of a half-sample symmetric extension of ``n`` samples by ``pad`` on each side."""
    i = np.arange(-pad, n + pad) % (2 * n)
    return torch.from_numpy(np.where(i >= n, 2 * n - 1 - i, i)).to(device)


def box_of_bilinear(c: Tensor) -> Tensor:
    """``D∘B`` on the native grid: the separable filter ``[1/8, 3/4, 1/8]``, edges replicated.

    ``c``: ``(C, h, w)``; returns the same shape: the box average of :func:`bilinear_up` ``(c)``
    over each native pixel, for every even ``factor``.
    """
    out = c
    for dim in (1, 2):
        n = out.shape[dim]
        ext = out.index_select(dim, torch.arange(-1, n + 1, device=c.device).clamp(0, n - 1))
        out = ext.narrow(dim, 1, n) * 0.75
        out.add_(ext.narrow(dim, 0, n), alpha=0.125).add_(ext.narrow(dim, 2, n), alpha=0.125)
    return out


def solve_smooth(r: Tensor, radius: int = RADIUS) -> Tensor:
    """``c ≈ (D∘B)⁻¹ r`` on the native grid: the truncated inverse, rows then columns.

    The edges are extended half-sample symmetrically, which makes the interior inverse also the
    inverse of ``D∘B`` with clamped edges. ``r``: ``(C, h, w)``; returns the same shape.
    """
    taps = inverse_kernel(radius)
    out = r
    for dim in (1, 2):
        n = out.shape[dim]
        ext = out.index_select(dim, _symmetric_index(n, radius, out.device))
        acc = ext.narrow(dim, 0, n) * taps[0]
        for k, tap in enumerate(taps[1:], start=1):
            acc.add_(ext.narrow(dim, k, n), alpha=tap)
        out = acc
    return out


def project(
    x: Tensor,
    b: Tensor,
    valid: Tensor,
    factor: int,
    keep: tuple[slice, slice] | None = None,
    radius: int = RADIUS,
    storage: Tensor | None = None,
) -> Tensor:
    """Correct ``x`` so that its box average over every valid native pixel is ``b``.

    Args:
        x: ``(C, H, W)`` float32 reflectance at 2.5 m, ``H`` and ``W`` multiples of ``factor``.
        b: ``(C, H/f, W/f)`` float32 native reflectance (the input).
        valid: ``(H/f, W/f)`` bool; invalid native pixels get zero residual.
        factor: output pixels per native pixel (4, 8 or 24).
        keep: native ``(rows, cols)`` (slices with start and stop) to return; default all. The
            others serve as context only: each result depends on :data:`REACH` native pixels
            around it.
        radius: see :data:`RADIUS`.
        storage: a flat float32 tensor of at least the result's size to hold it (reused by a
            caller that projects many blocks: fresh memory costs a page fault per page).

    Returns:
        ``(C, H, W)`` float32 (or the pixels of ``keep``) with ``box_average(result) == b`` on
        valid native pixels, to float rounding.
    """
    x, b = x.float(), b.float()
    mask = valid.to(x.dtype)[None]
    r = (b - box_average(x, factor)) * mask
    c = solve_smooth(r, radius)
    rows, cols = keep or (slice(0, b.shape[1]), slice(0, b.shape[2]))
    full = np.s_[
        :, rows.start * factor : rows.stop * factor, cols.start * factor : cols.stop * factor
    ]
    y = bilinear_up(c, factor, rows, cols, storage).add_(x[full])
    # b − D(y) = r − (D∘B)(c): computed on the native grid, not by averaging y again (one
    # pass over every output pixel less; the same to float rounding, ~1e-8).
    residual = (r - box_of_bilinear(c))[:, rows, cols] * mask[:, rows, cols]
    channels, height, width = y.shape
    cells = y.view(channels, height // factor, factor, width // factor, factor)
    cells.add_(residual[:, :, None, :, None])
    return y
