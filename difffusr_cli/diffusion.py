"""The diffusion schedule and the samplers, kept apart from the networks (diffusers style).

A :class:`Schedule` holds the 14 float32 tables of the official checkpoints under their official
names. Always sample with the tables a checkpoint carries (``Schedule.from_module`` /
``Schedule.from_buffers``): they were computed in float64 and rounded to float32, and the last
DDIM update divides by ``1 − ᾱ₀ ≈ 4e-5``, so recomputing them in float64 moves the output by
~5e-4. :meth:`Schedule.cosine` computes the same tables (float64, then rounded) for training from
scratch.

The sampler is the official deterministic DDIM loop (η = 0, 20 steps at t = 950, 900, …, 50, 0),
generalised to any number of steps, batch size and η. A denoiser is any callable
``denoise(x, noise_level) -> x0`` with ``x`` ``(B, C, H, W)`` in the model's [−1, 1] space and
``noise_level`` ``(B, 1)`` = √ᾱ_t; conditioning (context, degradation code) is bound into the
callable by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

#: Cosine schedule offset s (Nichol & Dhariwal).
COSINE_S = 0.008
#: Upper clamp of β in the cosine schedule.
MAX_BETA = 0.999

#: ``denoise(x (B,C,H,W), noise_level (B,1)) -> predicted x0 (B,C,H,W)``.
Denoiser = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Schedule:
    """The 14 schedule tables, each a float32 tensor of length ``n``, in the official order.

    Names follow the official ``diffusion.*`` buffers; ``alphas_cumprod`` is ᾱ_t.
    """

    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_alphas_cumprod_prev: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    log_one_minus_alphas_cumprod: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor

    @property
    def n(self) -> int:
        """Number of timesteps."""
        return int(self.betas.shape[0])

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The table names in the official buffer order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def cosine(cls, n: int = 1000) -> Schedule:
        """The cosine schedule (s = 0.008, β ≤ 0.999), computed in float64 and stored as float32.

        Use this only to train from scratch; for sampling use the tables stored with the weights.

        Args:
            n: number of timesteps (at least 2).

        Returns:
            The schedule, every table a float32 tensor of shape ``(n,)``.

        Raises:
            ValueError: ``n`` < 2.
        """
        if n < 2:
            raise ValueError(f"a schedule needs at least 2 timesteps, got {n}")
        f64 = torch.float64
        steps = torch.arange(n + 1, dtype=f64) / n + COSINE_S
        f = torch.cos(steps / (1 + COSINE_S) * math.pi / 2).pow(2)
        f = f / f[0]
        betas = (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)
        alphas = 1 - betas
        ac = torch.cumprod(alphas, 0)
        ac_prev = torch.cat((torch.ones(1, dtype=f64), ac[:-1]))
        post_var = betas * (1 - ac_prev) / (1 - ac)
        # log of the posterior variance with its t=0 entry (0) replaced by the t=1 entry
        post_log_var = torch.log(torch.cat((post_var[1:2], post_var[1:])))
        tables = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": torch.sqrt(ac),
            "sqrt_alphas_cumprod_prev": torch.sqrt(ac_prev),
            "sqrt_one_minus_alphas_cumprod": torch.sqrt(1 - ac),
            "log_one_minus_alphas_cumprod": torch.log(1 - ac),
            "sqrt_recip_alphas_cumprod": torch.rsqrt(ac),
            "sqrt_recipm1_alphas_cumprod": torch.sqrt(1 / ac - 1),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": post_log_var,
            "posterior_mean_coef1": betas * torch.sqrt(ac_prev) / (1 - ac),
            "posterior_mean_coef2": (1 - ac_prev) * torch.sqrt(alphas) / (1 - ac),
        }
        return cls(**{k: v.to(torch.float32) for k, v in tables.items()})

    @classmethod
    def from_buffers(cls, buffers: Mapping[str, Tensor]) -> Schedule:
        """Take the tables from a mapping of name → tensor (extra names are ignored).

        Args:
            buffers: name → tensor, e.g. a state dict with the ``diffusion.`` prefix removed.

        Returns:
            The schedule, sharing storage with ``buffers``.

        Raises:
            KeyError: a table is missing.
            ValueError: the tables differ in length or are not 1-D.
        """
        missing = [name for name in cls.names() if name not in buffers]
        if missing:
            raise KeyError(f"schedule tables missing: {', '.join(missing)}")
        tables = {name: buffers[name] for name in cls.names()}
        lengths = {tuple(t.shape) for t in tables.values()}
        if len(lengths) != 1 or len(next(iter(lengths))) != 1:
            raise ValueError(
                f"schedule tables must be 1-D and of one length, got shapes {sorted(lengths)}"
            )
        return cls(**tables)

    @classmethod
    def from_module(cls, module: nn.Module) -> Schedule:
        """Take the tables from a module's buffers (e.g. ``DiffusionSR.diffusion``)."""
        return cls.from_buffers(dict(module.named_buffers()))

    def as_dict(self) -> dict[str, Tensor]:
        """Name → table, in the official order."""
        return {name: getattr(self, name) for name in self.names()}

    def to(self, device: torch.device | str) -> Schedule:
        """The same tables on ``device`` (dtype unchanged)."""
        return Schedule(**{k: v.to(device) for k, v in self.as_dict().items()})


