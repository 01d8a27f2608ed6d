"""The RGB blind-SR degradation of ``train rgb`` (SPEC §2) and NAIP → Sentinel-2 harmonisation.

All functions are pure torch on NCHW float32 reflectance; every random draw comes from an
explicit :class:`torch.Generator` so a training run is reproducible from its seed.

RGB diffusion training (``train rgb``) builds each low-resolution input from a high-resolution
tile as::

    hr (optionally harmonized) ─▶ blur (21 × 21 anisotropic Gaussian) ─▶ ×4 antialiased bicubic
       ─▶ + Gaussian noise

with one :class:`DegradationParams` per image. The two crops of one image (MoCo's positive pair)
are degraded with the same parameters, hence "shareable": draw the parameters once with
:func:`sample_degradation` and call :func:`degrade` on both crop batches. Fixes over the research
code: the rotation θ covers the whole half-turn [0, π) (the research code drew it in degrees
between 0 and 1), and the harmonisation exponent is the multivariate normal's median rather than
a hard-coded draw.

Harmonisation (NAIP → Sentinel-2 look) comes in two forms: :func:`harmonize`, a per-band power
x^(1/γ) (γ drawn by :func:`sample_gamma`, or its median), and :func:`match_histograms`, classic
histogram matching to reference histograms (SEN2NAIP v1's ``sim_histograms``).

Wald's protocol lives in :mod:`difffusr_cli.degrade.wald`, the kernels in
:mod:`difffusr_cli.degrade.kernels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from difffusr_cli.degrade.kernels import anisotropic_gaussian_kernel, blur

#: Harmonisation exponents γ (R, G, B): the mean, hence the median, of the multivariate normal
#: fitted to NAIP → Sentinel-2 reflectance (SPEC §2).
GAMMA_MEAN: tuple[float, float, float] = (0.35212655, 0.33608668, 0.35346831)
#: Covariance of that multivariate normal (R, G, B).
GAMMA_COV: tuple[tuple[float, float, float], ...] = (
    (0.0059202, 0.00507745, 0.00445213),
    (0.00507745, 0.00494151, 0.00445722),
    (0.00445213, 0.00445722, 0.00485922),
)
#: Default harmonisation exponents: the distribution's median.
DEFAULT_GAMMA: tuple[float, float, float] = GAMMA_MEAN
#: Lower bound applied to sampled γ, far in the tail (≈ 4 standard deviations below the mean),
#: so that x^(1/γ) stays finite.
_GAMMA_MIN = 0.05


@dataclass(frozen=True)
class DegradationSettings:
    """Ranges the RGB degradations are drawn from (SPEC §2 defaults).

    Attributes:
        kernel_size: side of the square blur kernel, pixels (odd).
        sigma_range: (low, high) of the uniform draw of the blur standard deviations, HR pixels.
        noise_max: the noise standard deviation is drawn in [0, noise_max], reflectance units.
        scale: downsampling factor.
        isotropic: draw σx = σy and θ = 0 (validation) instead of anisotropic kernels.
    """

    kernel_size: int = 21
    sigma_range: tuple[float, float] = (0.2, 4.0)
    noise_max: float = 25.0 / 255.0
    scale: int = 4
    isotropic: bool = False

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {self.kernel_size}")
        low, high = self.sigma_range
        if not 0 < low <= high:
            raise ValueError(f"sigma_range must satisfy 0 < low <= high, got {self.sigma_range}")
        if self.noise_max < 0 or self.scale < 1:
            raise ValueError("noise_max must be >= 0 and scale >= 1")


@dataclass(frozen=True)
class DegradationParams:
    """One degradation per image of a batch; reuse it for the second crop of the same images.

    Attributes:
        sigma_x: ``(B,)`` blur standard deviation along the kernel's rotated x axis, HR pixels.
        sigma_y: ``(B,)`` blur standard deviation along the rotated y axis, HR pixels.
        theta: ``(B,)`` rotation of the kernel, radians in [0, π).
        noise_sigma: ``(B,)`` additive Gaussian noise standard deviation, reflectance units.
        kernel_size: blur kernel side, pixels.
        scale: downsampling factor.
    """

    sigma_x: Tensor
    sigma_y: Tensor
    theta: Tensor
    noise_sigma: Tensor
    kernel_size: int = 21
    scale: int = 4

    def __len__(self) -> int:
        return int(self.sigma_x.shape[0])

    def kernels(self) -> Tensor:
        """The ``(B, k, k)`` float32 blur kernels, each summing to 1."""
        return torch.stack(
            [
                anisotropic_gaussian_kernel(float(sx), float(sy), float(th), size=self.kernel_size)
                for sx, sy, th in zip(self.sigma_x, self.sigma_y, self.theta, strict=True)
            ]
        )


# --- harmonisation -------------------------------------------------------------------------


def harmonize(x: Tensor, gamma: Tensor | tuple[float, float, float] = DEFAULT_GAMMA) -> Tensor:
    """Give an HR RGB image the Sentinel-2 look: ``x ↦ x^(1/γ)`` per channel.

    Args:
        x: ``(B, 3, H, W)`` float R, G, B in [0, 1]; values outside are clipped to [0, 1] first
            (a fractional power of a negative number is undefined).
        gamma: per-channel exponents, a 3-tuple, a ``(3,)`` tensor, or ``(B, 3)`` for one draw
            per image (from :func:`sample_gamma`).

    Returns:
        ``(B, 3, H, W)`` float in [0, 1].
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x must be (B, 3, H, W), got {tuple(x.shape)}")
    gamma_t = torch.as_tensor(gamma, dtype=x.dtype, device=x.device)
    if gamma_t.ndim == 1:
        gamma_t = gamma_t.unsqueeze(0)
    return x.clamp(0.0, 1.0).pow(1.0 / gamma_t[:, :, None, None])


