"""Compute defaults: the automatic patch, batch sizes, and options that must not change pixels."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
from rasterio.windows import Window

from difffusr_cli.models.config import FusionConfig, RRDBConfig, SRConfig, UNetConfig
from difffusr_cli.models.fusion import FusionNetwork
from difffusr_cli.models.predictors import FusionPredictor, RGBSuperResolver
from difffusr_cli.models.sr import DiffusionSR
from difffusr_cli.superres import ModelInfo, SuperresOptions, accelerate, build_models
from difffusr_cli.superres.compute import FIXED_BATCH, FIXED_FUSION_BATCH, resolve_compute

CPU = torch.device("cpu")
INFO = ModelInfo("random", "0" * 64)
#: The published U-Net's shape-relevant structure (5 levels, fold 2, attention at stride 16)
#: at a fraction of its width and depth.
OFFICIAL_SHAPES = SRConfig(
    unet=UNetConfig(inner_channel=32, res_blocks=1),
    rrdb=RRDBConfig(num_block=1, num_grow_ch=8),
)


def _models(config: SRConfig, device: str = "meta"):
    with torch.device(device):
        rgb = RGBSuperResolver(DiffusionSR(config))
    return build_models(rgb, None, "bilinear", INFO)


def test_auto_patch_is_672_for_the_published_unet_and_smaller_for_the_demo_model() -> None:
    big = (40_000, 40_000)
    official = resolve_compute(SuperresOptions(), _models(OFFICIAL_SHAPES), CPU, torch.float32, big)
    assert official.patch_size == 672 and official.patch_size % 32 == 0
    assert (672 / (672 - official.overlap)) ** 2 <= 1.12  # overlap overhead of the default
    # the demo model attends at stride 4: 672 would mean 168 × 168 attention positions
    demo = resolve_compute(SuperresOptions(), _models(SRConfig.small()), CPU, torch.float32, big)
    assert demo.patch_size == 256
    # a small region gets a patch not much larger than itself; an explicit patch stays
    small = resolve_compute(
        SuperresOptions(), _models(OFFICIAL_SHAPES), CPU, torch.float32, (192, 900)
    )
    assert small.patch_size == 192
    given = SuperresOptions(patch_size=128)
    assert (
        resolve_compute(given, _models(OFFICIAL_SHAPES), CPU, torch.float32, big).patch_size == 128
    )


def test_the_published_unet_accepts_the_default_patch() -> None:
    """Shapes only (meta tensors): encoder, degradation code and denoiser at 672 × 672."""
    with torch.device("meta"):
        sr = DiffusionSR(OFFICIAL_SHAPES)
        ctx, fea = sr.condition(torch.empty(2, 3, 168, 168))
        out = sr.denoiser()(torch.empty(2, 3, 672, 672), torch.empty(2, 1), ctx, fea)
    assert tuple(out.shape) == (2, 3, 672, 672)


def test_auto_batches_on_the_cpu_and_on_resume() -> None:
    models = _models(SRConfig.small())
    shape = (1000, 1000)
    auto = resolve_compute(SuperresOptions(), models, CPU, torch.float32, shape)
    assert (auto.batch_size, auto.fusion_batch_size) == (FIXED_BATCH, FIXED_FUSION_BATCH)
    # bilinear: exact, unblended; short, wide tiles hold fewer rows in memory
    assert (auto.fusion_tile_rows, auto.fusion_tile, auto.fusion_overlap) == (120, 960, 0)
    square = resolve_compute(SuperresOptions(fusion_tile=480), models, CPU, torch.float32, shape)
    assert (square.fusion_tile_rows, square.fusion_tile) == (480, 480)  # a given tile is square
    # a resumed run goes on with the batches it started with (auto on a GPU varies)
    recorded = {"batch_size": 16, "fusion_batch_size": 4}
    resumed = resolve_compute(SuperresOptions(), models, CPU, torch.float32, shape, recorded)
    assert (resumed.batch_size, resumed.fusion_batch_size) == (16, 4)
    # and with the fusion tiles' rows of its time (bilinear's were 240 before), for its tiles
    before = {"fusion_tile": 960, "fusion_tile_rows": 240}
    resumed = resolve_compute(SuperresOptions(), models, CPU, torch.float32, shape, before)
    assert (resumed.fusion_tile_rows, resumed.fusion_tile) == (240, 960)
    other = {"fusion_tile": 480, "fusion_tile_rows": 240}  # other tiles: the default rows
    resumed = resolve_compute(SuperresOptions(), models, CPU, torch.float32, shape, other)
    assert (resumed.fusion_tile_rows, resumed.fusion_tile) == (120, 960)
    given = resolve_compute(
        SuperresOptions(batch_size=3), models, CPU, torch.float32, shape, recorded
    )
    assert given.batch_size == 3


def _sr_and_fusion() -> tuple[RGBSuperResolver, FusionPredictor]:
    torch.manual_seed(0)
    return (
        RGBSuperResolver(DiffusionSR(SRConfig.small())),
        FusionPredictor(FusionNetwork(FusionConfig("rrdb", 8, 1, 4))),
    )


def _outputs(rgb: RGBSuperResolver, fusion: FusionPredictor) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    lr = torch.rand(2, 3, 12, 12, generator=g)
    sr = rgb.super_resolve(lr, steps=2, seed=5)
    groups = {
        "10m": torch.rand(2, 4, 12, 12, generator=g),
        "20m": torch.rand(2, 6, 6, 6, generator=g),
        "60m": torch.rand(2, 2, 2, 2, generator=g),
    }
    return sr, fusion(sr, groups)


def test_channels_last_gives_the_same_results_within_float_tolerance() -> None:
    reference = _outputs(*_sr_and_fusion())
    rgb, fusion = _sr_and_fusion()
    accelerate(rgb, fusion, channels_last=True)
    weight = next(p for p in rgb.model.parameters() if p.ndim == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(reference, _outputs(rgb, fusion), strict=True):
        assert (a - b).abs().max() < 1e-4


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None,
    reason="no C compiler for torch.compile (inductor) on the CPU",
)
def test_compile_gives_the_same_results_within_float_tolerance() -> None:
    """torch.compile on the CPU takes minutes for the U-Net (inductor builds C++): slow only."""
    reference = _outputs(*_sr_and_fusion())
    rgb, fusion = _sr_and_fusion()
    accelerate(rgb, fusion, compile=True)
    for a, b in zip(reference, _outputs(rgb, fusion), strict=True):
        assert (a - b).abs().max() < 1e-4


def test_options_accept_auto_and_reject_bad_batches() -> None:
    SuperresOptions().validate()
    with pytest.raises(Exception, match="batch-size"):
        replace(SuperresOptions(), batch_size=0).validate()


def test_a_given_fusion_overlap_fits_the_default_tiles_or_is_refused() -> None:
    from difffusr_cli.errors import InputError
    from difffusr_cli.superres.region import make_layout

    models, shape = _models(SRConfig.small()), (4000, 4000)
    options = SuperresOptions(fusion_overlap=240)  # bilinear's default tiles are 120 rows
    resolved = resolve_compute(options, models, CPU, torch.float32, shape)
    assert resolved.fusion_overlap == 240
    assert min(resolved.fusion_tile_rows, resolved.fusion_tile) > 240
    make_layout(Window(0, 0, 1000, 1000), resolved, 6)  # a valid layout, not a ValueError
    with pytest.raises(InputError, match="fusion overlap 480"):  # given tiles never grow
        resolve_compute(
            SuperresOptions(fusion_tile_rows=480, fusion_overlap=480),
            models,
            CPU,
            torch.float32,
            shape,
        )
    with pytest.raises(InputError, match="fusion overlap 480"):  # and the options say so first
        SuperresOptions(fusion_tile_rows=480, fusion_overlap=480).validate()


def test_square_tiles_keep_the_fingerprint_of_runs_made_before_tile_rows(example_safe) -> None:
    from difffusr_cli.io import open_scene
    from difffusr_cli.superres.region import make_layout
    from difffusr_cli.superres.resume import fingerprint

    models, region = _models(SRConfig.small(), "cpu"), Window(0, 0, 192, 192)
    with open_scene(example_safe) as scene:
        for tile_rows, recorded in ((None, False), (240, True)):
            options = resolve_compute(
                SuperresOptions(fusion_tile=480, fusion_tile_rows=tile_rows),
                models,
                CPU,
                torch.float32,
                (768, 768),
            )
            layout = make_layout(region, options, 6)
            recorded_print = fingerprint(scene, region, layout, options, models, CPU, torch.float32)
            assert ("fusion_tile_rows" in recorded_print) is recorded
