"""Stand-in models, small random-weight models and readers shared by the pipeline tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from difffusr_cli.bands import BAND_NAMES, GROUP_RATIO, GROUPS, SCALE, indices
from difffusr_cli.fusion_baselines import bilinear_fuse, gram_schmidt_fuse
from difffusr_cli.superres import ModelInfo, Models


class StandInSR:
    """A deterministic ×4 "super-resolver": nearest upsampling, a pointwise curve, plus
    ``noise_amp`` × the sampler noise (so seeding is visible). Records every batch it sees."""

    def __init__(self, noise_amp: float = 0.0) -> None:
        self.noise_amp = noise_amp
        self.batches: list[torch.Tensor] = []

    def super_resolve(
        self, lr: torch.Tensor, steps: int = 20, *, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.batches.append(lr.detach().clone())
        up = F.interpolate(lr, scale_factor=SCALE, mode="nearest")
        out = up + 0.25 * up * up
        if self.noise_amp and noise is not None:
            out = out + self.noise_amp * noise
        return out


class StandInFusion:
    """A fusion step with a known, local receptive field: every band bilinearly upsampled, plus
    a 5×5 box-filtered pan (zero padded) scaled per band. Reaches 1 + 6 10 m pixels."""

    halo = 1 + GROUP_RATIO["60m"]

    def __init__(self) -> None:
        self.calls = 0

    def __call__(
        self, rgb_sr: torch.Tensor, groups: Mapping[str, torch.Tensor], valid: torch.Tensor
    ) -> torch.Tensor:
        self.calls += 1
        size = tuple(rgb_sr.shape[-2:])
        out = rgb_sr.new_zeros((rgb_sr.shape[0], 12, *size))
        for group, data in groups.items():
            out[:, indices(GROUPS[group])] = F.interpolate(
                data, size=size, mode="bilinear", align_corners=False
            )
        pan = F.avg_pool2d(
            rgb_sr.mean(dim=1, keepdim=True), 5, stride=1, padding=2, count_include_pad=True
        )
        return out + 0.1 * pan * torch.linspace(0.5, 1.5, 12, device=rgb_sr.device).view(
            1, 12, 1, 1
        )


def stand_in_models(noise_amp: float = 0.0, method: str = "net") -> Models:
    """Models whose pixels can be predicted: :class:`StandInSR` and, for ``method="net"``,
    :class:`StandInFusion` (the real Gram–Schmidt / bilinear fusions otherwise)."""
    if method != "net":
        baseline = gram_schmidt_fuse if method == "gs" else bilinear_fuse
        return Models(
            StandInSR(noise_amp),
            method,
            baseline,
            GROUP_RATIO["60m"],
            4,
            ModelInfo("stand-in", "0" * 64),
        )  # type: ignore[arg-type]
    return Models(
        rgb=StandInSR(noise_amp),
        method="net",
        fuse=StandInFusion(),
        fusion_halo=StandInFusion.halo,
        patch_multiple=4,
        rgb_info=ModelInfo("stand-in", "0" * 64),
        fusion_info=ModelInfo("stand-in-fusion", "1" * 64),
    )


def write_random_models(folder: Path) -> tuple[Path, Path]:
    """A small random-weight RGB diffusion model (``SRConfig.small()``) and a reduced RRDB fusion
    model, as bare safetensors in the official key layout; returns their paths."""
    from difffusr_cli.models.config import FusionConfig, SRConfig
    from difffusr_cli.models.fusion import FusionNetwork
    from difffusr_cli.models.sr import DiffusionSR

    rgb, fusion = folder / "sr_random.safetensors", folder / "fusion_random.safetensors"
    if not rgb.exists():
        torch.manual_seed(0)
        sr = DiffusionSR(SRConfig.small())
        save_file({k: v.contiguous() for k, v in sr.state_dict().items()}, str(rgb))
        net = FusionNetwork(FusionConfig("rrdb", nf=8, nb=1, gc=4))
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(fusion))
    return rgb, fusion


def read_product(path: Path) -> tuple[np.ndarray, dict]:
    """Pixels ``(12, H, W)`` and the profile + tags of a written product."""
    with rasterio.open(path) as ds:
        assert ds.count == len(BAND_NAMES)
        return ds.read(), {**ds.profile, "tags": ds.tags(), "descriptions": ds.descriptions}