def sample_gamma(generator: torch.Generator, n: int = 1) -> Tensor:
    """Draw harmonisation exponents from the SPEC's multivariate normal.

    Returns:
        ``(n, 3)`` float32 γ for R, G, B, bounded below by 0.05.
    """
    mean = torch.tensor(GAMMA_MEAN, dtype=torch.float64)
    chol = torch.linalg.cholesky(torch.tensor(GAMMA_COV, dtype=torch.float64))
    z = torch.randn((n, 3), generator=generator, dtype=torch.float64)
    return (mean + z @ chol.T).clamp_min(_GAMMA_MIN).to(torch.float32)


def _interp(q: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear ``fp(q)`` for ascending (possibly repeated) ``xp``, like ``np.interp``."""
    idx = torch.searchsorted(xp, q, right=True).clamp(1, xp.numel() - 1)
    x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    width = x1 - x0
    weight = torch.where(width > 0, (q - x0) / torch.where(width > 0, width, 1.0), 1.0)
    return f0 + weight.clamp(0.0, 1.0) * (f1 - f0)


def _distinct_runs(values: Tensor) -> tuple[Tensor, Tensor]:
    """``(index of each value among the sorted distinct values, run length of each)``.

    8-bit data (every value k/255 within 1e-3 of a level) take a 256-bin count, the rest a sort.
    """
    scaled = values.to(torch.float64) * 255.0
    levels = torch.round(scaled)
    if (
        values.numel() > 0
        and float(levels.min()) >= 0
        and float(levels.max()) <= 255
        and float((scaled - levels).abs().max()) < 1e-3
    ):
        index = levels.to(torch.int64)
        counts = torch.bincount(index.reshape(-1), minlength=256)
        present = counts > 0
        return (torch.cumsum(present, 0) - 1)[index], counts[present]
    _, inverse, runs = torch.unique(values, return_inverse=True, return_counts=True)
    return inverse, runs


def match_histograms(x: Tensor, counts: Tensor, edges: Tensor) -> Tensor:
    """Map each channel of ``x`` so its histogram follows a reference histogram.

    Classic histogram matching: a value at quantile q of its channel (ties share the mid-rank
    quantile, so the map is monotone and equal values stay equal) becomes the reference's
    q-quantile, read from the reference CDF linearly within each bin.

    Args:
        x: ``(C, H, W)`` float reflectance.
        counts: ``(C, N)`` reference bin counts (any non-negative weights; each row sums > 0).
        edges: ``(C, N + 1)`` ascending bin edges of the reference, reflectance.

    Returns:
        ``(C, H, W)`` float32 in the reference's value range.

    Raises:
        ValueError: shapes that do not fit, or a reference row without counts.
    """
    if x.ndim != 3 or counts.ndim != 2 or edges.shape != (counts.shape[0], counts.shape[1] + 1):
        raise ValueError(
            f"x (C, H, W), counts (C, N), edges (C, N + 1) expected, got {tuple(x.shape)}, "
            f"{tuple(counts.shape)}, {tuple(edges.shape)}"
        )
    if counts.shape[0] != x.shape[0]:
        raise ValueError(f"{counts.shape[0]} reference histograms for {x.shape[0]} channels")
    out = torch.empty_like(x, dtype=torch.float32)
    for c in range(x.shape[0]):
        weights = counts[c].to(torch.float64).clamp_min(0.0)
        total = float(weights.sum())
        if not total > 0:
            raise ValueError(f"reference histogram {c} has no counts")
        cdf = torch.cat([weights.new_zeros(1), torch.cumsum(weights, 0) / total])
        # one quantile per distinct value, the mid-rank of its run
        inverse, runs = _distinct_runs(x[c])
        after = torch.cumsum(runs, 0).to(torch.float64)
        quantile = (2.0 * after - runs) / (2.0 * x[c].numel())
        mapped = _interp(quantile, cdf, edges[c].to(torch.float64))
        out[c] = mapped[inverse].to(torch.float32)
    return out


# --- blur kernels ---------------------------------------------------------------------------


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def random_kernel(
    generator: torch.Generator,
    size: int = 21,
    sigma_range: tuple[float, float] = (0.2, 4.0),
) -> Tensor:
    """One random anisotropic kernel: σx, σy ~ U(sigma_range), θ ~ U(0, π).

    Returns:
        ``(size, size)`` float32 summing to 1.
    """
    sigma_x, sigma_y = _uniform(generator, 2, *sigma_range).tolist()
    theta = float(_uniform(generator, 1, 0.0, math.pi))
    return anisotropic_gaussian_kernel(sigma_x, sigma_y, theta, size=size)


def sample_degradation(
    batch: int,
    generator: torch.Generator,
    settings: DegradationSettings = DegradationSettings(),
) -> DegradationParams:
    """Draw one degradation per image: σx, σy ~ U(sigma_range), θ ~ U(0, π), noise σ ~ U(0, max).

    With ``settings.isotropic`` (validation), σy = σx and θ = 0.
    """
    sigma_x = _uniform(generator, batch, *settings.sigma_range)
    if settings.isotropic:
        sigma_y = sigma_x.clone()
        theta = torch.zeros(batch, dtype=torch.float64)
    else:
        sigma_y = _uniform(generator, batch, *settings.sigma_range)
        theta = _uniform(generator, batch, 0.0, math.pi)
    noise_sigma = _uniform(generator, batch, 0.0, settings.noise_max)
    return DegradationParams(
        sigma_x=sigma_x.float(),
        sigma_y=sigma_y.float(),
        theta=theta.float(),
        noise_sigma=noise_sigma.float(),
        kernel_size=settings.kernel_size,
        scale=settings.scale,
    )


# --- the degradation chain ------------------------------------------------------------------


def downsample_bicubic(x: Tensor, scale: int = 4) -> Tensor:
    """Antialiased bicubic downsampling ``(B, C, H, W)`` → ``(B, C, H/scale, W/scale)``.

    ``H`` and ``W`` must be multiples of ``scale``.
    """
    height, width = x.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"image size {height}×{width} is not a multiple of {scale}")
    return F.interpolate(
        x,
        size=(height // scale, width // scale),
        mode="bicubic",
        antialias=True,
        align_corners=False,
    )


def add_noise(x: Tensor, sigma: Tensor | float, generator: torch.Generator) -> Tensor:
    """Add white Gaussian noise of standard deviation ``sigma`` (reflectance units).

    Args:
        x: ``(B, C, H, W)`` float.
        sigma: a float, or ``(B,)`` one level per image.
        generator: source of the noise (on ``x``'s device).

    Returns:
        ``(B, C, H, W)``, not clipped (real inputs carry noise around 0 too).
    """
    sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma_t.ndim == 1:
        sigma_t = sigma_t[:, None, None, None]
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + sigma_t * noise


def degrade(hr: Tensor, params: DegradationParams, generator: torch.Generator) -> Tensor:
    """Blur → ×scale antialiased bicubic → noise, image ``i`` with ``params``' entry ``i``.

    Args:
        hr: ``(B, C, H, W)`` float reflectance, ``H`` and ``W`` multiples of ``params.scale``.
        params: ``B`` degradations (from :func:`sample_degradation`); pass the same object for
            the second crop of the same images to make a MoCo positive pair.
        generator: source of the noise realisation, on ``hr``'s device.

    Returns:
        ``(B, C, H/scale, W/scale)`` float reflectance (not clipped).
    """
    if len(params) != hr.shape[0]:
        raise ValueError(f"{len(params)} degradations for a batch of {hr.shape[0]} images")
    blurred = blur(hr, params.kernels().to(hr.device))
    low = downsample_bicubic(blurred, params.scale)
    return add_noise(low, params.noise_sigma.to(hr.device), generator)
