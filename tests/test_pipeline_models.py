"""The superres pipeline with real (small, random-weight) networks: end to end through the weight
files, seeded reproducibility, batch and block independence, and seams of the diffusion output."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import read_product, write_random_models

from difffusr_cli.bands import BAND_NAMES, RGB, indices
from difffusr_cli.example import make_example_safe
from difffusr_cli.io import open_scene
from difffusr_cli.superres import SuperresOptions, superres_many
from difffusr_cli.tiling import axis_starts

SIZE = 48


@pytest.fixture(scope="module")
def scene_and_models(tmp_path_factory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("models")
    rgb, fusion = write_random_models(folder)
    return make_example_safe(tmp_path_factory.mktemp("scene"), size=SIZE), rgb, fusion


@pytest.fixture(scope="module")
def fast(scene_and_models) -> SuperresOptions:
    """Two sampler steps, bilinear fusion, a 96 × 96 window: seconds per run."""
    _, rgb, _ = scene_and_models
    return SuperresOptions(
        rgb_model=str(rgb),
        fusion="bilinear",
        steps=2,
        patch_size=32,
        overlap=8,
        batch_size=4,
        device="cpu",
        window=(0, 0, 24, 24),
        block_rows=48,
        quiet=True,
    )


def run(safe: Path, out: Path, options: SuperresOptions, **changes) -> np.ndarray:
    superres_many([safe], out, replace(options, **changes))
    return read_product(out)[0]


@pytest.mark.slow
def test_end_to_end_with_learned_fusion(scene_and_models, tmp_path):
    safe, rgb, fusion = scene_and_models
    options = SuperresOptions(
        rgb_model=str(rgb),
        fusion_model=str(fusion),
        steps=2,
        patch_size=64,
        overlap=16,
        device="cpu",
        quiet=True,
    )
    [summary] = superres_many([safe], tmp_path / "o.tif", options)
    data, meta = read_product(tmp_path / "o.tif")
    scene = open_scene(safe)
    assert meta["descriptions"] == BAND_NAMES and meta["crs"] == scene.crs
    assert (meta["transform"].c, meta["transform"].f, meta["transform"].a) == (
        scene.transform.c,
        scene.transform.f,
        2.5,
    )
    assert data.shape == (12, 4 * scene.height, 4 * scene.width)
    nodata = np.kron(~scene.read_group("60m", scene.full_window).valid, np.ones((24, 24), bool))
    assert nodata.any() and np.all(data[:, nodata.astype(bool)] == 0)
    assert np.all(data[:, ~nodata.astype(bool)] > 0)
    tags = meta["tags"]
    assert tags["rgb_model"] == str(rgb) and len(tags["rgb_model_sha256"]) == 64
    assert tags["fusion_model"] == str(fusion) and tags["fusion_method"] == "net"
    assert summary.patches_run + summary.patches_skipped == 16 and summary.peak_memory > 0
    assert "patches/s" in summary.paragraph()


@pytest.mark.slow
def test_same_seed_same_pixels_and_different_seed_different_pixels(
    scene_and_models, fast, tmp_path
):
    safe = scene_and_models[0]
    a = run(safe, tmp_path / "a.tif", fast)
    assert np.array_equal(a, run(safe, tmp_path / "b.tif", fast))
    assert np.array_equal(a, run(safe, tmp_path / "c.tif", fast, block_rows=96))
    other = run(safe, tmp_path / "d.tif", fast, seed=1)
    assert np.abs(other[indices(RGB)].astype(int) - a[indices(RGB)].astype(int)).mean() > 10


def test_batch_size_changes_pixels_by_at_most_one_dn(scene_and_models, fast, tmp_path):
    safe = scene_and_models[0]
    one = run(safe, tmp_path / "one.tif", fast, batch_size=1)
    four = run(safe, tmp_path / "four.tif", fast, batch_size=4)
    assert np.abs(one.astype(int) - four.astype(int)).max() <= 1


@pytest.mark.slow
def test_diffusion_patches_leave_no_seam(scene_and_models, fast, tmp_path):
    """Mean |gradient| across patch boundaries within 10 % of the gradient elsewhere (20 steps)."""
    safe = scene_and_models[0]
    patch, overlap = 48, 16
    data = run(
        safe,
        tmp_path / "s.tif",
        fast,
        steps=20,
        patch_size=patch,
        overlap=overlap,
        window=None,
        dtype="float32",
    )
    rgb = data[indices(RGB)]
    starts = axis_starts(rgb.shape[-1], patch, overlap)
    edges = sorted(set(starts[1:]) | {s + patch for s in starts[:-1]})
    boundary = np.zeros(rgb.shape[-1] - 1, bool)
    boundary[[e - 1 for e in edges]] = True  # gradient index e-1 is between pixels e-1 and e
    across, elsewhere = [], []
    for grad in (np.abs(np.diff(rgb, axis=2)), np.abs(np.diff(rgb, axis=1)).transpose(0, 2, 1)):
        across.append(grad[:, :, boundary])
        elsewhere.append(grad[:, :, ~boundary])
    ratio = np.nanmean(np.concatenate([a.ravel() for a in across])) / np.nanmean(
        np.concatenate([e.ravel() for e in elsewhere])
    )
    assert 0.9 < ratio < 1.1, ratio
