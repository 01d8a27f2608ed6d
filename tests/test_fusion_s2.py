"""The ``fusion-s2`` recipe: local regression detail in the MTF branches, the uniform Wald
situation, ERGAS weights, the training manifest that travels with the weights, and ``eval
fusion`` refusing to score nets on scenes they learned from (the shipped model:
test_fusion_s2_shipped.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from difffusr_cli import bands
from difffusr_cli.evaluate.fusion import NET, FusionEvalOptions, seen_scenes
from difffusr_cli.evaluate.fusion_wald import evaluate_wald
from difffusr_cli.io.scene import open_scene
from difffusr_cli.models.config import FusionConfig
from difffusr_cli.models.fusion import OUTPUT_RATIO, FusionNetwork
from difffusr_cli.models.fusion_regression import local_regression_details, mtf_lowpass
from difffusr_cli.train import fusion

GROUPS = ("10m", "20m", "60m")


def native_patches(size: int, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Nested native patches: each group is the area average of one smooth 10 m field."""
    generator = torch.Generator().manual_seed(seed)
    field = F.avg_pool2d(torch.rand(batch, 12, size + 8, size + 8, generator=generator), 9, 1)
    out = {}
    for group, names in bands.GROUPS.items():
        ratio = bands.GROUP_RATIO[group]
        data = field[:, bands.indices(names)] * 0.3 + 0.05
        out[group] = F.avg_pool2d(data, ratio) if ratio > 1 else data
    return out


def reg_net(seed: int = 0, start: bool = True) -> FusionNetwork:
    torch.manual_seed(seed)
    net = FusionNetwork(FusionConfig("mtf", 8, 2, 4, injection="regression")).eval()
    if start:
        for group in GROUPS:
            net.branch(group).start_as_detail_injection()  # type: ignore[union-attr]
    return net


def test_uniform_world_is_the_eval_situation():
    native = native_patches(144, batch=2)
    for group, ratio in (("10m", 1), ("20m", 2), ("60m", 6)):
        world = fusion.wald_world(native, group, "uniform")
        # the guidance is the native 10 m RGB, every group is degraded by 4 from its own grid
        assert torch.equal(world.guidance, native["10m"][:, [2, 1, 0]])
        for g in GROUPS:
            assert world.degraded[g].shape[-1] * 4 == native[g].shape[-1]
        assert world.target_ratio == ratio and torch.equal(world.target, native[group])
        output = torch.rand(2, len(bands.GROUPS[group]), 144, 144)
        assert world.to_target_grid(output).shape == native[group].shape


def test_regression_injection_recovers_bands_affine_in_the_guidance(monkeypatch):
    """Started as the classical fusion, a branch returns a band that is an affine function of
    R, G, B exactly, given the band degraded as Wald's protocol degrades it (without the ridge,
    which shrinks the gains a little in the flattest windows)."""
    from difffusr_cli.degrade import wald_degrade
    from difffusr_cli.models import fusion_regression

    monkeypatch.setattr(fusion_regression, "REGRESSION_RIDGE", 1e-9)
    net = reg_net()
    torch.manual_seed(1)
    # smooth z-scores with a scene-like contrast (std ~0.5)
    rgb = 4 * F.avg_pool2d(torch.randn(1, 3, 152, 152), 9, 1)[..., :144, :144]
    for group, ratio in (("10m", 4), ("20m", 8), ("60m", 24)):
        count = len(fusion.BRANCH_BANDS[group])
        weights = torch.randn(count, 3, generator=torch.Generator().manual_seed(ratio))
        band = torch.einsum("kc,bchw->bkhw", weights, rgb) + 0.1
        coarse = wald_degrade(band, ratio)
        with torch.no_grad():
            out = net.branch(group)(rgb, coarse)
        inner = (..., slice(2 * ratio, -2 * ratio), slice(2 * ratio, -2 * ratio))
        error = (out[inner] - band[inner]).abs().max()
        assert error < 1e-3 * band.std(), (group, float(error))
        # the upstream MTF detail (one pan, one gain) does not have this property
        upstream = FusionNetwork(FusionConfig("mtf", 8, 2, 4)).branch(group)
        upstream.start_as_detail_injection()  # type: ignore[union-attr]
        with torch.no_grad():
            plain = upstream(rgb, coarse)
        assert (plain[inner] - band[inner]).abs().max() > 5 * error, group


