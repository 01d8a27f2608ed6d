"""State-dict layouts of the networks against the official manifests, and config inference.

The full ("large") networks are built on the meta device: no memory, no initialisation cost.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from difffusr_cli.errors import WeightsError
from difffusr_cli.models import (
    DiffusionSR,
    FusionConfig,
    FusionNetwork,
    SRConfig,
    detect_kind,
    infer_fusion_config,
    infer_sr_config,
)


def _layout(module: torch.nn.Module) -> list[tuple[str, list[int], str]]:
    return [
        (k, list(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in module.state_dict().items()
    ]


def _manifest(compat: Path, name: str) -> dict:
    return json.loads((compat / name).read_text())


def _manifest_layout(entries: list) -> list[tuple[str, list[int], str]]:
    return [(k, list(shape), dtype) for k, shape, dtype in entries]


def _meta_state_dict(entries: list) -> dict[str, torch.Tensor]:
    return {
        k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
        for k, shape, dtype in entries
    }


def _numel_by_prefix(module: torch.nn.Module, params_only: bool = False) -> dict[str, int]:
    counts: dict[str, int] = {}
    tensors = module.named_parameters() if params_only else module.state_dict().items()
    for key, value in tensors:
        prefix = key.split(".", 1)[0]
        counts[prefix] = counts.get(prefix, 0) + value.numel()
    return counts


@pytest.fixture(scope="module")
def large_sr() -> DiffusionSR:
    with torch.device("meta"):
        return DiffusionSR(SRConfig.large())


def test_large_sr_layout_equals_official_manifest(compat: Path, large_sr: DiffusionSR) -> None:
    manifest = _manifest(compat, "sr_full_keys.json")
    assert _layout(large_sr) == _manifest_layout(manifest["keys"])  # names, order, shapes, dtypes


def test_large_sr_element_and_parameter_counts(compat: Path, large_sr: DiffusionSR) -> None:
    manifest = _manifest(compat, "sr_full_keys.json")
    numel = _numel_by_prefix(large_sr)
    params = _numel_by_prefix(large_sr, params_only=True)
    for prefix, expected in manifest["per_prefix"].items():
        assert numel[prefix] == expected["numel"], prefix
        assert params.get(prefix, 0) == expected["param_numel"], prefix
    assert sum(p.numel() for p in large_sr.parameters()) == manifest["num_parameters_total"]
    assert 120e6 < params["model"] < 140e6  # "about 129 M parameters" (SPEC §2)


def test_small_sr_layout_equals_compat_checkpoint(compat: Path) -> None:
    with torch.device("meta"):
        model = DiffusionSR(SRConfig.small())
    expected = _manifest(compat, "sr_small.json")["state_dict_keys_ordered"]
    assert _layout(model) == _manifest_layout(expected)


@pytest.mark.parametrize(
    ("config", "manifest_name"),
    [
        (FusionConfig.large_rrdb(), "fusion_rrdb_keys.json"),
        (FusionConfig.large_mtf(), "fusion_mtf_keys.json"),
    ],
    ids=["rrdb", "mtf"],
)
def test_large_fusion_layout_and_counts(
    compat: Path, config: FusionConfig, manifest_name: str
) -> None:
    manifest = _manifest(compat, manifest_name)
    with torch.device("meta"):
        net = FusionNetwork(config)
    assert _layout(net) == _manifest_layout(manifest["keys"])
    assert _numel_by_prefix(net) == manifest["numel_per_branch"]
    # the branch attribute order is part of the layout: RRDB 60/20/10, MTF 10/20/60
    assert [name for name, _ in net.named_children()] == list(manifest["branches"])


def test_infer_recovers_large_configs_from_manifests(compat: Path) -> None:
    sr = _meta_state_dict(_manifest(compat, "sr_full_keys.json")["keys"])
    assert detect_kind(sr) == "rgb"
    assert infer_sr_config(sr) == SRConfig.large()
    for name, expected in (
        ("fusion_rrdb_keys.json", FusionConfig.large_rrdb()),
        ("fusion_mtf_keys.json", FusionConfig.large_mtf()),
    ):
        sd = _meta_state_dict(_manifest(compat, name)["keys"])
        assert detect_kind(sd) == "fusion"
        assert infer_fusion_config(sd) == expected


def test_infer_recovers_small_configs_from_compat_files(compat: Path) -> None:
    sr = load_file(compat / "sr_small.safetensors")
    assert detect_kind(sr) == "rgb"
    assert infer_sr_config(sr) == SRConfig.small()
    stored = load_file(compat / "fusion_rrdb_small.safetensors")
    fusion = {k.removeprefix("weights/"): v for k, v in stored.items() if k.startswith("weights/")}
    assert detect_kind(fusion) == "fusion"
    assert infer_fusion_config(fusion) == FusionConfig("rrdb", nf=8, nb=1, gc=4)


def test_infer_recovers_configs_of_built_networks() -> None:
    # no shared data needed: round trip through our own (meta) networks, several shapes
    configs = [
        SRConfig.small(),
        SRConfig.from_dict(
            {
                "unet": {
                    "inner_channel": 32,
                    "channel_mults": [1, 2, 4],
                    "res_blocks": 2,
                    "attn_strides": [2, 4],
                },
                "rrdb": {"num_block": 2},
            }
        ),
    ]
    for config in configs:
        with torch.device("meta"):
            sd = DiffusionSR(config).state_dict()
        assert infer_sr_config(sd) == config
    for config in (FusionConfig("rrdb", 16, 2, 8), FusionConfig("mtf", 16, 5, 8)):
        with torch.device("meta"):
            sd = FusionNetwork(config).state_dict()
        assert infer_fusion_config(sd) == config


def test_infer_rejects_unknown_and_inconsistent_layouts() -> None:
    with pytest.raises(WeightsError, match="unknown weights layout"):
        detect_kind({"conv.weight": torch.zeros(1)})
    with torch.device("meta"):
        sd = dict(DiffusionSR(SRConfig.small()).state_dict())
    broken = dict(sd)
    broken["ema.downs.1.res_block.block1.block.3.weight"] = torch.empty(32, 32, 5, 5, device="meta")
    with pytest.raises(WeightsError, match="ema.downs.1.res_block.block1.block.3.weight"):
        infer_sr_config(broken)
    missing = {k: v for k, v in sd.items() if not k.startswith("E.queue")}
    with pytest.raises(WeightsError, match="E.queue"):
        infer_sr_config(missing)
    with torch.device("meta"):
        fusion = dict(FusionNetwork(FusionConfig("rrdb", 8, 1, 4)).state_dict())
    del fusion["rrdb_block_20_fusion.conv_last.bias"]
    with pytest.raises(WeightsError, match="missing"):
        infer_fusion_config(fusion)
