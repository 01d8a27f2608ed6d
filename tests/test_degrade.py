"""RGB training degradations and the Wald protocol: kernels, ranges, shapes, seeds, gammas."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from difffusr_cli.degrade import (
    DEFAULT_GAMMA,
    GAMMA_COV,
    GAMMA_MEAN,
    DegradationSettings,
    add_noise,
    anisotropic_gaussian_kernel,
    blur,
    degrade,
    downsample_bicubic,
    harmonize,
    isotropic_kernel,
    random_kernel,
    sample_degradation,
    sample_gamma,
    upsample_bilinear,
    wald_degrade,
    wald_sigma,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _second_moments(kernel: torch.Tensor) -> torch.Tensor:
    """Empirical covariance ``[[var_col, cov], [cov, var_row]]`` of a centred kernel."""
    half = kernel.shape[-1] // 2
    coords = torch.arange(-half, half + 1, dtype=torch.float64)
    row, col = torch.meshgrid(coords, coords, indexing="ij")
    k = kernel.double()
    return torch.tensor(
        [
            [(k * col * col).sum(), (k * col * row).sum()],
            [(k * col * row).sum(), (k * row * row).sum()],
        ]
    )


def test_kernels_are_normalised_and_centred() -> None:
    gen = _gen(0)
    kernels = [random_kernel(gen) for _ in range(20)] + [
        isotropic_kernel(s) for s in (0.2, 1.0, 4.0)
    ]
    for kernel in kernels:
        assert kernel.shape == (21, 21) and kernel.dtype == torch.float32
        assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-6)
        assert bool((kernel >= 0).all())
        # Symmetric about the centre: a blur that does not shift the image.
        torch.testing.assert_close(kernel, kernel.flip(0, 1))


def test_kernel_covariance_matches_the_requested_ellipse() -> None:
    sx, sy, theta = 1.5, 0.7, 0.6
    measured = _second_moments(anisotropic_gaussian_kernel(sx, sy, theta))
    rot = torch.tensor(
        [[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]],
        dtype=torch.float64,
    )
    expected = rot @ torch.diag(torch.tensor([sx**2, sy**2], dtype=torch.float64)) @ rot.T
    torch.testing.assert_close(measured, expected, atol=1e-3, rtol=1e-3)


def test_quarter_turn_swaps_sigmas_and_half_turn_is_identity() -> None:
    for sx, sy, theta in [(0.5, 3.0, 0.0), (2.0, 1.0, 0.4), (3.5, 0.3, 2.0)]:
        base = anisotropic_gaussian_kernel(sx, sy, theta)
        torch.testing.assert_close(
            anisotropic_gaussian_kernel(sy, sx, theta + math.pi / 2), base, atol=1e-7, rtol=0
        )
        torch.testing.assert_close(
            anisotropic_gaussian_kernel(sx, sy, theta + math.pi), base, atol=1e-7, rtol=0
        )
    assert not torch.allclose(
        anisotropic_gaussian_kernel(3.0, 0.5, 0.0), anisotropic_gaussian_kernel(3.0, 0.5, 1.0)
    )


def test_sampled_parameters_cover_their_ranges() -> None:
    params = sample_degradation(2000, _gen(1))
    theta = params.theta
    assert float(theta.min()) >= 0.0 and float(theta.max()) < math.pi
    # The whole half-turn is used (the research code drew 0–1 degree): every eighth is hit.
    counts = torch.histc(theta, bins=8, min=0.0, max=math.pi)
    assert bool((counts > 2000 / 8 * 0.7).all())
    for sigma in (params.sigma_x, params.sigma_y):
        assert float(sigma.min()) >= 0.2 and float(sigma.max()) <= 4.0
        assert float(sigma.min()) < 0.3 and float(sigma.max()) > 3.9
    assert float(params.noise_sigma.min()) >= 0.0 and float(params.noise_sigma.max()) <= 25 / 255
    assert float(params.noise_sigma.max()) > 0.9 * 25 / 255
    assert not torch.equal(params.sigma_x, params.sigma_y)


def test_isotropic_settings_for_validation() -> None:
    params = sample_degradation(16, _gen(2), DegradationSettings(isotropic=True))
    torch.testing.assert_close(params.sigma_x, params.sigma_y)
    assert bool((params.theta == 0).all())
    for kernel in params.kernels():
        torch.testing.assert_close(kernel, kernel.T)


def test_degrade_shapes_ranges_and_shared_parameters() -> None:
    gen = _gen(3)
    hr_a, hr_b = torch.rand(4, 3, 64, 64, generator=gen), torch.rand(4, 3, 64, 64, generator=gen)
    params = sample_degradation(4, gen)
    lr_a = degrade(hr_a, params, _gen(10))
    lr_b = degrade(hr_b, params, _gen(11))
    assert lr_a.shape == lr_b.shape == (4, 3, 16, 16)
    assert lr_a.dtype == torch.float32 and bool(torch.isfinite(lr_a).all())
    # Blur and antialiased bicubic keep the mean; noise ≤ 25/255 keeps values near [0, 1].
    torch.testing.assert_close(
        lr_a.mean(dim=(1, 2, 3)), hr_a.mean(dim=(1, 2, 3)), atol=0.02, rtol=0
    )
    assert float(lr_a.min()) > -0.5 and float(lr_a.max()) < 1.5
    # Noise-free, the degradation is a deterministic function of the shared parameters:
    # the same image under the same parameters gives the same result, under others it differs.
    quiet = dataclasses.replace(params, noise_sigma=torch.zeros(4))
    torch.testing.assert_close(degrade(hr_a, quiet, _gen(0)), degrade(hr_a, quiet, _gen(99)))
    other = sample_degradation(4, _gen(4))
    other_quiet = dataclasses.replace(other, noise_sigma=torch.zeros(4))
    assert not torch.allclose(degrade(hr_a, quiet, _gen(0)), degrade(hr_a, other_quiet, _gen(0)))


def test_noise_level_matches_sigma() -> None:
    x = torch.zeros(2, 3, 64, 64)
    noisy = add_noise(x, torch.tensor([0.01, 0.08]), _gen(5))
    assert float(noisy[0].std()) == pytest.approx(0.01, rel=0.05)
    assert float(noisy[1].std()) == pytest.approx(0.08, rel=0.05)


def test_seeded_reproducibility() -> None:
    hr = torch.rand(2, 3, 32, 32, generator=_gen(6))

    def run(seed: int) -> torch.Tensor:
        gen = _gen(seed)
        return degrade(hr, sample_degradation(2, gen), gen)

    torch.testing.assert_close(run(7), run(7), atol=0, rtol=0)
    assert not torch.allclose(run(7), run(8))
    torch.testing.assert_close(random_kernel(_gen(9)), random_kernel(_gen(9)), atol=0, rtol=0)
    torch.testing.assert_close(sample_gamma(_gen(9), 4), sample_gamma(_gen(9), 4), atol=0, rtol=0)


def test_blur_uses_each_images_own_kernel() -> None:
    x = torch.zeros(2, 1, 21, 21)
    x[..., 10, 10] = 1.0  # an impulse: the blurred image is the kernel itself
    kernels = torch.stack([anisotropic_gaussian_kernel(2.0, 0.5, 0.3), isotropic_kernel(1.0)])
    torch.testing.assert_close(blur(x, kernels)[:, 0], kernels, atol=1e-6, rtol=0)


def test_downsample_bicubic_is_antialiased() -> None:
    # A pixel-level checkerboard is above the ×4 Nyquist: antialiasing averages it out.
    checker = (
        ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2).float().expand(1, 3, 64, 64)
    )
    low = downsample_bicubic(checker, 4)
    assert low.shape == (1, 3, 16, 16)
    torch.testing.assert_close(
        low[..., 2:-2, 2:-2], torch.full_like(low[..., 2:-2, 2:-2], 0.5), atol=1e-3, rtol=0
    )
    with pytest.raises(ValueError):
        downsample_bicubic(torch.rand(1, 3, 30, 32), 4)


def test_harmonisation_gammas_as_spec() -> None:
    assert tuple(round(g, 4) for g in DEFAULT_GAMMA) == (0.3521, 0.3361, 0.3535)
    assert DEFAULT_GAMMA == GAMMA_MEAN  # the median of a normal is its mean
    cov = torch.tensor(GAMMA_COV)
    torch.testing.assert_close(cov, cov.T)
    draws = sample_gamma(_gen(10), 20000).double()
    torch.testing.assert_close(
        draws.mean(dim=0), torch.tensor(GAMMA_MEAN, dtype=torch.float64), atol=3e-3, rtol=0
    )
    torch.testing.assert_close(draws.T.cov(), cov.double(), atol=5e-4, rtol=0)
    torch.testing.assert_close(
        draws.median(dim=0).values,
        torch.tensor(DEFAULT_GAMMA, dtype=torch.float64),
        atol=3e-3,
        rtol=0,
    )


def test_harmonize_applies_the_inverse_gamma_per_channel() -> None:
    x = torch.rand(2, 3, 8, 8, generator=_gen(11))
    out = harmonize(x)
    for c, gamma in enumerate(DEFAULT_GAMMA):
        torch.testing.assert_close(out[:, c], x[:, c] ** (1 / gamma))
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert bool((out <= x + 1e-7).all())  # γ < 1: darkens, as Sentinel-2 reflectance vs NAIP
    # Per-image gammas broadcast over the batch; out-of-range inputs are clipped, not NaN.
    per_image = harmonize(x, torch.tensor([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5]]))
    torch.testing.assert_close(per_image[0], x[0])
    torch.testing.assert_close(per_image[1], x[1] ** 2)
    assert bool(torch.isfinite(harmonize(x - 0.5)).all())


def test_wald_sigma_has_the_requested_nyquist_gain() -> None:
    for ratio in (2, 4, 6):
        sigma = wald_sigma(ratio)
        nyquist = 1 / (2 * ratio)
        assert math.exp(-2 * math.pi**2 * sigma**2 * nyquist**2) == pytest.approx(0.3)


@pytest.mark.parametrize("ratio", [1, 2, 6])
def test_wald_degrade_and_upsample_shapes_and_constants(ratio: int) -> None:
    x = torch.rand(2, 4, 48, 48, generator=_gen(12))
    low = wald_degrade(x, ratio)
    assert low.shape == (2, 4, 48 // ratio, 48 // ratio)
    assert upsample_bilinear(low, ratio).shape == x.shape
    constant = torch.full((1, 2, 24, 24), 0.37)
    torch.testing.assert_close(
        wald_degrade(constant, ratio), torch.full_like(wald_degrade(constant, ratio), 0.37)
    )
    torch.testing.assert_close(
        upsample_bilinear(torch.full((1, 1, 4, 4), 0.2), ratio),
        torch.full((1, 1, 4 * ratio, 4 * ratio), 0.2),
    )
    if ratio > 1:
        # The degradation removes detail: Wald-degraded-then-upsampled differs from the input,
        # and it is smoother than the plain box average.
        box = torch.nn.functional.avg_pool2d(x, ratio)
        assert float(low.std()) < float(box.std())
        with pytest.raises(ValueError):
            wald_degrade(torch.rand(1, 1, 25, 24), ratio)