@pytest.mark.parametrize("ratio", [4, 8, 24])
def test_the_models_lowpass_is_walds_degradation(ratio):
    from difffusr_cli.degrade import wald_degrade

    x = torch.rand(2, 3, 96, 144)
    assert torch.allclose(mtf_lowpass(x, ratio), wald_degrade(x, ratio), atol=1e-6)


@pytest.mark.parametrize("group", GROUPS)
def test_regression_branch_reaches_no_further_than_its_receptive_radius(group):
    """Gradient support of one output pixel: within ``receptive_radius`` (tiles with that halo
    agree where they overlap), and wider than the upstream branch's (the window and blur)."""
    torch.manual_seed(0)
    net = FusionNetwork(FusionConfig("mtf", 8, 2, 4, injection="regression"))
    branch = net.branch(group)
    ratio, radius = branch.mtf_ratio, branch.receptive_radius
    size = 2 * (radius // ratio + 2) * ratio
    rgb = torch.randn(1, 3, size, size, requires_grad=True)
    ms = torch.randn(1, len(fusion.BRANCH_BANDS[group]), size, size, requires_grad=True)
    centre = size // 2
    branch(rgb, ms)[0, :, centre, centre].sum().backward()
    for grad in (rgb.grad, ms.grad):
        rows, cols = torch.nonzero(grad.abs().sum(dim=(0, 1)) > 0, as_tuple=True)
        reach = max(int((rows - centre).abs().max()), int((cols - centre).abs().max()))
        assert reach <= radius, (group, reach, radius)
    upstream = FusionNetwork(FusionConfig("mtf", 8, 2, 4)).branch(group)
    assert radius > upstream.receptive_radius


def test_regression_detail_stays_float32_under_bf16_autocast():
    """The precision policy: the regression runs in float32 (its solves in float64) whatever
    the ambient autocast; started as the classical fusion, bf16 moves the output only by the
    rounding of the networks' (zero) contributions."""
    net = reg_net()
    native = mixed_patches(144, seed=3)
    for group in GROUPS:
        world = fusion.wald_world(native, group, "uniform")
        guidance, ms = fusion.branch_inputs(net, world)
        branch = net.branch(group)
        with torch.no_grad():
            fp32 = branch(guidance, ms)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                detail = local_regression_details(guidance, ms, OUTPUT_RATIO[group])
                bf16 = branch(guidance, ms)
        assert detail.dtype == torch.float32
        reflectance = fusion.from_branch_space(bf16.float(), group)
        assert (reflectance - fusion.from_branch_space(fp32, group)).abs().max() < 2e-3, group


def test_ergas_loss_weights_weigh_relative_error():
    config = fusion.FusionTrainConfig(loss_weights="ergas")
    equal = fusion.FusionTrainConfig()
    target = torch.zeros(1, 4, 8, 8)
    # the same z-score error on B04 (index 0 in branch order) and on B08 (index 3)
    on_red, on_nir = target.clone(), target.clone()
    on_red[:, 0] += 1.0
    on_nir[:, 3] += 1.0
    assert fusion.branch_loss(on_red, target, "10m", equal.loss_weights) == fusion.branch_loss(
        on_nir, target, "10m", equal.loss_weights
    )
    mean, std = bands.norm_stats(fusion.BRANCH_BANDS["10m"], None, torch.float32)
    weight = (std / mean).flatten()
    ratio = fusion.branch_loss(on_red, target, "10m", config.loss_weights) / fusion.branch_loss(
        on_nir, target, "10m", config.loss_weights
    )
    assert float(ratio) == pytest.approx(float(weight[0] / weight[3]), rel=1e-5)
    assert float(weight[0] / weight[3]) > 2  # red is darker than NIR: its errors count more


def test_s2_preset_and_its_errors():
    config = fusion.resolve_config("s2", {})
    assert config.model == FusionConfig("mtf", 8, 2, 4, injection="regression")
    assert (config.wald_scale, config.start, config.loss_weights) == (
        "uniform",
        "detail-injection",
        "ergas",
    )
    with pytest.raises(Exception, match="needs the mtf architecture"):
        fusion.resolve_config("s2", {}, arch="rrdb")
    with pytest.raises(Exception, match="wald_scale"):
        fusion.resolve_config("small", {"train.wald_scale": "half"})


def mixed_patches(size: int, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Native patches whose 12 bands are fixed positive mixes of one smooth R, G, B field."""
    generator = torch.Generator().manual_seed(seed)
    rgb = F.avg_pool2d(torch.rand(batch, 3, size + 8, size + 8, generator=generator), 9, 1)
    mix = torch.rand(12, 3, generator=generator)
    mix[bands.indices(bands.RGB)] = torch.eye(3)
    field = torch.einsum("kc,bchw->bkhw", mix, rgb) * 0.3 + 0.05
    out = {}
    for group, names in bands.GROUPS.items():
        ratio = bands.GROUP_RATIO[group]
        data = field[:, bands.indices(names)]
        out[group] = F.avg_pool2d(data, ratio) if ratio > 1 else data
    return out


def test_uniform_validation_scores_on_the_native_grids():
    net = reg_net()
    scores, previews = fusion.validate(net, mixed_patches(144, seed=1), 1, "uniform")
    # every band is a mix of R, G, B: the local regression beats bilinear upsampling
    for group in GROUPS:
        assert scores[f"ergas_{group}_net"] < scores[f"ergas_{group}_bilinear"], group
    assert previews["20m"]["net"].shape == previews["20m"]["target"].shape == (1, 6, 72, 72)


# -- what a model saw -------------------------------------------------------------------------


def test_seen_scenes_reads_the_training_manifest():
    seen = seen_scenes({"trained_on": ["a", "b"], "validated_on": ["c"], "step": 3})
    assert seen == {"a": "trained on", "b": "trained on", "c": "validated on"}
    assert seen_scenes({"data": ["x"]}) == {}


def _weights_that_saw(tmp_path: Path, scene_id: str) -> Path:
    from difffusr_cli.weights import save_network

    net = reg_net()
    return save_network(
        net.state_dict(),
        "fusion",
        net.config,
        tmp_path / "saw.safetensors",
        source={"trained_on": [scene_id], "validated_on": []},
    )


def test_eval_does_not_score_nets_on_a_scene_they_trained_on(example_safe: Path, tmp_path):
    with open_scene(example_safe) as scene:
        scene_id = scene.product_id
    weights = _weights_that_saw(tmp_path, scene_id)
    options = FusionEvalOptions(device="cpu", fusion_model=str(weights), window=(0, 0, 96, 96))
    report = evaluate_wald([example_safe], options)
    net = next(m for m in report.products[0].methods if m.method == NET)
    assert net.table is None and "trained on this scene" in str(net.reason)
    assert report.settings["fusion_model_seen"] == {scene_id: "trained on"}
    # the baselines are still scored
    assert all(m.table is not None for m in report.products[0].methods if m.method != NET)

    other = _weights_that_saw(tmp_path, "some-other-scene")
    report = evaluate_wald(
        [example_safe],
        FusionEvalOptions(device="cpu", fusion_model=str(other), window=(0, 0, 96, 96)),
    )
    assert next(m for m in report.products[0].methods if m.method == NET).table is not None


@pytest.mark.slow
def test_training_records_the_scenes_it_learned_from(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_train_data import write_s2_product

    from difffusr_cli.cli import main

    products = [write_s2_product(tmp_path / f"p{i}", 144, seed=i) for i in (1, 2)]
    out = tmp_path / "run"
    argv = ["train", "fusion", "--config", "s2", "--max-steps", "1", "--batch-size", "1"]
    argv += ["--set", "val_patches=1", "--device", "cpu", "--no-progress", "--out", str(out)]
    for product in products:
        argv += ["--data-dir", str(product)]
    assert main(argv) == 0, capsys.readouterr().err
    source = json.loads((out / "best.json").read_text())["source"]
    ids = []
    for product in products:
        with open_scene(product) as scene:
            ids.append(scene.product_id)
    assert source["trained_on"] == ids[:1] and source["validated_on"] == ids[1:]
    assert source["wald_scale"] == "uniform"