def ddim_timesteps(steps: int, n: int = 1000) -> tuple[tuple[int, int], ...]:
    """The ``(t, t_prev)`` pairs the DDIM loop visits, first call first.

    The official "skip" spacing: with ``skip = n // steps`` the calls are at
    ``t = (steps − 1)·skip, …, skip, 0`` and each goes to the next one, the last from 0 to 0.
    ``steps=20, n=1000`` gives t = 950, 900, …, 50, 0 with t_prev = 900, …, 0, 0. The last
    call (t = 0 → 0) is an identity update on x (official behaviour), so ``steps`` network calls
    make ``steps − 1`` denoising moves; at least 2 steps are required.

    Args:
        steps: network calls, from 2 to ``n``.
        n: timesteps of the schedule.

    Returns:
        ``steps`` pairs ``(t, t_prev)`` of ints.

    Raises:
        TypeError: ``steps`` is not an int.
        ValueError: ``steps`` is outside [2, n].
    """
    if not isinstance(steps, int) or isinstance(steps, bool):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if not 2 <= steps <= n:
        raise ValueError(f"steps must be between 2 and {n}, got {steps}")
    skip = n // steps
    ts = [i * skip for i in range(steps)][::-1]
    prev = ts[1:] + [0]
    return tuple(zip(ts, prev, strict=True))


@dataclass(frozen=True)
class DDIMStepOutput:
    """One DDIM update: ``prev_sample`` is x at t_prev, ``pred_x0`` the (clamped) x0 used."""

    prev_sample: Tensor
    pred_x0: Tensor


