"""The notebook API: load_rgb_model / load_fusion_model from files, converted weights and names."""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import difffusr_cli
from difffusr_cli import api, weights
from difffusr_cli.checkpoint import read_safetensors
from difffusr_cli.errors import InputError, WeightsError
from difffusr_cli.models.config import FusionConfig, SRConfig
from difffusr_cli.models.fusion import FusionNetwork
from difffusr_cli.models.predictors import FusionPredictor, RGBSuperResolver
from difffusr_cli.models.sr import DiffusionSR


def _groups(batch: int, h: int, w: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "10m": torch.rand(batch, 4, h, w, generator=generator) * 0.4,
        "20m": torch.rand(batch, 6, h // 2, w // 2, generator=generator) * 0.4,
        "60m": torch.rand(batch, 2, h // 6, w // 6, generator=generator) * 0.4,
    }


@pytest.fixture(scope="module")
def tiny_sr_file(tmp_path_factory) -> Path:
    """The small SR config with seeded weights, saved as a Lightning-shaped checkpoint."""
    torch.manual_seed(0)
    model = DiffusionSR(SRConfig.small())
    model.schedule_from_scratch()
    path = tmp_path_factory.mktemp("sr") / "tiny_sr.ckpt"
    torch.save({"state_dict": OrderedDict(model.state_dict())}, path)
    return path


def test_top_level_reexports() -> None:
    assert difffusr_cli.load_rgb_model is api.load_rgb_model
    assert difffusr_cli.load_fusion_model is api.load_fusion_model


def test_rgb_model_from_checkpoint_shapes_and_eval_mode(tiny_sr_file: Path) -> None:
    model = api.load_rgb_model(tiny_sr_file)
    assert isinstance(model, RGBSuperResolver) and model.config == SRConfig.small()
    assert model.device == torch.device("cpu")
    assert not model.model.training and not model.model.ema.training
    assert not any(t.is_meta for t in model.model.state_dict().values())
    lr = torch.rand(2, 3, 4, 4)
    first = model.super_resolve(lr, steps=2, seed=3)
    assert (
        first.shape == (2, 3, 16, 16)
        and first.dtype == torch.float32
        and torch.isfinite(first).all()
    )
    assert torch.equal(first, model.super_resolve(lr, steps=2, seed=3))  # seeded → reproducible


def test_loaded_weights_are_the_files_tensors(tiny_sr_file: Path, tmp_path: Path) -> None:
    converted = weights.convert(tiny_sr_file, tmp_path / "tiny.safetensors")
    network = api.load_network(weights.load_weights(converted), origin=str(converted))
    original = torch.load(tiny_sr_file, weights_only=True)["state_dict"]
    state = network.state_dict()
    assert list(state) == list(original)
    assert all(torch.equal(state[k], original[k]) for k in original)


@pytest.mark.slow
def test_rgb_api_reproduces_the_compat_sampler(compat: Path) -> None:
    # End to end through the API: reflectance in, reflectance out, EMA weights, stored schedule.
    vectors, _ = read_safetensors(compat / "sr_small_vectors.safetensors")
    model = api.load_rgb_model(compat / "lightning_ckpt_small.ckpt")
    lr = vectors["lr"] * 0.5 + 0.5
    out = model.super_resolve(lr, steps=20, noise=vectors["sampler_x_T"])
    assert out.shape == (1, 3, 64, 64)
    torch.testing.assert_close(out, vectors["sampler_out"] * 0.5 + 0.5, atol=1e-4, rtol=0)


def test_fusion_model_from_compat_files(compat: Path) -> None:
    for name, config in (
        ("fusion_rrdb_small.safetensors", FusionConfig("rrdb", 8, 1, 4)),
        ("fusion_mtf.safetensors", FusionConfig.large_mtf()),
    ):
        predictor = api.load_fusion_model(compat / name)
        assert isinstance(predictor, FusionPredictor) and predictor.config == config
        rgb = torch.rand(1, 3, 24, 24) * 0.3
        out = predictor(rgb, _groups(1, 6, 6))
        assert out.shape == (1, 12, 24, 24) and torch.isfinite(out).all()


def test_fusion_model_from_tiny_converted_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = FusionNetwork(FusionConfig("rrdb", 8, 1, 4))
    source = tmp_path / "fusion.pt"
    torch.save(network.state_dict(), source)  # a bare torch.save(state_dict)
    converted = weights.convert(source, tmp_path / "fusion.safetensors")
    predictor = api.load_fusion_model(converted)
    groups = _groups(2, 6, 6, seed=1)
    rgb = torch.rand(2, 3, 24, 24)
    reference = FusionPredictor(network.eval())(rgb, groups)
    torch.testing.assert_close(predictor(rgb, groups), reference, atol=0, rtol=0)


def test_wrong_kind_and_bad_device(tiny_sr_file: Path, tmp_path: Path) -> None:
    fusion = tmp_path / "fusion.pt"
    torch.save(FusionNetwork(FusionConfig("mtf", 8, 3, 4)).state_dict(), fusion)
    with pytest.raises(WeightsError, match="holds a fusion model, not an RGB model"):
        api.load_rgb_model(fusion)
    with pytest.raises(WeightsError, match="holds an RGB model, not a fusion model"):
        api.load_fusion_model(tiny_sr_file)
    with pytest.raises(InputError):
        api.load_rgb_model(tiny_sr_file, device="tpu:7")


def test_mismatched_config_is_a_weights_error(tiny_sr_file: Path, tmp_path: Path) -> None:
    converted = weights.convert(tiny_sr_file, tmp_path / "w.safetensors")
    meta = json.loads(converted.with_suffix(".json").read_text())
    meta["config"]["unet"]["inner_channel"] = 64  # lies about the architecture
    converted.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="do not match the diffusion-sr3-rrdb architecture"):
        api.load_rgb_model(converted)


def test_default_names_resolve_through_the_manifest(
    tiny_sr_file: Path, tmp_path: Path, monkeypatch
) -> None:
    """None → the manifest's default, fetched from the (offline) Hub cache and converted."""
    commit = "ab" * 20
    snapshot = (
        tmp_path
        / "hub"
        / "models--t--m"
        / "snapshots"
        / commit
        / "logs"
        / "rgb"
        / "version_0"
        / "checkpoints"
    )
    snapshot.mkdir(parents=True)
    shutil.copyfile(tiny_sr_file, snapshot / "last.ckpt")
    (tmp_path / "hub" / "models--t--m" / "refs").mkdir()
    (tmp_path / "hub" / "models--t--m" / "refs" / "main").write_text(commit)
    manifest = tmp_path / "weights.toml"
    manifest.write_text(
        '[models.tiny-rgb]\nkind = "rgb"\nsource = "hub"\nrepo = "t/m"\n'
        'file = "logs/rgb/version_0/checkpoints/last.ckpt"\narchitecture = '
        '"diffusion-sr3-rrdb"\ndefault = true\n'
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("DIFFFUSR_CACHE", str(tmp_path / "converted"))
    monkeypatch.setenv("DIFFFUSR_WEIGHTS_TOML", str(manifest))
    model = api.load_rgb_model()
    assert model.config == SRConfig.small()
    assert (tmp_path / "converted" / "tiny-rgb" / commit / "tiny-rgb.safetensors").is_file()
    with pytest.raises(WeightsError, match="no default fusion model"):
        api.load_fusion_model()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
