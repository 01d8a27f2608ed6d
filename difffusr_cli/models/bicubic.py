"""The built-in ``bicubic`` RGB model: plain bicubic ×4, no weights (a hallucination-free baseline).

One class serves ``superres --rgb-model bicubic`` (the baseline for users, and the stand-in that
measures the pipeline alone), ``eval opensr --rgb-model bicubic`` and the Python API.
"""

from __future__ import annotations

import torch

from difffusr_cli.bands import SCALE
from difffusr_cli.upsample import bicubic_up

#: The name that selects :class:`BicubicUpsampler` wherever an RGB model is named.
BICUBIC = "bicubic"
#: Built-in RGB models (no weights file): name → one line for ``weights list``.
BUILTIN_RGB_MODELS: dict[str, str] = {
    BICUBIC: "plain bicubic ×4 of B04, B03, B02: no weights, no hallucination (a baseline)"
}


def is_builtin_rgb(name: object) -> bool:
    """Whether ``name`` (a ``--rgb-model`` value) names a built-in model (case-insensitive)."""
    return isinstance(name, str) and name.lower() in BUILTIN_RGB_MODELS


class BicubicUpsampler:
    """Bicubic ×4 with the call signature of the diffusion super-resolver.

    Attributes:
        patch_multiple: any patch side works (a multiple of 4 in 2.5 m pixels, whole 10 m pixels).
        uses_noise: False: the pipeline draws no sampler noise for it.
    """

    patch_multiple = 1
    uses_noise = False

    def super_resolve(
        self,
        lr: torch.Tensor,
        steps: int = 20,
        seed: int | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
    ) -> torch.Tensor:
        """Upsample a batch ×4; the sampler arguments are accepted and ignored.

        Args:
            lr: ``(B, 3, h, w)`` float reflectance (B04, B03, B02).
            steps: ignored (no sampling happens), like the four below.
            seed: ignored.
            noise: ignored.
            generator: ignored.
            eta: ignored.

        Returns:
            ``(B, 3, 4h, 4w)`` float32 reflectance (not clamped: bicubic may overshoot slightly).
        """
        del steps, seed, noise, generator, eta
        # torch's bicubic to float rounding, as separable whole-row operations (3.5 × faster
        # on the CPU than F.interpolate).
        batch, channels, h, w = lr.shape
        up = bicubic_up(lr.float().reshape(batch * channels, h, w), SCALE)
        return up.view(batch, channels, h * SCALE, w * SCALE)