def ddim_step(
    schedule: Schedule,
    x: Tensor,
    pred_x0: Tensor,
    t: int,
    t_prev: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> DDIMStepOutput:
    """Move ``x`` (at step ``t``) to step ``t_prev`` given the x0 prediction, in the official order.

    ``eps = (√(1/ᾱ_t)·x − x0) / √(1/ᾱ_t − 1)``;
    ``σ = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev)``;
    ``x_prev = x0·√ᾱ_prev + √((1 − ᾱ_prev) − σ²)·eps + σ·z`` with ``z ~ N(0, I)`` drawn from
    ``generator`` only when σ-noise is used (η > 0 and t ≠ 0). Arithmetic is float32 on the
    float32 tables, like the official code.

    Args:
        schedule: float32 tables on ``x``'s device.
        x: ``(B, C, H, W)`` float32 sample at step ``t``, model space.
        pred_x0: ``(B, C, H, W)`` float32 x0 prediction for ``x`` (clamped by the caller).
        t: current timestep index.
        t_prev: target timestep index (``t_prev`` ≤ ``t``).
        eta: DDIM η (0: deterministic).
        generator: source of ``z`` when η > 0 (the global RNG when ``None``).

    Returns:
        The update; ``prev_sample`` is ``(B, C, H, W)`` float32.
    """
    a = schedule.alphas_cumprod[t]
    a_prev = schedule.alphas_cumprod[t_prev]
    eps = (
        schedule.sqrt_recip_alphas_cumprod[t] * x - pred_x0
    ) / schedule.sqrt_recipm1_alphas_cumprod[t]
    sigma = eta * torch.sqrt((1 - a_prev) / (1 - a)) * torch.sqrt(1 - a / a_prev)
    x_prev = pred_x0 * torch.sqrt(a_prev) + torch.sqrt((1 - a_prev) - sigma**2) * eps
    if eta > 0 and t != 0:
        # drawn where the generator lives, so a CPU generator also drives a GPU run
        z_device = generator.device if generator is not None else x.device
        z = torch.randn(x.shape, generator=generator, device=z_device, dtype=x.dtype).to(x.device)
        x_prev = x_prev + sigma * z
    return DDIMStepOutput(prev_sample=x_prev, pred_x0=pred_x0)


def ddim_sample(
    denoise: Denoiser,
    schedule: Schedule,
    noise: Tensor,
    steps: int = 20,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clamp_x0: bool = True,
) -> Tensor:
    """Run the DDIM loop from ``noise`` and return the final sample, unclamped.

    Args:
        denoise: ``denoise(x, noise_level) -> x0``; ``noise_level`` is ``(B, 1)`` √ᾱ_t.
        schedule: float32 tables, ideally those stored with the weights (moved to x's device here).
        noise: ``(B, C, H, W)`` float32 initial sample x_T ~ N(0, I) in [−1, 1] model space.
        steps: network calls (≥ 2), spaced as :func:`ddim_timesteps`.
        eta: 0 for the deterministic official sampler; > 0 adds σ-noise from ``generator``
            (the global RNG when ``None``).
        generator: source of the σ-noise when ``eta`` > 0 (unused at η = 0).
        clamp_x0: clamp each x0 prediction to [−1, 1] (official: yes).

    Returns:
        ``(B, C, H, W)`` float32 in model space. Not clamped: the official last update
        (t = 0 → 0) returns the state re-noised at ᾱ₀, which may leave [−1, 1] slightly.
    """
    if noise.dim() != 4:
        raise ValueError(f"noise must be (B, C, H, W), got shape {tuple(noise.shape)}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    schedule = schedule.to(noise.device)
    batch = noise.shape[0]
    x = noise
    for t, t_prev in ddim_timesteps(steps, schedule.n):
        # (B, 1) view of one table entry: batch > 1 works (upstream's scalar conversion does not)
        noise_level = schedule.sqrt_alphas_cumprod[t].reshape(1, 1).expand(batch, 1)
        pred_x0 = denoise(x, noise_level)
        if clamp_x0:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
        x = ddim_step(schedule, x, pred_x0, t, t_prev, eta=eta, generator=generator).prev_sample
    return x


#: ``denoise(x (B,C,h,w), noise_level (B,1), first_view) -> x0 (B,C,h,w)`` for the views
#: ``first_view, first_view + 1, …, first_view + B − 1`` (conditioning bound by the caller).
ViewDenoiser = Callable[[Tensor, Tensor, int], Tensor]


@dataclass(frozen=True)
class ViewSample:
    """The result of :func:`ddim_sample_views`.

    Attributes:
        sample: ``(C, H, W)`` float32 canvas at the end of the loop, model space (pixels no view
            covers are left as the starting noise moved by nothing: do not read them).
        views_x0: ``(V, C, h, w)`` float32 each view's own (clamped) x0 prediction at the last
            network call (the one the sample is made of), before blending: what measures how
            much overlapping views agree.
    """

    sample: Tensor
    views_x0: Tensor


def ddim_sample_views(
    denoise: ViewDenoiser,
    schedule: Schedule,
    noise: Tensor,
    offsets: Sequence[tuple[int, int]],
    weights: Tensor,
    steps: int = 20,
    batch_size: int = 4,
    known: Tensor | None = None,
    known_mask: Tensor | None = None,
    clamp_x0: bool = True,
) -> ViewSample:
    """Deterministic DDIM (η = 0) of overlapping views that step together on one canvas.

    MultiDiffusion-style joint sampling: at every step each view predicts x0 on its window of
    the canvas ``x_t`` (``batch_size`` views per ``denoise`` call, in view order), the clamped
    predictions are blended into one x0 canvas with ``weights`` (Σ w·x0 / Σ w), pixels of
    ``known_mask`` take their x0 from ``known`` instead, and ``x_{t_prev}`` is computed on the
    whole canvas (:func:`ddim_step` is elementwise). Views therefore agree where they overlap,
    and the canvas continues what is known (e.g. rows finished by the patch row above). With
    the starting noise shared by the known pixels (η = 0), fixing their x0 is the same as
    replacing ``x_t`` there by the known pixels noised with that noise at every step.

    The schedule's last call, ``t = 0 → 0`` (:func:`ddim_timesteps`), leaves the sample as it
    is whatever the network predicts (``x_prev = √ᾱ₀·x0 + √(1 − ᾱ₀)·ε = x``), so it is not
    made: the views take ``steps − 1`` network calls, the last from the smallest ``t > 0`` to 0,
    and ``views_x0`` are the predictions the sample is made of. The sample equals the plain
    loop's without that call bit for bit, and the plain sampler's within the float32 rounding
    of the identity (about 1e-4 in model space; see the tests).

    The blend adds the views in order whatever ``batch_size``, so the batch size changes only
    what the network's batched arithmetic changes.

    Args:
        denoise: ``denoise(x, noise_level, first_view) -> x0`` for a batch of consecutive views.
        schedule: float32 tables (moved to ``noise``'s device here).
        noise: ``(C, H, W)`` float32 starting canvas x_T ~ N(0, I), model space.
        offsets: ``(top, left)`` of each view's ``(h, w)`` window in the canvas (inside it).
        weights: ``(h, w)`` float32 blend weights of a view, > 0.
        steps: timesteps of the plain sampler (≥ 2), spaced as :func:`ddim_timesteps`; each view
            takes ``steps − 1`` network calls.
        batch_size: views per ``denoise`` call.
        known: ``(C, H, W)`` float32 known result (model space), read where ``known_mask``.
        known_mask: ``(H, W)`` bool, the pixels whose x0 is ``known`` at every step; they end
            equal to ``known`` exactly.
        clamp_x0: clamp each view's prediction to [−1, 1] (official: yes); ``known`` is clamped
            too when it stands in for x0.

    Returns:
        The canvas and the views' last predictions (:class:`ViewSample`).

    Raises:
        ValueError: bad shapes, a view outside the canvas, or no view.
    """
    if noise.dim() != 3:
        raise ValueError(f"noise must be (C, H, W), got shape {tuple(noise.shape)}")
    if not offsets:
        raise ValueError("ddim_sample_views needs at least one view")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    channels, height, width = noise.shape
    h, w = weights.shape
    for top, left in offsets:
        if not (0 <= top <= height - h and 0 <= left <= width - w):
            raise ValueError(
                f"view at ({top}, {left}) of size {h}×{w} leaves a {height}×{width} canvas"
            )
    if (known is None) != (known_mask is None):
        raise ValueError("give known and known_mask together")
    device = noise.device
    schedule = schedule.to(device)
    weights = weights.to(device=device, dtype=torch.float32)
    windows = [(slice(top, top + h), slice(left, left + w)) for top, left in offsets]
    den = torch.zeros((height, width), dtype=torch.float32, device=device)
    for rows, cols in windows:
        den[rows, cols] += weights
    covered = den > 0
    fixed: tuple[Tensor, Tensor, Tensor] | None = None  # (mask, known, known as x0)
    if known is not None and known_mask is not None:
        value = known.to(device=device, dtype=torch.float32)
        fixed = (known_mask.to(device), value, value.clamp(-1.0, 1.0) if clamp_x0 else value)
    x = noise.to(dtype=torch.float32).clone()
    views_x0 = torch.empty((len(windows), channels, h, w), dtype=torch.float32, device=device)
    # The plain loop's last pair (t = 0 → 0) is an identity on x whatever x0 is: not computed.
    timesteps = ddim_timesteps(steps, schedule.n)[:-1]
    for call, (t, t_prev) in enumerate(timesteps):
        num = torch.zeros_like(x)
        for first in range(0, len(windows), batch_size):
            batch = windows[first : first + batch_size]
            xb = torch.stack([x[:, rows, cols] for rows, cols in batch])
            level = schedule.sqrt_alphas_cumprod[t].reshape(1, 1).expand(len(batch), 1)
            pred = denoise(xb, level, first).float()
            if clamp_x0:
                pred = pred.clamp(-1.0, 1.0)
            for k, (rows, cols) in enumerate(batch):
                num[:, rows, cols] += pred[k] * weights
            if call == len(timesteps) - 1:
                views_x0[first : first + len(batch)] = pred
        x0 = torch.where(covered, num / torch.where(covered, den, 1.0), 0.0)
        if fixed is not None:
            x0 = torch.where(fixed[0], fixed[2], x0)
        x = ddim_step(schedule, x[None], x0[None], t, t_prev).prev_sample[0]
    if fixed is not None:
        x = torch.where(fixed[0], fixed[1], x)
    return ViewSample(sample=x, views_x0=views_x0)
