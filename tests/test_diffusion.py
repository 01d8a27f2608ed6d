"""Schedule and DDIM sampler properties, with toy denoisers (no network, no shared data)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from difffusr_cli.diffusion import Schedule, ddim_sample, ddim_step, ddim_timesteps

# the official buffer names and order (sr_full_keys.json, prefix "diffusion.")
OFFICIAL_TABLES = (
    "betas",
    "alphas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_alphas_cumprod_prev",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    return Schedule.cosine(1000)


def test_cosine_schedule_tables(schedule: Schedule) -> None:
    assert Schedule.names() == OFFICIAL_TABLES
    for name, table in schedule.as_dict().items():
        assert table.dtype == torch.float32 and table.shape == (1000,), name
    ac = schedule.alphas_cumprod.double()
    assert (ac[1:] < ac[:-1]).all() and ac[0] < 1 and ac[-1] > 0
    assert schedule.betas.max() <= 0.999 + 1e-7
    assert torch.allclose(schedule.sqrt_alphas_cumprod.double() ** 2, ac, rtol=1e-6)
    assert torch.equal(schedule.alphas_cumprod_prev[1:], schedule.alphas_cumprod[:-1])
    assert schedule.alphas_cumprod_prev[0] == 1


def test_cosine_schedule_equals_the_checkpoint_buffers(compat: Path, schedule: Schedule) -> None:
    stored = load_file(compat / "sr_small.safetensors")
    for name, table in schedule.as_dict().items():
        assert torch.equal(table, stored[f"diffusion.{name}"]), name  # float64 → float32, bitwise


def test_schedule_from_buffers_and_module(schedule: Schedule) -> None:
    tables = {f"{k}": v.clone() for k, v in schedule.as_dict().items()}
    again = Schedule.from_buffers({**tables, "unrelated": torch.zeros(3)})
    assert all(torch.equal(getattr(again, k), v) for k, v in tables.items())
    module = torch.nn.Module()
    for k, v in tables.items():
        module.register_buffer(k, v)
    assert torch.equal(Schedule.from_module(module).betas, schedule.betas)
    with pytest.raises(KeyError, match="posterior_mean_coef2"):
        Schedule.from_buffers({k: v for k, v in tables.items() if k != "posterior_mean_coef2"})
    with pytest.raises(ValueError, match="one length"):
        Schedule.from_buffers({**tables, "betas": torch.zeros(999)})


def test_official_timesteps() -> None:
    pairs = ddim_timesteps(20, 1000)
    assert [t for t, _ in pairs] == list(range(950, -1, -50))
    assert [p for _, p in pairs] == list(range(900, -1, -50)) + [0]


@pytest.mark.parametrize("steps", [2, 3, 7, 20, 50, 333, 1000])
def test_any_number_of_steps(steps: int) -> None:
    pairs = ddim_timesteps(steps, 1000)
    ts = [t for t, _ in pairs]
    assert len(pairs) == steps and ts[-1] == 0 and pairs[-1] == (0, 0)
    assert all(a > b for a, b in itertools.pairwise(ts))
    assert all(prev == nxt for (_, prev), (nxt, _) in itertools.pairwise(pairs))
    assert max(ts) < 1000


@pytest.mark.parametrize("steps", [0, 1, 1001])
def test_invalid_number_of_steps(steps: int) -> None:
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(steps, 1000)


def _oracle_start(schedule: Schedule, x0: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
    return schedule.sqrt_alphas_cumprod[t] * x0 + schedule.sqrt_one_minus_alphas_cumprod[t] * eps


@pytest.mark.parametrize("steps", [20, 7])
def test_deterministic_ddim_follows_the_noise_path_of_a_perfect_denoiser(
    schedule: Schedule, steps: int
) -> None:
    # if x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε and the denoiser returns x0, DDIM (η = 0) keeps ε and the
    # result is the same mixture at ᾱ_0 (the official last step is an identity, not x0)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    eps = torch.randn(2, 3, 8, 8, generator=gen)
    first_t = ddim_timesteps(steps)[0][0]
    out = ddim_sample(
        lambda x, nl: x0, schedule, _oracle_start(schedule, x0, eps, first_t), steps=steps
    )
    assert (out - _oracle_start(schedule, x0, eps, 0)).abs().max() < 1e-4
    assert (out - x0).abs().max() > 1e-3  # not the x0 prediction


def test_output_is_not_clamped_but_x0_predictions_are(schedule: Schedule) -> None:
    x0 = torch.ones(1, 3, 4, 4)
    eps = torch.full((1, 3, 4, 4), 3.0)
    noise = _oracle_start(schedule, x0, eps, 950)
    out = ddim_sample(lambda x, nl: x0, schedule, noise)
    assert out.min() > 1.0  # √ᾱ0 + 3·√(1−ᾱ0) ≈ 1.019: returned as is
    wild = ddim_sample(lambda x, nl: torch.full_like(x, 5.0), schedule, noise, steps=3)
    raw = ddim_sample(
        lambda x, nl: torch.full_like(x, 5.0), schedule, noise, steps=3, clamp_x0=False
    )
    assert wild.max() < 1.5 < raw.max()


def test_last_call_is_an_identity_update(schedule: Schedule) -> None:
    inputs: list[torch.Tensor] = []
    gen = torch.Generator().manual_seed(1)

    def denoise(x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        inputs.append(x)
        return torch.rand(x.shape, generator=gen) * 2 - 1  # arbitrary predictions

    out = ddim_sample(denoise, schedule, torch.randn(1, 3, 8, 8, generator=gen))
    assert len(inputs) == 20
    assert (out - inputs[-1]).abs().max() < 1e-3  # README: differs by rounding only (~5e-4)


def test_noise_level_is_the_batchwise_sqrt_alpha_bar(schedule: Schedule) -> None:
    levels: list[torch.Tensor] = []

    def denoise(x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        levels.append(noise_level.clone())
        return torch.zeros_like(x)

    ddim_sample(denoise, schedule, torch.randn(3, 3, 4, 4))
    for (t, _), level in zip(ddim_timesteps(20), levels, strict=True):
        assert level.shape == (3, 1) and (level == schedule.sqrt_alphas_cumprod[t]).all()


def _pixelwise_denoiser(x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
    # depends on each sample's own pixels and noise level only
    return torch.tanh(1.7 * x * noise_level.view(-1, 1, 1, 1) + 0.3 * x.roll(1, dims=-1))


@pytest.mark.parametrize("eta", [0.0, 0.8])
def test_batch_equals_single_samples(schedule: Schedule, eta: float) -> None:
    noise = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    if eta == 0:
        batch = ddim_sample(_pixelwise_denoiser, schedule, noise)
        singles = torch.cat(
            [ddim_sample(_pixelwise_denoiser, schedule, noise[i : i + 1]) for i in range(3)]
        )
        assert (batch - singles).abs().max() < 1e-6
    else:
        a = ddim_sample(
            _pixelwise_denoiser,
            schedule,
            noise,
            eta=eta,
            generator=torch.Generator().manual_seed(5),
        )
        b = ddim_sample(
            _pixelwise_denoiser,
            schedule,
            noise,
            eta=eta,
            generator=torch.Generator().manual_seed(5),
        )
        c = ddim_sample(
            _pixelwise_denoiser,
            schedule,
            noise,
            eta=eta,
            generator=torch.Generator().manual_seed(6),
        )
        deterministic = ddim_sample(_pixelwise_denoiser, schedule, noise)
        assert torch.equal(a, b)
        assert (a - c).abs().max() > 1e-3 and (a - deterministic).abs().max() > 1e-3


def test_stochastic_step_adds_sigma_noise_only_before_t0(schedule: Schedule) -> None:
    x = torch.randn(1, 3, 4, 4)
    x0 = torch.zeros_like(x)
    quiet = ddim_step(schedule, x, x0, 0, 0, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(quiet.prev_sample, ddim_step(schedule, x, x0, 0, 0).prev_sample)
    noisy = ddim_step(
        schedule, x, x0, 500, 450, eta=1.0, generator=torch.Generator().manual_seed(0)
    )
    plain = ddim_step(schedule, x, x0, 500, 450)
    assert (noisy.prev_sample - plain.prev_sample).abs().max() > 1e-3


def test_sampler_input_validation(schedule: Schedule) -> None:
    with pytest.raises(ValueError, match="noise"):
        ddim_sample(_pixelwise_denoiser, schedule, torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(_pixelwise_denoiser, schedule, torch.randn(1, 3, 8, 8), eta=-0.1)
