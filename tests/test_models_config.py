"""Architecture config dataclasses: presets, dict round trips, hparams.yaml, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from difffusr_cli.errors import WeightsError
from difffusr_cli.models import FusionConfig, MoCoConfig, SRConfig, UNetConfig


class _EasyDictLoader(yaml.SafeLoader):
    """Safe YAML loader that reads Lightning's EasyDict tags as their ``dictitems`` mapping."""


def _easydict(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> dict:
    return loader.construct_mapping(node, deep=True).get("dictitems", {})


_EasyDictLoader.add_multi_constructor("tag:yaml.org,2002:python/object/new:", _easydict)


def test_presets_hold_the_documented_values() -> None:
    large = SRConfig.large()
    assert large.unet.channel_mults == (1, 2, 2, 4, 8) and large.unet.res_blocks == 5
    assert (
        large.unet.attn_strides == (16,) and large.unet.inner_channel == 64 and large.unet.fold == 2
    )
    assert (large.rrdb.num_block, large.rrdb.num_feat, large.rrdb.num_grow_ch) == (23, 64, 32)
    assert (large.moco.K, large.moco.m, large.moco.T) == (8192, 0.999, 0.07)
    assert (large.diffusion.n_timestep, large.diffusion.schedule) == (1000, "cosine")
    small = SRConfig.small()
    assert (
        small.unet.channel_mults == (1, 1)
        and small.unet.attn_strides == (2,)
        and small.moco.K == 64
    )
    assert FusionConfig.large_rrdb() == FusionConfig("rrdb", 64, 5, 32)
    assert FusionConfig.large_mtf() == FusionConfig("mtf", 32, 3, 16)


@pytest.mark.parametrize("config", [SRConfig.large(), SRConfig.small()], ids=["large", "small"])
def test_sr_config_json_round_trip(config: SRConfig) -> None:
    text = json.dumps(config.to_dict())
    assert SRConfig.from_dict(json.loads(text)) == config


@pytest.mark.parametrize(
    "config", [FusionConfig.large_rrdb(), FusionConfig.large_mtf()], ids=["rrdb", "mtf"]
)
def test_fusion_config_json_round_trip(config: FusionConfig) -> None:
    assert FusionConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_configs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SRConfig.small().unet.inner_channel = 8  # type: ignore[misc]


def test_from_hparams_reads_the_compat_yaml(compat: Path) -> None:
    hparams = yaml.load((compat / "hparams_small.yaml").read_text(), Loader=_EasyDictLoader)
    # hparams.yaml does not record the MoCo queue; the compat model uses K = 64
    assert SRConfig.from_hparams(hparams, moco=MoCoConfig(K=64)) == SRConfig.small()
    assert SRConfig.from_hparams(hparams).moco == MoCoConfig()  # upstream's hard-wired default


def _hparams(**unet_args: object) -> dict:
    args = {
        "in_channel": 3,
        "out_channel": 3,
        "inner_channel": 32,
        "norm_groups": 32,
        "channel_mults": [1, 1],
        "res_blocks": 1,
        "attn_strides": [2],
        "dropout": 0,
        "fold": 2,
        **unet_args,
    }
    return {
        "lit_model": {
            "args": {
                "diffusion_model": {"name": "DiffUNetSR3Atom", "args": args},
                "encoder": {
                    "name": "RRDBNet",
                    "args": {
                        "num_block": 1,
                        "num_feat": 64,
                        "num_grow_ch": 16,
                        "num_in_ch": 3,
                        "num_out_ch": 3,
                        "scale": 4,
                    },
                },
                "diffusion": {
                    "beta_type": "cosine",
                    "n_timestep": 1000,
                    "t_encode_mode": "continuous",
                    "model_mean_type": "xstart",
                },
                "dg_encoder": "DegradationEncoder",
                "ema": True,
            }
        }
    }


def test_from_hparams_without_shared_data() -> None:
    assert SRConfig.from_hparams(_hparams(), moco=MoCoConfig(K=64)) == SRConfig.small()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h: h.pop("lit_model"), "lit_model"),
        (
            lambda h: h["lit_model"]["args"]["diffusion_model"].update(name="UNet"),
            "unsupported architecture",
        ),
        (lambda h: h["lit_model"]["args"]["diffusion"].update(beta_type="linear"), "linear"),
        (lambda h: h["lit_model"]["args"]["diffusion_model"]["args"].update(bogus=1), "bogus"),
        (lambda h: h["lit_model"]["args"]["encoder"]["args"].update(num_feat=32), "num_feat"),
        (lambda h: h["lit_model"]["args"].update(ema=False), "EMA"),
    ],
)
def test_from_hparams_rejects_unsupported_runs(mutate, message: str) -> None:
    hparams = _hparams()
    mutate(hparams)
    with pytest.raises(WeightsError, match=message):
        SRConfig.from_hparams(hparams)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"unet": {"inner_channel": 48, "norm_groups": 32}}, "norm_groups"),
        ({"unet": {"channel_mults": []}}, "channel_mults"),
        ({"vae": {}}, "unknown sections"),
        ({"moco": {"dim": 128}}, "moco.dim"),
        ({"unet": "wide"}, "must be a mapping"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_from_dict_rejects_bad_configs(data: object, message: str) -> None:
    with pytest.raises(WeightsError, match=message):
        SRConfig.from_dict(data)  # type: ignore[arg-type]


def test_fusion_config_rejects_bad_values() -> None:
    with pytest.raises(WeightsError, match="arch"):
        FusionConfig.from_dict({"arch": "unet", "nf": 8, "nb": 1, "gc": 4})
    with pytest.raises(WeightsError, match="unknown keys"):
        FusionConfig.from_dict({"arch": "rrdb", "width": 8})
    with pytest.raises(ValueError):
        UNetConfig(fold=0)
