"""Fusion at GPU speed: the MTF halo is the nets' true receptive field, batched tiles agree."""

from __future__ import annotations

import torch

from difffusr_cli import bands
from difffusr_cli.models.config import FusionConfig
from difffusr_cli.models.fusion import FusionNetwork
from difffusr_cli.models.predictors import FusionPredictor
from difffusr_cli.tiling import ALIGN, round_up


def _inputs(
    size: int, seed: int, scale: float = 0.4
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(1, 3, size, size, generator=g) * scale
    groups = {
        name: torch.rand(1, len(bands.GROUPS[name]), size // (4 * r), size // (4 * r), generator=g)
        * scale
        for name, r in bands.GROUP_RATIO.items()
    }
    return rgb, groups


def _outside(x: torch.Tensor, lo: int, hi: int, ratio: int, other: torch.Tensor) -> torch.Tensor:
    """``x`` with everything outside output pixels [lo, hi)² replaced by ``other``."""
    out = other.clone()
    a, b = lo // ratio, hi // ratio
    out[..., a:b, a:b] = x[..., a:b, a:b]
    return out


def test_official_mtf_halo_is_its_receptive_field() -> None:
    with torch.device("meta"):
        official = FusionPredictor(FusionNetwork(FusionConfig.large_mtf()))
    # the official depth (nb 3: the receptive field) at a fraction of its width (cheap on a CPU)
    torch.manual_seed(0)
    predictor = FusionPredictor(FusionNetwork(FusionConfig("mtf", 4, 3, 2)))
    assert predictor.receptive_halo == official.receptive_halo
    halo = round_up(bands.SCALE * predictor.receptive_halo, ALIGN)
    assert halo == 96  # was 144 with the additive estimate: (480+288)² → (480+192)² per tile
    size, core = 264, (120, 144)  # a one-cell core, aligned with the 60 m grid like every tile
    rgb, groups = _inputs(size, 1)
    rgb2, groups2 = _inputs(size, 2, scale=1000.0)  # loud, so any reach shows
    ratios = {"10m": 4, "20m": 8, "60m": 24}

    def core_of(reach: int) -> torch.Tensor:
        lo, hi = core[0] - reach, core[1] + reach
        mixed_rgb = _outside(rgb, lo, hi, 1, rgb2)
        mixed = {g: _outside(groups[g], lo, hi, ratios[g], groups2[g]) for g in groups}
        return predictor(mixed_rgb, mixed)[..., core[0] : core[1], core[0] : core[1]]

    reference = predictor(rgb, groups)[..., core[0] : core[1], core[0] : core[1]]
    # what lies beyond the halo never reaches the tile (exactly); what lies well within it does
    # (between 72 and 81 pixels the support is real but its weight is below float resolution)
    assert (core_of(halo) - reference).abs().max() == 0
    assert (core_of(halo - 2 * ALIGN) - reference).abs().max() > 1e-3  # the test can see reach
    # and a tile computed on its context alone (padding at the context's edge) is the same
    lo, hi = core[0] - halo, core[1] + halo
    crop = {g: groups[g][..., lo // r : hi // r, lo // r : hi // r] for g, r in ratios.items()}
    alone = predictor(rgb[..., lo:hi, lo:hi], crop)[..., halo:-halo, halo:-halo]
    assert (alone - reference).abs().max() < 1e-5
