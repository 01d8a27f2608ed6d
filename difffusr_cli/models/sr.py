"""The RGB diffusion super-resolution model, laid out like the official Lightning module.

:class:`DiffusionSR` holds, in the official order, ``encoder`` (RRDBNet), ``E`` (MoCo around the
degradation encoder), ``model`` and ``ema`` (two denoising U-Nets: trained and EMA weights) and
``diffusion`` (the 14 schedule tables as float32 buffers). Its ``state_dict()`` therefore has the
keys, order, shapes and dtypes of ``checkpoint["state_dict"]`` in the official ``.ckpt`` files and
loads them with ``strict=True``.

Everything here works in the networks' [−1, 1] space; scaling from reflectance lives in
:mod:`difffusr_cli.models.predictors`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from difffusr_cli.diffusion import Schedule
from difffusr_cli.models.config import SRConfig
from difffusr_cli.models.degradation import MoCo
from difffusr_cli.models.rrdb import RRDBNet
from difffusr_cli.models.unet import DenoisingUNet


class ScheduleBuffers(nn.Module):
    """The schedule tables as buffers under their official names (``diffusion.betas`` …).

    Args:
        schedule: the initial tables (copied).
    """

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        for name, table in schedule.as_dict().items():
            self.register_buffer(name, table.clone())

    def fill(self, schedule: Schedule) -> None:
        """Overwrite the tables in place (lengths must match).

        Args:
            schedule: the new tables, each the length of the stored ones.
        """
        with torch.no_grad():
            for name, table in schedule.as_dict().items():
                getattr(self, name).copy_(table)

    def schedule(self) -> Schedule:
        """The tables as a :class:`Schedule` (sharing storage)."""
        return Schedule.from_module(self)


class DiffusionSR(nn.Module):
    """Conditional diffusion SR ×4 of R, G, B (DiffFuSR stage 1).

    Children, in state-dict order: ``encoder``, ``E``, ``model``, ``ema``, ``diffusion``.
    The schedule buffers start as the cosine schedule; loading a checkpoint replaces them with
    its stored float32 tables, which sampling must use.

    Args:
        config: architecture of the encoder, MoCo, U-Nets and schedule.
    """

    def __init__(self, config: SRConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = RRDBNet(config.rrdb)
        self.E = MoCo(config.moco)
        self.model = DenoisingUNet(config.unet)
        self.ema = DenoisingUNet(config.unet)
        self.diffusion = ScheduleBuffers(Schedule.cosine(config.diffusion.n_timestep))

    def condition(self, lr: Tensor) -> tuple[Tensor, Tensor]:
        """Conditioning of the denoiser from the LR image.

        Args:
            lr: ``(B, 3, h, w)`` R, G, B in [−1, 1].

        Returns:
            ``(ctx, fea)``: RRDB features ``(B, 64, h, w)`` at LR size and the degradation
            feature ``(B, 256)`` (MoCo query encoder, pooled). Call in eval mode for inference.
        """
        return self.encoder.features(lr), self.E.embed(lr)

    def denoiser(self, ema: bool = True) -> DenoisingUNet:
        """The EMA U-Net (what inference uses) or, with ``ema=False``, the trained one.

        Args:
            ema: return the EMA weights (``ema``) rather than the trained ones (``model``).

        Returns:
            The :class:`DenoisingUNet`.
        """
        return self.ema if ema else self.model

    def schedule(self) -> Schedule:
        """The stored schedule tables."""
        return self.diffusion.schedule()

    def schedule_from_scratch(self) -> None:
        """Refill the schedule buffers with the cosine schedule (float64 → float32) for training."""
        self.diffusion.fill(Schedule.cosine(self.config.diffusion.n_timestep))
