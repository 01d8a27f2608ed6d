"""RGBSuperResolver behaviour on small random weights (no shared data needed)."""

from __future__ import annotations

import pytest
import torch

from difffusr_cli.errors import InputError
from difffusr_cli.models import DiffusionSR, RGBSuperResolver, SRConfig

STEPS = 3  # the sampler itself is pinned by test_models_sr/test_diffusion; keep these fast


@pytest.fixture(scope="module")
def resolver() -> RGBSuperResolver:
    torch.manual_seed(0)
    return RGBSuperResolver(DiffusionSR(SRConfig.small()))


@pytest.fixture(scope="module")
def lr() -> torch.Tensor:
    return torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_shapes_dtype_and_mode(resolver: RGBSuperResolver, lr: torch.Tensor) -> None:
    sr = resolver.super_resolve(lr, steps=STEPS, seed=0)
    assert sr.shape == (2, 3, 32, 32) and sr.dtype == torch.float32 and sr.device == lr.device
    assert not sr.requires_grad and not resolver.model.training
    assert resolver.config == SRConfig.small()
    assert resolver.to("cpu") is resolver and resolver.device == torch.device("cpu")


def test_seed_is_reproducible_and_matters(resolver: RGBSuperResolver, lr: torch.Tensor) -> None:
    a = resolver.super_resolve(lr, steps=STEPS, seed=7)
    b = resolver.super_resolve(lr, steps=STEPS, seed=7)
    c = resolver.super_resolve(lr, steps=STEPS, seed=8)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_seed_generator_and_noise_are_the_same_noise(
    resolver: RGBSuperResolver, lr: torch.Tensor
) -> None:
    # a seed means a CPU torch.Generator seeded with it, drawing (B, 3, 4h, 4w) standard normals
    by_seed = resolver.super_resolve(lr, steps=STEPS, seed=11)
    by_generator = resolver.super_resolve(
        lr, steps=STEPS, generator=torch.Generator().manual_seed(11)
    )
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    by_noise = resolver.super_resolve(lr, steps=STEPS, noise=noise)
    assert torch.equal(by_seed, by_generator) and torch.equal(by_seed, by_noise)


def test_batch_of_two_equals_two_batches_of_one(
    resolver: RGBSuperResolver, lr: torch.Tensor
) -> None:
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    both = resolver.super_resolve(lr, steps=STEPS, noise=noise)
    singles = torch.cat(
        [
            resolver.super_resolve(lr[i : i + 1], steps=STEPS, noise=noise[i : i + 1])
            for i in range(2)
        ]
    )
    assert (both - singles).abs().max() < 1e-5


def test_stochastic_sampling_is_seeded(resolver: RGBSuperResolver, lr: torch.Tensor) -> None:
    a = resolver.super_resolve(lr, steps=STEPS, seed=5, eta=1.0)
    b = resolver.super_resolve(lr, steps=STEPS, seed=5, eta=1.0)
    deterministic = resolver.super_resolve(lr, steps=STEPS, seed=5)
    assert torch.equal(a, b) and (a - deterministic).abs().max() > 1e-4


def test_input_scaling_is_inside(resolver: RGBSuperResolver, lr: torch.Tensor) -> None:
    # the model sees (lr - 0.5) / 0.5: shifting reflectance must change the conditioning
    model = resolver.model
    seen: list[torch.Tensor] = []
    hook = model.encoder.conv_first.register_forward_hook(
        lambda _m, inputs, _o: seen.append(inputs[0])
    )
    try:
        resolver.super_resolve(lr, steps=2, seed=0)
    finally:
        hook.remove()
    assert torch.allclose(seen[0], lr * 2 - 1, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": torch.rand(3, 8, 8)}, "lr must have shape"),
        ({"lr": torch.rand(1, 4, 8, 8)}, "lr must have shape"),
        ({"lr": torch.randint(0, 255, (1, 3, 8, 8))}, "floating-point"),
        ({"lr": [[0.5]]}, "torch.Tensor"),
        ({"seed": 1, "noise": torch.randn(1, 3, 32, 32)}, "at most one"),
        ({"noise": torch.randn(1, 3, 16, 16)}, "noise must have shape"),
        ({"steps": 1}, "steps must be"),
        ({"steps": 20.0}, "steps must be"),
        ({"eta": -1.0}, "eta must be"),
    ],
)
def test_bad_inputs_raise_input_error(
    resolver: RGBSuperResolver, kwargs: dict, message: str
) -> None:
    call = {"lr": torch.rand(1, 3, 8, 8), "steps": 2, **kwargs}
    with pytest.raises(InputError, match=message):
        resolver.super_resolve(**call)
