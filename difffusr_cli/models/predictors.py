"""Inference wrappers that keep every convention inside: reflectance in, reflectance out.

- :class:`RGBSuperResolver` turns ``(B, 3, h, w)`` R, G, B reflectance into ``(B, 3, 4h, 4w)``
  reflectance with the diffusion model (scaling to [−1, 1], EMA weights, the stored schedule,
  the official 20-step DDIM sampler).
- :class:`FusionPredictor` turns the SR RGB and the native-resolution band groups into the
  12-band 2.5 m stack in product order (z-scores, band picking, upsampling, assembly).

Pure torch: no files. Both run in eval mode under ``torch.no_grad`` on whatever device their
network is on; inputs are moved there and results come back on the device of the (first) input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from difffusr_cli import bands
from difffusr_cli.bands import GroupName
from difffusr_cli.diffusion import Schedule, ddim_sample, ddim_sample_views
from difffusr_cli.errors import InputError
from difffusr_cli.models.config import FusionConfig, SRConfig
from difffusr_cli.models.fusion import BRANCH_BANDS, OUTPUT_RATIO, FusionNetwork
from difffusr_cli.models.sr import DiffusionSR

_GROUPS: tuple[GroupName, ...] = ("10m", "20m", "60m")


@dataclass(frozen=True)
class RowResult:
    """A row of patches super-resolved jointly (:meth:`RGBSuperResolver.super_resolve_row`).

    Attributes:
        canvas: ``(3, H, W)`` float32 reflectance of the row's canvas (not clamped; columns no
            patch covers are meaningless).
        patches_x0: ``(V, 3, H, w)`` float32 reflectance of each patch's own x0 prediction at the
            last step, before blending (clamped to [0, 1]).
    """

    canvas: Tensor
    patches_x0: Tensor


class RGBSuperResolver:
    """×4 diffusion super-resolution of R, G, B reflectance.

    Args:
        model: a :class:`DiffusionSR` with loaded weights (put in eval mode here).
    """

    def __init__(self, model: DiffusionSR) -> None:
        self.model = model.eval()
        self._schedule: Schedule | None = None

    @property
    def config(self) -> SRConfig:
        """The architecture configuration."""
        return self.model.config

    @property
    def device(self) -> torch.device:
        """Device the network runs on."""
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> RGBSuperResolver:
        """Move the network to ``device``; returns ``self``."""
        self.model.to(device)
        self._schedule = None
        return self

    def _stored_schedule(self) -> Schedule:
        if self._schedule is None:
            # the float32 tables stored with the weights, never recomputed (see diffusion.py)
            self._schedule = Schedule.from_module(self.model.diffusion)
        return self._schedule

    @torch.no_grad()
    def super_resolve(
        self,
        lr: Tensor,
        steps: int = 20,
        seed: int | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
    ) -> Tensor:
        """Super-resolve a batch of LR patches.

        Args:
            lr: ``(B, 3, h, w)`` float reflectance, channels R, G, B (B04, B03, B02), in [0, 1].
            steps: DDIM network calls (official: 20; at least 2).
            seed: draw the initial noise from ``torch.Generator().manual_seed(seed)`` on the CPU,
                so a seed gives the same result on every device.
            noise: the initial noise itself, ``(B, 3, 4h, 4w)`` standard normal in the model's
                [−1, 1] space.
            generator: draw the initial noise (and any η noise) from this generator.
            eta: DDIM η (official: 0, deterministic given the noise).

        At most one of ``seed``, ``noise`` and ``generator`` may be given; with none, the noise
        comes from torch's global RNG.

        Returns:
            ``(B, 3, 4h, 4w)`` float32 reflectance (sampler output ·0.5 + 0.5, not clamped), on
            ``lr``'s device.

        Raises:
            InputError: bad shapes, or more than one noise source.
        """
        _check_image(lr, "lr", channels=3)
        if sum(x is not None for x in (seed, noise, generator)) > 1:
            raise InputError("give at most one of seed, noise and generator")
        n_timestep = self.config.diffusion.n_timestep
        if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= n_timestep:
            raise InputError(f"steps must be an integer from 2 to {n_timestep}, got {steps!r}")
        if not eta >= 0:
            raise InputError(f"eta must be >= 0, got {eta!r}")
        device = self.device
        b, _, h, w = lr.shape
        shape = (b, 3, bands.SCALE * h, bands.SCALE * w)
        eta_generator = generator
        if noise is not None:
            _check_image(noise, "noise", channels=3)
            if tuple(noise.shape) != shape:
                raise InputError(
                    f"noise must have shape {shape} for lr of shape {tuple(lr.shape)}, "
                    f"got {tuple(noise.shape)}"
                )
        elif seed is not None:
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)))
            eta_generator = torch.Generator(device=device).manual_seed(int(seed))
        elif generator is not None:
            noise = torch.randn(shape, generator=generator, device=generator.device)
        else:
            noise = torch.randn(shape)
        x_lr = (lr.to(device=device, dtype=torch.float32) - 0.5) / 0.5
        ctx, fea = self.model.condition(x_lr)
        net = self.model.denoiser(ema=True)
        sample = ddim_sample(
            lambda x, noise_level: net(x, noise_level, ctx, fea),
            self._stored_schedule(),
            noise.to(device=device, dtype=torch.float32),
            steps=steps,
            eta=eta,
            generator=eta_generator,
        )
        return (sample * 0.5 + 0.5).to(lr.device)

    @torch.no_grad()
    def super_resolve_row(
        self,
        lr: Tensor,
        lefts: Sequence[int],
        noise: Tensor,
        weights: Tensor,
        steps: int = 20,
        batch_size: int = 4,
        known: Tensor | None = None,
        known_mask: Tensor | None = None,
    ) -> RowResult:
        """Super-resolve a row of overlapping LR patches jointly, on one shared canvas.

        Every patch is a view of the canvas at output column ``lefts[i]`` (row 0); all views take
        their DDIM steps together and continue from the blended x0 at each step
        (:func:`~difffusr_cli.diffusion.ddim_sample_views`), so overlapping patches agree. The
        conditioning (RRDB context, degradation feature) of each patch is computed once, in
        batches of ``batch_size``, and reused at every step.

        Args:
            lr: ``(V, 3, h, w)`` float reflectance of the patches, channels R, G, B, in [0, 1].
            lefts: the output column of each patch's left edge on the canvas (multiples of 4).
            noise: ``(3, 4h, W)`` standard normal starting canvas (model space), ``W`` at least
                ``max(lefts) + 4w``.
            weights: ``(4h, 4w)`` blend weights of a patch, > 0 (e.g.
                :func:`difffusr_cli.tiling.blend_weights`).
            steps: DDIM timesteps (at least 2): ``steps − 1`` network calls per patch (the plain
                sampler's last call, an identity on the sample, is not made).
            batch_size: patches per network call.
            known: ``(3, 4h, W)`` float reflectance already decided (the finished rows of the
                patch row above), read where ``known_mask``; the canvas ends equal to it there,
                bit for bit.
            known_mask: ``(4h, W)`` bool.

        Returns:
            The canvas and the patches' last x0 predictions, in reflectance (:class:`RowResult`),
            on ``lr``'s device.

        Raises:
            InputError: bad shapes.
        """
        _check_image(lr, "lr", channels=3)
        n_timestep = self.config.diffusion.n_timestep
        if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= n_timestep:
            raise InputError(f"steps must be an integer from 2 to {n_timestep}, got {steps!r}")
        v, _, h, w = lr.shape
        size = (bands.SCALE * h, bands.SCALE * w)
        if len(lefts) != v:
            raise InputError(f"{v} patches but {len(lefts)} left columns")
        if noise.dim() != 3 or noise.shape[0] != 3 or noise.shape[1] != size[0]:
            raise InputError(f"noise must be (3, {size[0]}, W), got {tuple(noise.shape)}")
        if max(lefts) + size[1] > noise.shape[2] or min(lefts) < 0:
            raise InputError(
                f"patches at columns {list(lefts)} leave a canvas {noise.shape[2]} wide"
            )
        device = self.device
        x_lr = (lr.to(device=device, dtype=torch.float32) - 0.5) / 0.5
        conditions = [
            self.model.condition(x_lr[i : i + batch_size]) for i in range(0, v, batch_size)
        ]
        ctx = torch.cat([c for c, _ in conditions])
        fea = torch.cat([f for _, f in conditions])
        net = self.model.denoiser(ema=True)

        def denoise(x: Tensor, noise_level: Tensor, first: int) -> Tensor:
            stop = first + x.shape[0]
            return net(x, noise_level, ctx[first:stop], fea[first:stop])

        known_model = None
        if known is not None:
            known_model = (known.to(device=device, dtype=torch.float32) - 0.5) / 0.5
        if tuple(weights.shape) != size:
            raise InputError(f"weights must have shape {size}, got {tuple(weights.shape)}")
        result = ddim_sample_views(
            denoise,
            self._stored_schedule(),
            noise.to(device=device, dtype=torch.float32),
            [(0, int(left)) for left in lefts],
            weights,
            steps=steps,
            batch_size=batch_size,
            known=known_model,
            known_mask=None if known_mask is None else known_mask.to(device),
        )
        canvas = (result.sample * 0.5 + 0.5).to(lr.device)
        if known is not None and known_mask is not None:
            # The known pixels come back as given, bit for bit (no round trip through [−1, 1]).
            mask = known_mask.to(lr.device)
            canvas = torch.where(mask, known.to(device=lr.device, dtype=torch.float32), canvas)
        return RowResult(canvas=canvas, patches_x0=(result.views_x0 * 0.5 + 0.5).to(lr.device))


class FusionPredictor:
    """Fusion of every band group to the 2.5 m grid, guided by the SR RGB.

    Args:
        net: a :class:`FusionNetwork` with loaded weights (put in eval mode here).
        provenance: what the weights record about their training (the ``source`` of their
            JSON: ``trained_on`` and ``validated_on`` scene ids, step, scores); empty if unknown.
    """

    def __init__(self, net: FusionNetwork, provenance: Mapping[str, Any] | None = None) -> None:
        self.net = net.eval()
        self.provenance: Mapping[str, Any] = dict(provenance or {})

    @property
    def config(self) -> FusionConfig:
        """The architecture configuration."""
        return self.net.config

    @property
    def device(self) -> torch.device:
        """Device the networks run on."""
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> FusionPredictor:
        """Move the networks to ``device``; returns ``self``."""
        self.net.to(device)
        return self

    @property
    def receptive_halo(self) -> int:
        """How far (10 m pixels) an output pixel's inputs reach: the halo a block needs.

        RRDB: the branches' local receptive radius (2.5 m pixels, rounded up to 10 m pixels)
        plus one 60 m pixel (6 × 10 m) for the bilinear upsampling of the coarsest group in front
        of them; their channel attention also pools globally over the block, which no halo
        bounds, so blocks should be blended. MTF: the branches' radius already includes the
        upsampling (:attr:`MTFNetFusion.receptive_radius`, exact for blocks that start on 60 m
        pixel boundaries, which the MTF area resampling needs anyway); nothing is global, so
        blocks with this halo agree wherever they overlap.
        """
        radius = math.ceil(self.net.receptive_radius / bands.SCALE)
        if self.config.arch == "mtf":
            return radius
        return radius + bands.GROUP_RATIO["60m"]

    @torch.no_grad()
    def __call__(self, rgb_sr: Tensor, groups: Mapping[GroupName, Tensor]) -> Tensor:
        """Fuse one batch.

        Args:
            rgb_sr: ``(B, 3, 4h, 4w)`` SR reflectance, channels R, G, B.
            groups: reflectance on each group's native grid, channels in ``bands.GROUPS`` order:
                ``"10m"`` ``(B, 4, h, w)`` B02, B03, B04, B08; ``"20m"`` ``(B, 6, ⌈h/2⌉, ⌈w/2⌉)``
                B05, B06, B07, B8A, B11, B12; ``"60m"`` ``(B, 2, ⌈h/6⌉, ⌈w/6⌉)`` B01, B09. All
                share the block's top-left corner (blocks start on 60 m pixel boundaries); the
                native pixels that overhang the block's bottom/right are cropped after upsampling.

        Returns:
            ``(B, 12, 4h, 4w)`` float32 reflectance in product order (B01 … B12), on
            ``rgb_sr``'s device.

        Raises:
            InputError: a group is missing or a shape does not fit the others.
        """
        _check_image(rgb_sr, "rgb_sr", channels=3)
        b, _, height, width = rgb_sr.shape
        device = self.device
        # Precision policy: only the networks run under an ambient autocast (bf16 on CUDA);
        # normalisation, upsampling and de-normalisation stay in fp32 (bf16 keeps 8 bits of
        # mantissa: a de-normalised band would collapse to a few hundred levels).
        with torch.autocast(device.type, enabled=False):
            ms = self._network_inputs(rgb_sr, groups, device)
            guidance = _zscore(rgb_sr.to(device=device, dtype=torch.float32), bands.RGB)
        outputs = self.net(guidance, ms)
        with torch.autocast(device.type, enabled=False):
            product = torch.cat(
                [outputs[g][:, i : i + 1].float() for g, i in _PRODUCT_SOURCES], dim=1
            )
            mean, std = bands.norm_stats(bands.BAND_NAMES, product.device, product.dtype)
            return (product * std + mean).to(rgb_sr.device)

    def _network_inputs(
        self, rgb_sr: Tensor, groups: Mapping[GroupName, Tensor], device: torch.device
    ) -> dict[GroupName, Tensor]:
        """Each branch's multispectral input: z-scored bands upsampled to ``rgb_sr``'s grid.

        Args:
            rgb_sr: the ``(B, 3, H, W)`` guidance of :meth:`__call__` (only its shape is used).
            groups: the native-grid groups of :meth:`__call__`.
            device: the networks' device.

        Returns:
            Per branch ``(B, C, H, W)`` float32, in the branch's channel order.
        """
        b, _, height, width = rgb_sr.shape
        upsampled: dict[GroupName, Tensor] = {}
        for group in _GROUPS:
            if group not in groups:
                raise InputError(f"fusion input lacks the {group} group")
            data = groups[group]
            names = bands.GROUPS[group]
            _check_image(data, f"{group} group", channels=len(names))
            ratio = OUTPUT_RATIO[group]
            expected = (b, len(names), -(-height // ratio), -(-width // ratio))
            if tuple(data.shape) != expected:
                raise InputError(
                    f"{group} group has shape {tuple(data.shape)}; with rgb_sr of shape "
                    f"{tuple(rgb_sr.shape)} it must be {expected} "
                    "(the native pixels covering the block)"
                )
            # z-score in group order, then pick the branch's channel order
            z = _zscore(data.to(device=device, dtype=torch.float32), names)
            z = z[:, [names.index(n) for n in BRANCH_BANDS[group]]]
            up = F.interpolate(z, scale_factor=ratio, mode="bilinear", align_corners=False)
            # a coarse group covering whole native pixels overhangs the block bottom/right
            upsampled[group] = up[:, :, :height, :width]
        return {
            group: torch.cat([upsampled[g] for g in self.net.input_groups(group)], dim=1)
            for group in _GROUPS
        }


def _product_sources() -> tuple[tuple[GroupName, int], ...]:
    """For each product band, the branch and channel it comes from."""
    sources = []
    for name in bands.BAND_NAMES:
        group = bands.band(name).group
        sources.append((group, BRANCH_BANDS[group].index(name)))
    return tuple(sources)


_PRODUCT_SOURCES = _product_sources()


def _zscore(x: Tensor, names: tuple[str, ...]) -> Tensor:
    mean, std = bands.norm_stats(names, x.device, x.dtype)
    return (x - mean) / std


def _check_image(x: object, what: str, channels: int) -> None:
    if not isinstance(x, Tensor):
        raise InputError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != channels:
        raise InputError(f"{what} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{what} must be a floating-point tensor, got {x.dtype}")
    if min(x.shape) == 0:
        raise InputError(f"{what} is empty: shape {tuple(x.shape)}")
