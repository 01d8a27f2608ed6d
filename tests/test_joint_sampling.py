"""Joint sampling of overlapping diffusion patches: the sampler, the noise field, the pipeline
(reproducible, resumable bit for bit, patches that agree) and the overlap-disagreement measure."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import read_product, stand_in_models
from rasterio.windows import Window

from difffusr_cli.bands import RGB, indices
from difffusr_cli.diffusion import (
    Schedule,
    ddim_sample,
    ddim_sample_views,
    ddim_step,
    ddim_timesteps,
)
from difffusr_cli.example import make_example_safe
from difffusr_cli.io import open_scene, partial_path_for
from difffusr_cli.superres import SuperresOptions, progress_path_for, superres_many
from difffusr_cli.superres.joint import noise_field
from difffusr_cli.superres.rows import state_files, state_stem_for
from difffusr_cli.tiling import Span, axis_starts, blend_weights, patch_noise

SCHEDULE = Schedule.cosine(1000)


def _toy(x: torch.Tensor, level: torch.Tensor, first: int) -> torch.Tensor:
    """A pixelwise "denoiser": the same for a pixel whatever view or batch it is in."""
    return torch.tanh(0.8 * x) * 0.9


def test_one_view_with_unit_weights_is_the_plain_sampler():
    noise = torch.randn((3, 16, 16), generator=torch.Generator().manual_seed(1))
    joint = ddim_sample_views(_toy, SCHEDULE, noise, [(0, 0)], torch.ones(16, 16), steps=5)
    # The plain loop without its last call (t = 0 → 0, an identity on x): bit for bit ...
    x = noise[None]
    for t, t_prev in ddim_timesteps(5, SCHEDULE.n)[:-1]:
        x0 = _toy(x, SCHEDULE.sqrt_alphas_cumprod[t].reshape(1, 1), 0).clamp(-1, 1)
        x = ddim_step(SCHEDULE, x, x0, t, t_prev).prev_sample
    assert torch.equal(joint.sample, x[0])
    assert torch.equal(joint.views_x0[0], x0[0])
    # ... so the plain sampler's result within the float32 rounding of that identity.
    plain = ddim_sample(lambda x, lv: _toy(x, lv, 0), SCHEDULE, noise[None], steps=5)
    assert torch.allclose(joint.sample, plain[0], atol=2e-4)
    assert joint.views_x0.shape == (1, 3, 16, 16)


def test_the_views_skip_only_the_identity_call():
    calls: list[float] = []

    def count(x: torch.Tensor, level: torch.Tensor, first: int) -> torch.Tensor:
        calls.append(float(level[0, 0]))
        return _toy(x, level, first)

    noise = torch.randn((3, 16, 16), generator=torch.Generator().manual_seed(4))
    ddim_sample_views(count, SCHEDULE, noise, [(0, 0)], torch.ones(16, 16), steps=5)
    made = [SCHEDULE.sqrt_alphas_cumprod[t].item() for t, _ in ddim_timesteps(5, SCHEDULE.n)]
    assert calls == made[:-1]  # every call of the plain loop but its last, t = 0


def test_views_blend_in_order_whatever_the_batch_and_known_pixels_stay_known():
    noise = torch.randn((3, 8, 40), generator=torch.Generator().manual_seed(2))
    offsets = [(0, 0), (0, 12), (0, 24)]
    weights = torch.from_numpy(blend_weights(16, 4)[:8])
    known = torch.full((3, 8, 40), 0.25)
    mask = torch.zeros((8, 40), dtype=torch.bool)
    mask[:3] = True
    runs = [
        ddim_sample_views(
            _toy,
            SCHEDULE,
            noise,
            offsets,
            weights,
            steps=4,
            batch_size=b,
            known=known,
            known_mask=mask,
        )
        for b in (1, 2, 3)
    ]
    for run in runs[1:]:
        assert torch.equal(run.sample, runs[0].sample)
        assert torch.equal(run.views_x0, runs[0].views_x0)
    assert torch.equal(runs[0].sample[:, mask], known[:, mask])
    # A pixelwise denoiser on one shared canvas: overlapping views predict the same x0.
    x0 = runs[0].views_x0
    assert torch.equal(x0[0][:, :, 12:16], x0[1][:, :, 0:4])


def test_the_noise_field_is_one_field_seeded_by_position():
    whole = noise_field(3, Span(0, 130), Span(-20, 150))
    part = noise_field(3, Span(40, 100), Span(10, 90))
    assert torch.equal(part, whole[:, 40:100, 30:110])
    assert not torch.equal(noise_field(4, Span(40, 100), Span(10, 90)), part)
    assert abs(float(whole.mean())) < 0.02 and abs(float(whole.std()) - 1) < 0.02


# -- the pipeline with the shipped demo model -----------------------------------------------
SIZE = 48
FAST = SuperresOptions(
    rgb_model="rgb-tiny",
    fusion="bilinear",
    steps=2,
    patch_size=32,
    overlap=8,
    batch_size=4,
    device="cpu",
    window=(0, 0, 24, 24),  # 96 × 96 px: 4 × 4 patches, 4 patch rows
    block_rows=24,
    dtype="float32",
    quiet=True,
)


@pytest.fixture(scope="module")
def safe(tmp_path_factory) -> Path:
    return make_example_safe(tmp_path_factory.mktemp("scene"), size=SIZE)


@pytest.fixture(scope="module")
def models():
    from difffusr_cli.superres.models import load_models

    return load_models(FAST, torch.device("cpu"))


def run(safe: Path, out: Path, models, **changes):
    [summary] = superres_many([safe], out, replace(FAST, **changes), models=models)
    return summary, read_product(out)


def test_joint_is_reproducible_and_tagged(safe, models, tmp_path):
    summary, (a, meta) = run(safe, tmp_path / "a.tif", models)
    _, (b, _) = run(safe, tmp_path / "b.tif", models)
    assert np.array_equal(a, b, equal_nan=True)
    _, (c, _) = run(safe, tmp_path / "c.tif", models, seed=1)
    assert np.nanmean(np.abs(c[indices(RGB)] - a[indices(RGB)])) > 1e-3
    tags = meta["tags"]
    assert tags["sampling"] == "joint" and tags["joint_margin"] == "32"
    measured = json.loads(tags["overlap_disagreement"])
    assert measured == summary.overlap_disagreement and measured["vertical"] > 0
    assert "Joint sampling: overlap disagreement" in summary.paragraph()


@pytest.mark.slow
def test_joint_patches_agree_where_independent_ones_do_not(safe, models, tmp_path):
    window = (0, 0, 48, 48)
    changes = {"window": window, "patch_size": 64, "overlap": 16, "steps": 4, "block_rows": 192}
    ind, _ = run(safe, tmp_path / "i.tif", models, sampling="independent", **changes)
    joint, _ = run(safe, tmp_path / "j.tif", models, joint_margin=32, **changes)
    for axis in ("horizontal", "vertical"):
        assert joint.overlap_disagreement[axis] <= 0.25 * ind.overlap_disagreement[axis], axis
    # Without context the demo network's poor patch edges still disagree, though less.
    bare, _ = run(safe, tmp_path / "b.tif", models, joint_margin=0, **changes)
    assert bare.overlap_disagreement["horizontal"] < ind.overlap_disagreement["horizontal"]


def _interrupted_after(safe, out, models, block: int, **changes) -> None:
    def stop(index: int) -> None:
        if index == block:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        superres_many([safe], out, replace(FAST, **changes), models=models, on_block_done=stop)


#: Four fusion-tile rows and four blocks, so that a resume restarts below the first patch rows.
RESUMABLE = {
    "window": (0, 0, 48, 48),
    "fusion_tile": 48,
    "fusion_overlap": 24,
    "block_rows": 48,
    "patch_size": 48,
    "overlap": 16,
    "joint_margin": 4,
    "dtype": "uint16",
    # With --consistency box the last block's consistency context reaches the top of this small
    # scene, so a resume restarts at the first patch row and needs no saved rows (tested below).
    "consistency": "off",
}


@pytest.mark.parametrize("lose_state", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_joint_resume_is_byte_identical(safe, models, tmp_path, lose_state):
    reference = tmp_path / "ref.tif"
    run(safe, reference, models, **RESUMABLE)
    out = tmp_path / "out.tif"
    _interrupted_after(safe, out, models, 2, **RESUMABLE)
    assert json.loads(progress_path_for(out).read_text())["blocks_done"] == [0, 1, 2]
    saved = state_files(state_stem_for(out))
    assert len(saved) == 1  # the rows above the restart point
    if lose_state:  # the rows above are recomputed instead
        saved[0].unlink()
    summary, _ = run(safe, out, models, resume=True, **RESUMABLE)
    assert summary.blocks_resumed == 3 and summary.patches_run < 64
    assert out.read_bytes() == reference.read_bytes()
    assert not state_files(state_stem_for(out)) and not partial_path_for(out).exists()


def test_joint_resume_with_consistency_is_byte_identical(safe, models, tmp_path):
    options = {**RESUMABLE, "consistency": "box"}
    reference = tmp_path / "ref.tif"
    run(safe, reference, models, **options)
    out = tmp_path / "out.tif"
    _interrupted_after(safe, out, models, 2, **options)
    summary, _ = run(safe, out, models, resume=True, **options)
    assert summary.blocks_resumed == 3
    assert out.read_bytes() == reference.read_bytes()


def test_independent_sampling_is_the_per_patch_pipeline(safe, models, tmp_path):
    """``--sampling independent``: each patch from its own ``patch_noise``, blended."""
    _, (data, meta) = run(
        safe, tmp_path / "i.tif", models, sampling="independent", batch_size=1, consistency="off"
    )
    assert meta["tags"]["sampling"] == "independent" and meta["tags"]["joint_margin"] == "0"
    scene = open_scene(safe)
    # The 24 × 24 window is processed with its context: the whole 48 × 48 scene's patch grid.
    lr = scene.read_bands(RGB, Window(0, 0, 48, 48)).data
    starts = [s for s in axis_starts(192, 32, 8) if s < 96]
    weights = blend_weights(32, 8)
    num, den = np.zeros((3, 128, 128)), np.zeros((128, 128))
    for r, top in enumerate(starts):
        for c, left in enumerate(starts):
            patch = lr[None, :, top // 4 : top // 4 + 8, left // 4 : left // 4 + 8]
            noise = patch_noise(FAST.seed, r, c, 32)[None]
            sr = models.rgb.super_resolve(torch.from_numpy(patch), steps=2, noise=noise)[0]
            num[:, top : top + 32, left : left + 32] += sr.numpy() * weights
            den[top : top + 32, left : left + 32] += weights
    np.testing.assert_allclose(data[indices(RGB)], (num / den)[:, :96, :96], atol=2e-6)


def test_a_model_without_a_joint_sampler_is_sampled_patch_by_patch(safe, tmp_path):
    models = stand_in_models(0.05, method="bilinear")
    summary, (_, meta) = run(safe, tmp_path / "s.tif", models, rgb_model=None)
    assert meta["tags"]["sampling"] == "independent" and summary.sampling == "independent"
    assert summary.overlap_disagreement["horizontal"] > 0


def test_joint_margin_is_checked():
    from difffusr_cli.errors import InputError

    with pytest.raises(InputError, match="--joint-margin"):
        replace(FAST, joint_margin=6).validate()
    # a margin asked for must fit the patch; the default shrinks to a smaller --patch-size
    with pytest.raises(InputError, match="--joint-margin 40: expected at most the patch size"):
        replace(FAST, joint_margin=40).validate()
    replace(FAST, patch_size=16).validate()
    with pytest.raises(InputError, match="--sampling"):
        replace(FAST, sampling="both").validate()  # type: ignore[arg-type]


def test_the_default_margin_shrinks_to_a_small_patch(safe, models, tmp_path):
    summary, (product, meta) = run(safe, tmp_path / "p16.tif", models, patch_size=16, overlap=4)
    assert meta["tags"]["sampling"] == "joint" and meta["tags"]["joint_margin"] == "16"
    assert np.isfinite(product).any()
