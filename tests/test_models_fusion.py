"""Fusion branches against the compat vectors, and the FusionPredictor's band bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from difffusr_cli import bands
from difffusr_cli.errors import InputError
from difffusr_cli.models import FusionConfig, FusionNetwork, FusionPredictor
from difffusr_cli.models.predictors import _PRODUCT_SOURCES

TOL_FUSION = 1e-5  # README: all fusion outputs
COMPAT_FILES = {
    "rrdb": ("fusion_rrdb_small.safetensors", FusionConfig("rrdb", nf=8, nb=1, gc=4)),
    "mtf": ("fusion_mtf.safetensors", FusionConfig.large_mtf()),
}


def _load(compat: Path, arch: str) -> tuple[FusionNetwork, dict[str, torch.Tensor]]:
    name, config = COMPAT_FILES[arch]
    stored = load_file(compat / name)
    weights = {k.removeprefix("weights/"): v for k, v in stored.items() if k.startswith("weights/")}
    vectors = {k.removeprefix("vec/"): v for k, v in stored.items() if k.startswith("vec/")}
    net = FusionNetwork(config)
    net.load_state_dict(weights, strict=True)
    return net.eval(), vectors


@pytest.mark.parametrize("arch", ["rrdb", "mtf"])
@pytest.mark.parametrize("group", ["10", "20", "60"])
def test_branch_reproduces_compat_output(compat: Path, arch: str, group: str) -> None:
    net, vec = _load(compat, arch)
    with torch.no_grad():
        out = net.branch(f"{group}m")(vec[f"b{group}_in_rgb"], vec[f"b{group}_in_ms"])
    assert (out - vec[f"b{group}_out"]).abs().max() < TOL_FUSION


@pytest.mark.parametrize("group", ["10", "20", "60"])
def test_mtf_intermediates(compat: Path, group: str) -> None:
    net, vec = _load(compat, "mtf")
    branch = net.branch(f"{group}m")
    with torch.no_grad():
        pan = branch.pan_mixer(vec[f"b{group}_in_rgb"])
        low_pass = torch.cat([branch.low_pass_pan(pan, i) for i in range(branch.ms_in_nc)], dim=1)
    assert (pan - vec[f"b{group}_pan"]).abs().max() < TOL_FUSION
    assert (low_pass - vec[f"b{group}_pan_lp"]).abs().max() < TOL_FUSION
    ms_up = F.interpolate(
        vec[f"b{group}_in_ms"], size=pan.shape[-2:], mode="bilinear", align_corners=False
    )
    assert (ms_up - vec[f"b{group}_ms_up"]).abs().max() < TOL_FUSION


def test_assembly_order_is_the_official_one() -> None:
    # README: [o60[0], o10[2], o10[1], o10[0], o20[0], o20[1], o20[2], o10[3], o20[3], o60[1],
    #          o20[4], o20[5]]
    official = [
        ("60m", 0),
        ("10m", 2),
        ("10m", 1),
        ("10m", 0),
        ("20m", 0),
        ("20m", 1),
        ("20m", 2),
        ("10m", 3),
        ("20m", 3),
        ("60m", 1),
        ("20m", 4),
        ("20m", 5),
    ]
    assert list(_PRODUCT_SOURCES) == official


@pytest.mark.parametrize("arch", ["rrdb", "mtf"])
def test_predictor_matches_compat_on_10m_bands(compat: Path, arch: str) -> None:
    # the 10 m branch sees only the 10 m group, which the compat path upsamples x4 as we do
    net, vec = _load(compat, arch)
    lr = vec["lr_raw"]  # (B, 12, 8, 6) product order
    b = lr.shape[0]
    groups = {
        "10m": lr[:, bands.indices(bands.GROUPS["10m"])],
        "20m": torch.rand(b, 6, 4, 3),
        "60m": torch.rand(b, 2, 2, 1),  # ceil(8 / 6) x ceil(6 / 6) native 60 m pixels
    }
    out = FusionPredictor(net)(vec["sr_rgb_raw"], groups)
    assert out.shape == (b, 12, 32, 24)
    idx = bands.indices(bands.GROUPS["10m"])
    assert (out[:, idx] - vec["fused_denorm"][:, idx]).abs().max() < TOL_FUSION


class _PassThrough(nn.Module):
    """Stub branch: returns its own group's (upsampled) input bands, the last channels of ``ms``."""

    def __init__(self, out: int) -> None:
        super().__init__()
        self.out = out
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the predictor a device

    def forward(self, rgb: torch.Tensor, ms: torch.Tensor) -> torch.Tensor:
        if ms.shape[-2:] != rgb.shape[-2:]:
            ms = F.interpolate(ms, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
        return ms[:, -self.out :]


@pytest.mark.parametrize("arch", ["rrdb", "mtf"])
def test_predictor_routes_every_band_to_its_product_slot(arch: str) -> None:
    # with pass-through branches, product band k must be the upsampled input band k
    net = FusionNetwork(
        FusionConfig("rrdb", 8, 1, 4) if arch == "rrdb" else FusionConfig("mtf", 8, 2, 4)
    )
    for group in ("10m", "20m", "60m"):
        setattr(net, f"rrdb_block_{group[:2]}_fusion", _PassThrough(len(bands.GROUPS[group])))
    h, w = 12, 18
    gen = torch.Generator().manual_seed(0)
    groups = {
        g: torch.rand(2, len(bands.GROUPS[g]), h // r, w // r, generator=gen)
        for g, r in bands.GROUP_RATIO.items()
    }
    out = FusionPredictor(net)(torch.rand(2, 3, 4 * h, 4 * w, generator=gen), groups)
    assert out.shape == (2, 12, 4 * h, 4 * w)
    for name in bands.BAND_NAMES:
        group = bands.band(name).group
        native = groups[group][:, bands.GROUPS[group].index(name)].unsqueeze(1)
        expected = F.interpolate(
            native, scale_factor=4 * bands.GROUP_RATIO[group], mode="bilinear", align_corners=False
        )
        assert (
            out[:, bands.band(name).index : bands.band(name).index + 1] - expected
        ).abs().max() < 1e-5, name


@pytest.mark.parametrize("arch", ["rrdb", "mtf"])
def test_predictor_batch_of_two_equals_two_batches_of_one(arch: str) -> None:
    torch.manual_seed(0)
    config = FusionConfig("rrdb", 8, 1, 4) if arch == "rrdb" else FusionConfig("mtf", 8, 2, 4)
    predictor = FusionPredictor(FusionNetwork(config))
    h, w = 6, 12
    rgb = torch.rand(2, 3, 4 * h, 4 * w)
    groups = {
        g: torch.rand(2, len(bands.GROUPS[g]), h // r, w // r) for g, r in bands.GROUP_RATIO.items()
    }
    both = predictor(rgb, groups)
    singles = torch.cat(
        [predictor(rgb[i : i + 1], {g: t[i : i + 1] for g, t in groups.items()}) for i in range(2)]
    )
    assert (both - singles).abs().max() < 1e-5
    assert torch.equal(both, predictor(rgb, groups))  # deterministic
    assert (both[0] - both[1]).abs().max() > 1e-3  # and the samples really differ


def test_predictor_rejects_inconsistent_inputs() -> None:
    predictor = FusionPredictor(FusionNetwork(FusionConfig("rrdb", 8, 1, 4)))
    rgb = torch.rand(1, 3, 48, 48)
    good = {
        "10m": torch.rand(1, 4, 12, 12),
        "20m": torch.rand(1, 6, 6, 6),
        "60m": torch.rand(1, 2, 2, 2),
    }
    with pytest.raises(InputError, match="20m group"):
        predictor(rgb, {**good, "20m": torch.rand(1, 6, 12, 12)})
    with pytest.raises(InputError, match="60m"):
        predictor(rgb, {k: v for k, v in good.items() if k != "60m"})
    with pytest.raises(InputError, match="rgb_sr"):
        predictor(torch.rand(1, 4, 48, 48), good)
    with pytest.raises(InputError, match="10m group"):
        predictor(rgb, {**good, "10m": torch.rand(1, 3, 12, 12)})


def test_receptive_halo_reflects_the_architecture() -> None:
    with torch.device("meta"):
        rrdb = FusionPredictor(FusionNetwork(FusionConfig.large_rrdb()))
        mtf = FusionPredictor(FusionNetwork(FusionConfig.large_mtf()))
        tiny = FusionPredictor(FusionNetwork(FusionConfig("rrdb", 8, 1, 4)))
    # more blocks reach further; every halo covers at least one 60 m pixel of bilinear support
    assert rrdb.receptive_halo > tiny.receptive_halo >= bands.GROUP_RATIO["60m"]
    assert mtf.receptive_halo > bands.GROUP_RATIO["60m"]


def test_receptive_halo_bounds_the_local_influence() -> None:
    # perturb one 10 m input pixel: output pixels farther than the halo must not move
    # (MTF arch: no global pooling; its area resampling is aligned with the block origin)
    torch.manual_seed(0)
    predictor = FusionPredictor(FusionNetwork(FusionConfig("mtf", 4, 2, 2)))
    h = w = 48  # halo 32: the far side of the block lies beyond it
    rgb = torch.rand(1, 3, 4 * h, 4 * w)
    groups = {
        g: torch.rand(1, len(bands.GROUPS[g]), h // r, w // r) for g, r in bands.GROUP_RATIO.items()
    }
    base = predictor(rgb, groups)
    bumped = {**groups, "10m": groups["10m"].clone()}
    bumped["10m"][:, :, 0, 0] += 1.0
    diff = (predictor(rgb, bumped) - base).abs().amax(dim=(0, 1))
    reach = 4 * predictor.receptive_halo
    assert diff[:2, :2].max() > 0  # the perturbation is seen nearby
    assert diff[reach:, :].max() == 0 and diff[:, reach:].max() == 0
