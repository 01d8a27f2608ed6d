"""The small SR config against the compat vectors (../shared/compat), at the README's tolerances."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from difffusr_cli.diffusion import Schedule, ddim_sample
from difffusr_cli.models import DiffusionSR, RGBSuperResolver, SRConfig

# README "Suggested absolute tolerances"
TOL_CODE = 1e-6  # fea, ema_kv_compressed, ema_noise_emb
TOL_RRDB = 1e-5  # RRDB outputs, first-conv intermediates
TOL_UNET = 2e-5  # single U-Net calls
TOL_SAMPLER = 1e-4  # sampler outputs and trajectories


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def vectors(compat: Path) -> dict[str, torch.Tensor]:
    return load_file(compat / "sr_small_vectors.safetensors")


@pytest.fixture(scope="module")
def model(compat: Path) -> DiffusionSR:
    net = DiffusionSR(SRConfig.small())
    result = net.load_state_dict(load_file(compat / "sr_small.safetensors"), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return net.eval()


@pytest.fixture(scope="module")
def sampler_run(
    model: DiffusionSR, vectors: dict[str, torch.Tensor]
) -> dict[str, list[torch.Tensor]]:
    """The full official 20-step run from the recorded noise, with what each call saw."""
    record: dict[str, list[torch.Tensor]] = {"x": [], "noise_level": [], "raw": [], "out": []}
    with torch.no_grad():
        ctx, fea = model.condition(vectors["lr"])
        net = model.denoiser(ema=True)

        def denoise(x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
            record["x"].append(x)
            record["noise_level"].append(noise_level)
            record["raw"].append(net(x, noise_level, ctx, fea))
            return record["raw"][-1]

        record["out"].append(
            ddim_sample(denoise, model.schedule(), vectors["sampler_x_T"], steps=20)
        )
    return record


def test_checkpoint_tensors_round_trip_bitwise(compat: Path, model: DiffusionSR) -> None:
    stored = load_file(compat / "sr_small.safetensors")
    for key, value in model.state_dict().items():
        assert value.dtype == stored[key].dtype and torch.equal(value, stored[key]), key


def test_encoders_reproduce_features(model: DiffusionSR, vectors: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        ctx, fea = model.condition(vectors["lr"])
        hr, feat = model.encoder(vectors["lr"])
    assert _max_diff(fea, vectors["fea"]) < TOL_CODE
    assert _max_diff(ctx, vectors["rrdb_feat"]) < TOL_RRDB
    assert _max_diff(feat, vectors["rrdb_feat"]) < TOL_RRDB
    assert _max_diff(hr, vectors["rrdb_hr"]) < TOL_RRDB
    # the projection head is not the inference feature (eval mode returns the pooled one)
    assert _max_diff(fea, vectors["encoder_q_mlp_out_unused"]) > 1e-2


def test_single_unet_calls_and_intermediates(
    model: DiffusionSR, vectors: dict[str, torch.Tensor]
) -> None:
    captured: dict[str, torch.Tensor] = {}
    net = model.denoiser(ema=True)
    hooks = [
        getattr(net, name).register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out)
        )
        for name in ("compress", "noise_level_mlp", "first_conv_x", "first_conv_ctx")
    ]
    args = (vectors["unet_x"], vectors["unet_noise_level"], vectors["rrdb_feat"], vectors["fea"])
    try:
        with torch.no_grad():
            out_ema = net(*args)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        out_model = model.denoiser(ema=False)(*args)
    assert _max_diff(out_ema, vectors["unet_out_ema"]) < TOL_UNET
    assert _max_diff(out_model, vectors["unet_out_model"]) < TOL_UNET
    assert _max_diff(captured["compress"], vectors["ema_kv_compressed"]) < TOL_CODE
    assert _max_diff(captured["noise_level_mlp"], vectors["ema_noise_emb"]) < TOL_CODE
    assert (
        _max_diff(captured["first_conv_x"], vectors["ema_first_conv_x_out"]) < TOL_RRDB
    )  # fold order
    assert (
        _max_diff(captured["first_conv_ctx"], vectors["ema_first_conv_ctx_out"]) < TOL_RRDB
    )  # ctx resize


def test_full_sampler_output(sampler_run: dict, vectors: dict[str, torch.Tensor]) -> None:
    assert len(sampler_run["raw"]) == 20
    out = sampler_run["out"][0]
    assert _max_diff(out, vectors["sampler_out"]) < TOL_SAMPLER
    # unclamped: the official output leaves [-1, 1] slightly and so does ours
    assert out.abs().max() > 1.0


def test_sampler_trajectory_and_x0_predictions(
    sampler_run: dict, vectors: dict[str, torch.Tensor]
) -> None:
    assert _max_diff(torch.cat(sampler_run["x"]), vectors["sampler_traj_x_in"]) < TOL_SAMPLER
    assert torch.equal(torch.cat(sampler_run["noise_level"]), vectors["sampler_traj_noise_level"])
    raw = sampler_run["raw"]
    assert (
        _max_diff(
            torch.cat([raw[0], raw[1], raw[19]]), vectors["sampler_traj_model_out_steps_0_1_19"]
        )
        < TOL_SAMPLER
    )
    x0_preds = torch.cat([raw[0].clamp(-1, 1), raw[10].clamp(-1, 1)])
    assert _max_diff(x0_preds, vectors["sampler_x0_preds"]) < TOL_SAMPLER


def test_recomputed_float64_schedule_is_the_stored_one(model: DiffusionSR) -> None:
    stored = model.schedule().as_dict()
    for name, table in Schedule.cosine(1000).as_dict().items():
        assert table.dtype == torch.float32 and torch.equal(table, stored[name]), name


def test_batch_of_two_matches_patched_upstream_and_single_runs(
    model: DiffusionSR, vectors: dict[str, torch.Tensor]
) -> None:
    with torch.no_grad():
        ctx, fea = model.condition(vectors["b2_lr"])
        assert _max_diff(fea, vectors["b2_fea"]) < TOL_CODE
        assert _max_diff(ctx, vectors["b2_rrdb_feat"]) < TOL_RRDB
        net = model.denoiser()
        out = ddim_sample(lambda x, nl: net(x, nl, ctx, fea), model.schedule(), vectors["b2_x_T"])
    assert _max_diff(out, vectors["b2_sampler_out_patched"]) < TOL_SAMPLER
    assert _max_diff(out[:1], vectors["sampler_out"]) < TOL_SAMPLER  # sample 0 is lr / sampler_x_T


def test_super_resolver_reproduces_sampler_in_reflectance(
    model: DiffusionSR, vectors: dict[str, torch.Tensor]
) -> None:
    resolver = RGBSuperResolver(model)
    lr = vectors["lr"] * 0.5 + 0.5  # the vectors are in [-1, 1]; the API takes reflectance
    sr = resolver.super_resolve(lr, steps=20, noise=vectors["sampler_x_T"])
    assert sr.shape == (1, 3, 64, 64) and sr.dtype == torch.float32
    assert _max_diff(sr, vectors["sampler_out"] * 0.5 + 0.5) < TOL_SAMPLER / 2
    pair = resolver.super_resolve(vectors["b2_lr"] * 0.5 + 0.5, noise=vectors["b2_x_T"])
    assert _max_diff(pair, vectors["b2_sampler_out_patched"] * 0.5 + 0.5) < TOL_SAMPLER / 2
    singles = torch.cat(
        [
            resolver.super_resolve(
                vectors["b2_lr"][i : i + 1] * 0.5 + 0.5, noise=vectors["b2_x_T"][i : i + 1]
            )
            for i in range(2)
        ]
    )
    assert _max_diff(pair, singles) < 1e-5


def test_schedule_from_scratch_refills_the_buffers(compat: Path) -> None:
    model = DiffusionSR(SRConfig.small())
    model.load_state_dict(load_file(compat / "sr_small.safetensors"))
    expected = {k: v.clone() for k, v in model.diffusion.state_dict().items()}
    for buffer in model.diffusion.buffers():
        buffer.zero_()
    model.schedule_from_scratch()
    for name, value in model.diffusion.state_dict().items():
        assert torch.equal(value, expected[name]), name
