"""The DiffFuSR networks (torch only; they know nothing of files or the CLI).

- :mod:`.config`: architecture dataclasses (``SRConfig``, ``FusionConfig`` and parts).
- :mod:`.sr`: ``DiffusionSR``, the RGB diffusion model in the official state-dict layout, built
  from :mod:`.unet`, :mod:`.rrdb` and :mod:`.degradation`.
- :mod:`.fusion`: ``FusionNetwork``, the three per-group fusion nets (:mod:`.fusion_rrdb`,
  :mod:`.fusion_mtf`).
- :mod:`.infer`: recognise a state dict and recover its config from names and shapes.
- :mod:`.predictors`: reflectance-in/reflectance-out inference wrappers.
- :mod:`.bicubic`: ``BicubicUpsampler``, the built-in ``bicubic`` RGB model (no weights).

The schedule and samplers live in :mod:`difffusr_cli.diffusion`.
"""

from __future__ import annotations

from difffusr_cli.models.bicubic import BicubicUpsampler
from difffusr_cli.models.config import (
    DiffusionConfig,
    FusionConfig,
    MoCoConfig,
    RRDBConfig,
    SRConfig,
    UNetConfig,
)
from difffusr_cli.models.fusion import FusionNetwork
from difffusr_cli.models.infer import detect_kind, infer_fusion_config, infer_sr_config
from difffusr_cli.models.predictors import FusionPredictor, RGBSuperResolver
from difffusr_cli.models.sr import DiffusionSR

__all__ = [
    "BicubicUpsampler",
    "DiffusionConfig",
    "DiffusionSR",
    "FusionConfig",
    "FusionNetwork",
    "FusionPredictor",
    "MoCoConfig",
    "RGBSuperResolver",
    "RRDBConfig",
    "SRConfig",
    "UNetConfig",
    "detect_kind",
    "infer_fusion_config",
    "infer_sr_config",
]
