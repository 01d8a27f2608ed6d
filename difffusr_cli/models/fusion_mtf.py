"""MTFNetFusion: the detail-injection fusion branch (one per group) of the authors' newer model.

``MTFNetFusion(ms_in, mtf_ratio)(rgb, ms) -> (B, ms_in, H, W)`` with ``rgb`` ``(B, 3, H, W)`` the
z-scored SR RGB guidance and ``ms`` ``(B, ms_in, h, w)`` the group's z-scored bands on any grid
(resized here, bilinearly, to the guidance grid when it differs). Output: the group's bands,
z-scored, on the guidance grid.

Pansharpening by detail injection (GLP style): a learned convex mix of R, G, B forms a pan; per
band ``i`` a learnable MTF-matched Gaussian low-passes the pan at the band's ratio (blur, area
resize by the ratio, bicubic back), ``detail = pan − lp``; a small net refines the detail from
``[detail, ms_i]``, another predicts a gain from ``[pan, lp, mean_c ms]``, and
``band = ms_i + (1 + gain)·detail_hat``; a residual refinement of ``[bands, mean detail_hat]``
finishes.

With ``injection="regression"`` the detail of band ``i`` is instead
``Σ_c g_ic · (rgb_c − lp(rgb_c))``: each guidance channel minus its MTF-matched low-pass (Wald's
Gaussian, then the band's cell average), weighted by the coefficients ``g_i`` of a ridge
regression of the band on R, G, B fitted over the 5 × 5 band pixels around each pixel (a
multichannel guided filter on the band's grid; GLP with local regression gains). NIR, SWIR and
red-edge bands relate to R, G, B differently over water, vegetation and soil, which one global
gain (Gram–Schmidt) cannot follow. Everything is local, so tiles agree where they overlap. The
gain net then sees ``[pan, lp, ms_i]`` (the band itself, not the group mean). A branch whose last
layers are zero (:meth:`MTFNetFusion.start_as_detail_injection`) is exactly this classical
fusion (:mod:`~difffusr_cli.models.fusion_regression`), and training learns corrections to it.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difffusr_cli.models.fusion_regression import (
    REGRESSION_WINDOW,
    local_regression_details,
    wald_sigma,
)
from difffusr_cli.models.rrdb import FUSION_RDB_NAMES, RRDB

# Nyquist MTF gains the authors' code uses for Sentinel-2; a branch takes the first C entries
# whatever its bands are (upstream quirk that only affects the initial kernels).
_S2_MTF_GAINS = (0.29, 0.30, 0.28, 0.24, 0.23, 0.23, 0.25, 0.25, 0.27, 0.28, 0.30, 0.30)
# Luma weights of the pan mixer's "luma" initialisation (R, G, B).
_LUMA = (0.2989, 0.5870, 0.1140)


def mtf_gaussian(mtf_gain: float, ratio: int) -> tuple[float, int]:
    """Size a Gaussian to match a sensor MTF.

    The Gaussian's response at the coarse grid's Nyquist frequency equals ``mtf_gain``; the kernel
    covers ±4σ and is at least 3 pixels wide.

    Args:
        mtf_gain: MTF value at the coarse grid's Nyquist frequency, in (0, 1).
        ratio: pixel-size ratio of the coarse grid to the fine one.

    Returns:
        ``(sigma, size)``: σ in fine-grid pixels and the odd kernel size.
    """
    sigma = -ratio * math.sqrt(2.0) * math.log(mtf_gain) / (2.0 * math.pi**2)
    return sigma, max(3, 2 * int(4 * sigma + 0.5) + 1)


def gaussian_kernel(size: int, sigma: float) -> Tensor:
    """A normalised isotropic Gaussian kernel.

    Args:
        size: kernel width and height in pixels (odd).
        sigma: standard deviation in pixels.

    Returns:
        ``(1, 1, size, size)`` float32 kernel summing to 1.
    """
    ax = torch.arange(size) - size // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    kernel = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return (kernel / kernel.sum()).view(1, 1, size, size)


class ConvexPanMixer(nn.Module):
    """Pan = softmax(logits)-weighted sum of the guidance channels: ``(B, 3, H, W) → (B, 1, H, W)``.

    Args:
        in_nc: guidance channels; 3 starts from luma weights, other counts from equal weights.
    """

    def __init__(self, in_nc: int = 3) -> None:
        super().__init__()
        weights = torch.tensor(_LUMA) if in_nc == 3 else torch.full((in_nc,), 1.0 / in_nc)
        self.logits = nn.Parameter(torch.log(weights / weights.sum()))

    def forward(self, rgb: Tensor) -> Tensor:
        """Mix the guidance channels into one pan channel.

        Args:
            rgb: ``(B, in_nc, H, W)`` float32 guidance (z-scored SR R, G, B; unbounded).

        Returns:
            ``(B, 1, H, W)`` float32 convex combination of the channels.
        """
        w = torch.softmax(self.logits, dim=0)
        return torch.sum(rgb * w.view(1, -1, 1, 1), dim=1, keepdim=True)


class Resblock(nn.Module):
    """``x + conv21(relu(conv20(x)))`` (3×3 convs, equal width).

    Args:
        channels: feature width (input = output).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv20 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv21 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the residual block.

        Args:
            x: ``(B, channels, H, W)`` float32 features.

        Returns:
            ``(B, channels, H, W)`` float32 features.
        """
        return x + self.conv21(F.relu(self.conv20(x)))


class MTFNetFusion(nn.Module):
    """One MTF fusion branch; see the module docstring.

    ``mtf_ratios`` is an int32 ``(ms_in_nc,)`` buffer (every entry ``mtf_ratio``), as upstream.

    Args:
        ms_in_nc: bands of the group (input and output).
        mtf_ratio: resolution ratio of the group's bands to the guidance (4, 8 or 24).
        nf, nb, gc: feature width, blocks (``nb // 2`` RRDBs / Resblocks), growth channels.
        rgb_in_nc: guidance channels (3).
        injection: ``"mtf"`` (pan minus its MTF low-pass) or ``"regression"`` (R, G, B details
            weighted by the band's local regression on them).
    """

    # registered buffer, declared for type checkers (nn.Module.__getattr__ is untyped)
    mtf_ratios: Tensor

    def __init__(
        self,
        ms_in_nc: int,
        mtf_ratio: int,
        nf: int,
        nb: int,
        gc: int,
        rgb_in_nc: int = 3,
        *,
        injection: str = "mtf",
    ) -> None:
        super().__init__()
        if injection not in ("mtf", "regression"):
            raise ValueError(f"injection must be 'mtf' or 'regression', got {injection!r}")
        self.injection = injection
        self.ms_in_nc = ms_in_nc
        self.nb = nb
        self.mtf_ratio = mtf_ratio
        self.register_buffer("mtf_ratios", torch.full((ms_in_nc,), mtf_ratio, dtype=torch.int32))
        self.pan_mixer = ConvexPanMixer(rgb_in_nc)
        filters = []
        for i in range(ms_in_nc):
            sigma, size = mtf_gaussian(_S2_MTF_GAINS[i % len(_S2_MTF_GAINS)], mtf_ratio)
            conv = nn.Conv2d(1, 1, size, bias=False)
            with torch.no_grad():
                conv.weight.copy_(gaussian_kernel(size, sigma))
            filters.append(conv)
        self.mtf_filters = nn.ModuleList(filters)
        self.detail_net = nn.Sequential(
            nn.Conv2d(2, nf, 3, padding=1),
            nn.LeakyReLU(0.2),
            *[RRDB(nf, gc, FUSION_RDB_NAMES) for _ in range(nb // 2)],
            nn.Conv2d(nf, 1, 3, padding=1),
        )
        self.gain_estimator = nn.Sequential(
            nn.Conv2d(3, nf // 2, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(nf // 2, 1, 1),
        )
        self.refinement = nn.Sequential(
            nn.Conv2d(ms_in_nc + 1, nf, 3, padding=1),
            nn.LeakyReLU(0.2),
            *[Resblock(nf) for _ in range(nb // 2)],
            nn.Conv2d(nf, ms_in_nc, 3, padding=1),
        )

    @torch.no_grad()
    def start_as_detail_injection(self) -> None:
        """Zero the last layer of the detail, gain and refinement nets (a training start).

        The branch then computes ``ms_i + detail_i`` for every band: ``pan − pan_lp`` (plain
        MTF-GLP detail injection with unit gain in z-score space) or, with
        ``injection="regression"``, the local regression fusion; a sound fusion already, which
        training refines
        instead of first unlearning random residuals (with a random start the branch begins
        worse than bilinear upsampling). Gradients still reach every layer from the first step
        on, through the zeroed layers' weights.
        """
        for net in (self.detail_net, self.gain_estimator, self.refinement):
            last = net[-1]
            assert isinstance(last, nn.Conv2d)
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    @property
    def receptive_radius(self) -> int:
        """How far (output pixels) the inputs of a tile's pixels reach beyond the tile.

        Exact for tiles (and their context) that start on multiples of ``mtf_ratio``, the
        pipeline's layout, and for the group's bands given on their native grid and upsampled
        bilinearly by :class:`~difffusr_cli.models.predictors.FusionPredictor` (that upsampling
        is included). The local nets (detail: 2 + 15 per RRDB; refinement: 2 + 2 per Resblock)
        need the low-passed pan ``local`` pixels beyond the tile, i.e. in ``⌈local / ratio⌉``
        more coarse cells; the bicubic back-projection reads 2 further cells on each side and the
        MTF blur its kernel radius beyond them. The bands' bilinear upsampling reads one coarse
        cell beyond the cells the local nets need. (A gradient check of the official-size branch
        finds exactly this support: 81 pixels for the 60 m branch.)
        """
        kernel_radius = max(
            int(self._mtf_filter(i).weight.shape[-1]) // 2 for i in range(len(self.mtf_filters))
        )
        local = (2 + RRDB.RADIUS * (self.nb // 2)) + (2 + 2 * (self.nb // 2))
        cells = -(-local // self.mtf_ratio)
        low_pass = (cells + 2) * self.mtf_ratio + kernel_radius
        bands_upsampled = (cells + 1) * self.mtf_ratio
        if self.injection == "regression":
            # the detail at a pixel reads the gains of the cells around it (bilinear), each fitted
            # over the window of cell averages of the low-passed guidance (bilinear again, of
            # cells blurred by Wald's Gaussian) and of the upsampled bands
            window = (REGRESSION_WINDOW // 2 + 3) * self.mtf_ratio
            blur = math.ceil(3 * wald_sigma(self.mtf_ratio))
            return local + max(window + blur, bands_upsampled + window)
        return max(low_pass, bands_upsampled)

    def _mtf_filter(self, band: int) -> nn.Conv2d:
        # every entry of mtf_filters is an nn.Conv2d (built in __init__)
        return cast(nn.Conv2d, self.mtf_filters[band])

    def low_pass_pan(self, pan: Tensor, band: int) -> Tensor:
        """Pan as band ``band`` would see it: reflect-pad, MTF blur, area ↓ ratio, bicubic ↑.

        The area resize works on cells aligned with the tile origin, so tiles should start on
        multiples of the ratio.

        Args:
            pan: ``(B, 1, H, W)`` float32 pan; ``H, W`` must exceed the filter's half-width
                (reflect padding).
            band: index of the band (and of its MTF filter), 0 ≤ band < ``ms_in_nc``.

        Returns:
            ``(B, 1, H, W)`` float32 low-passed pan.
        """
        conv = self._mtf_filter(band)
        pad = int(conv.weight.shape[-1]) // 2
        blurred = F.conv2d(F.pad(pan, (pad, pad, pad, pad), mode="reflect"), conv.weight)
        ratio = int(self.mtf_ratios[band])
        if ratio <= 1:
            return blurred
        h, w = blurred.shape[-2:]
        coarse = F.interpolate(blurred, size=(max(1, h // ratio), max(1, w // ratio)), mode="area")
        return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)

    def forward(self, rgb: Tensor, ms: Tensor) -> Tensor:
        """Fuse one group's bands with the guidance.

        Args:
            rgb: ``(B, rgb_in_nc, H, W)`` float32 z-scored SR R, G, B on the 2.5 m grid
                (unbounded); ``H, W`` must exceed the largest MTF filter's half-width.
            ms: ``(B, ms_in_nc, h, w)`` float32 z-scored bands of the group, on any grid
                (resized bilinearly to ``(H, W)`` when it differs).

        Returns:
            ``(B, ms_in_nc, H, W)`` float32 z-scored fused bands, channels as ``ms``.
        """
        pan = self.pan_mixer(rgb)
        if ms.shape[-2:] != pan.shape[-2:]:
            ms = F.interpolate(ms, size=pan.shape[-2:], mode="bilinear", align_corners=False)
        ms_mean = ms.mean(dim=1, keepdim=True)
        regressed = None
        if self.injection == "regression":
            regressed = local_regression_details(rgb, ms, self.mtf_ratio).to(ms.dtype)
        bands, detail_hats = [], []
        # one band at a time (as upstream): bounded memory on large tiles
        for i in range(self.ms_in_nc):
            ms_i = ms[:, i : i + 1]
            pan_lp = self.low_pass_pan(pan, i)
            detail = pan - pan_lp if regressed is None else regressed[:, i : i + 1]
            detail_hat = detail + self.detail_net(torch.cat([detail, ms_i], dim=1))
            # regression detail: the gain sees the band itself, so that its corrections can
            # differ from band to band
            own = ms_mean if regressed is None else ms_i
            gain = 1.0 + self.gain_estimator(torch.cat([pan, pan_lp, own], dim=1))
            bands.append(ms_i + gain * detail_hat)
            detail_hats.append(detail_hat)
        enhanced = torch.cat(bands, dim=1)
        mean_detail = torch.cat(detail_hats, dim=1).mean(dim=1, keepdim=True)
        return enhanced + self.refinement(torch.cat([enhanced, mean_detail], dim=1))
