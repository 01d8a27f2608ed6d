"""Degradations and resampling shared by training, evaluation and the pipeline.

- :mod:`~difffusr_cli.degrade.kernels`: Gaussian blur kernels and :func:`blur`.
- :mod:`~difffusr_cli.degrade.blind`: the RGB blind-SR degradation (SPEC §2) and harmonisation.
- :mod:`~difffusr_cli.degrade.wald`: Wald's protocol (MTF-matched blur + box average).
- :mod:`~difffusr_cli.degrade.resample`: bilinear resampling on pixel centres.

This package imports nothing from ``train``, ``evaluate`` or the pipeline.
"""

from difffusr_cli.degrade.blind import (
    DEFAULT_GAMMA,
    GAMMA_COV,
    GAMMA_MEAN,
    DegradationParams,
    DegradationSettings,
    add_noise,
    degrade,
    downsample_bicubic,
    harmonize,
    match_histograms,
    random_kernel,
    sample_degradation,
    sample_gamma,
)
from difffusr_cli.degrade.kernels import anisotropic_gaussian_kernel, blur, isotropic_kernel
from difffusr_cli.degrade.resample import upsample_bilinear, upsample_to
from difffusr_cli.degrade.wald import WALD_NYQUIST_GAIN, wald_degrade, wald_sigma

__all__ = [
    "DEFAULT_GAMMA",
    "GAMMA_COV",
    "GAMMA_MEAN",
    "WALD_NYQUIST_GAIN",
    "DegradationParams",
    "DegradationSettings",
    "add_noise",
    "anisotropic_gaussian_kernel",
    "blur",
    "degrade",
    "downsample_bicubic",
    "harmonize",
    "isotropic_kernel",
    "match_histograms",
    "random_kernel",
    "sample_degradation",
    "sample_gamma",
    "upsample_bilinear",
    "upsample_to",
    "wald_degrade",
    "wald_sigma",
]
