"""Fusion at GPU speed: the MTF halo is the nets' true receptive field, batched tiles agree."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import read_product, stand_in_models

from difffusr_cli import bands
from difffusr_cli.device import pack_arrays, to_device, unpack_arrays
from difffusr_cli.example import make_example_safe
from difffusr_cli.fusion_baselines import learned_fusion
from difffusr_cli.models.config import FusionConfig
from difffusr_cli.models.fusion import FusionNetwork
from difffusr_cli.models.predictors import FusionPredictor
from difffusr_cli.superres import ModelInfo, Models, SuperresOptions, superres_many
from difffusr_cli.superres.compute import FUSION_TILE_ROWS, fusion_tiling
from difffusr_cli.tiling import ALIGN, axis_starts, round_up


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


# ---------------------------------------------------------------------------------------------
# Batched fusion tiles


def _mtf_models(counter: list[int]) -> Models:
    """Stand-in SR and a small random MTF fusion net whose calls are counted.

    The halo is one 60 m pixel, not the net's reach: batching must not matter whatever it is,
    and small contexts keep the test cheap.
    """
    torch.manual_seed(0)
    predictor = FusionPredictor(FusionNetwork(FusionConfig("mtf", 4, 2, 1)))
    fuse = learned_fusion(predictor)

    def counted(rgb, groups, valid):
        counter.append(int(rgb.shape[0]))
        return fuse(rgb, groups, valid)

    return replace(
        stand_in_models(noise_amp=0.05),
        fuse=counted,
        fusion_halo=bands.GROUP_RATIO["60m"],
        fusion_arch="mtf",
        fusion_info=ModelInfo("mtf-random", "2" * 64),
    )


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    return make_example_safe(tmp_path_factory.mktemp("scene"), size=36)


OPTIONS = SuperresOptions(
    steps=2, patch_size=48, overlap=16, batch_size=4, device="cpu", fusion_tile=48, quiet=True
)


def test_batched_fusion_tiles_equal_one_tile_at_a_time(example, tmp_path) -> None:
    """MTF nets: 3 × 3 tiles of 48, rows fused one tile or two tiles (+ one) per call."""
    products = {}
    for batch in (1, 2):
        calls: list[int] = []
        options = replace(OPTIONS, dtype="float32", fusion_batch_size=batch)
        superres_many([example], tmp_path / f"{batch}.tif", options, models=_mtf_models(calls))
        products[batch], meta = read_product(tmp_path / f"{batch}.tif")
        assert calls == [1] * 9 if batch == 1 else calls == [2, 1] * 3
        assert meta["tags"]["fusion_batch_size"] == str(batch)
    one, two = products[1], products[2]
    both = np.isfinite(one)
    assert np.array_equal(both, np.isfinite(two)) and both.any()
    assert np.abs(one[both] - two[both]).max() < 1e-5


def test_batched_gram_schmidt_agrees_within_one_dn(example, tmp_path) -> None:
    """Gram–Schmidt's per-tile statistics are reduced in another order in a batch; its gains
    amplify that rounding a little (measured: 0.6 % of the pixels move by 1 DN)."""
    products = [
        superres_many(
            [example],
            tmp_path / f"{batch}.tif",
            replace(OPTIONS, fusion="gs", fusion_batch_size=batch),
            models=stand_in_models(method="gs"),
        )
        and read_product(tmp_path / f"{batch}.tif")[0].astype(int)
        for batch in (1, 2)
    ]
    diff = np.abs(products[0] - products[1])
    assert np.quantile(diff, 0.999) <= 1 and diff.max() <= 2


def test_mtf_defaults_keep_the_halo_under_35_percent() -> None:
    with torch.device("meta"):
        official = FusionPredictor(FusionNetwork(FusionConfig.large_mtf()))
    models = replace(stand_in_models(), fusion_halo=official.receptive_halo, fusion_arch="mtf")
    tile, overlap = fusion_tiling(models)
    rows = FUSION_TILE_ROWS.get("mtf", tile)
    halo = round_up(bands.SCALE * models.fusion_halo, ALIGN)
    assert halo == 96
    cost = (rows + 2 * halo) * (tile + 2 * halo) / ((rows - overlap) * (tile - overlap))
    assert cost <= 1.35
    # On a full tile (43,920 columns and rows) the snapped last tiles add to it.
    side = round_up(10_980 * bands.SCALE, ALIGN)
    n_rows = len(axis_starts(side, rows, overlap))
    n_cols = len(axis_starts(side, tile, overlap))
    full = n_rows * n_cols * (rows + 2 * halo) * (tile + 2 * halo) / (10_980 * bands.SCALE) ** 2
    assert full <= 1.35


def test_arrays_for_a_gpu_are_packed_into_one_copy() -> None:
    arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([[True, False]]),
        "c": np.full((1, 2, 2), 7.0, dtype=np.float64),
    }
    flat = pack_arrays(arrays, torch.empty(12, dtype=torch.float32))
    tensors = unpack_arrays(arrays, flat)
    storage = {t.untyped_storage().data_ptr() for t in tensors.values()}
    assert len(storage) == 1  # views of one buffer: one host→device copy
    for name, a in arrays.items():
        assert tensors[name].dtype == torch.float32 and tensors[name].shape == a.shape
        assert np.array_equal(tensors[name].numpy(), a.astype(np.float32))


def test_arrays_for_the_cpu_are_not_copied() -> None:
    arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([[True, False]]),
    }
    tensors, staging = to_device(arrays, torch.device("cpu"))
    assert staging is None
    assert np.shares_memory(tensors["a"].numpy(), arrays["a"])  # float32: used in place
    for name, a in arrays.items():
        assert tensors[name].dtype == torch.float32 and tensors[name].shape == a.shape
        assert np.array_equal(tensors[name].numpy(), a.astype(np.float32))


@pytest.mark.parametrize(("halo", "tw"), [(24, 96), (48, 96), (24, 72)])
def test_bilinear_core_is_the_crop_of_the_whole_tile_bit_for_bit(halo: int, tw: int) -> None:
    # The CPU pipeline upsamples only each tile's core, straight into its buffer; it must give
    # exactly what bilinear_fuse gives on the tile with its halo, cropped (and leave the bands
    # it skips alone).
    from difffusr_cli.fusion_baselines import bilinear_core_into, bilinear_fuse

    th = 120  # (72 columns: not a multiple of the vector width, the kernels' tails run)
    rgb, groups = _inputs(max(th, tw) + 2 * halo, seed=3)
    rgb = rgb[:, :, : th + 2 * halo, : tw + 2 * halo]
    groups = {
        g: data[:, :, : (th + 2 * halo) // f, : (tw + 2 * halo) // f]
        for g, data in groups.items()
        for f in [bands.SCALE * bands.GROUP_RATIO[g]]
    }
    whole = bilinear_fuse(rgb, groups)[0, :, halo : halo + th, halo : halo + tw]
    out = torch.full((12, th, tw), -7.0)
    skip = bands.indices(bands.RGB)
    core = (slice(halo, halo + th), slice(halo, halo + tw))
    bilinear_core_into({g: d[0] for g, d in groups.items()}, core, out, skip)
    kept = [i for i in range(12) if i not in skip]
    assert torch.equal(out[kept], whole[kept])
    assert (out[skip] == -7.0).all()
    # at the tile's own edge (no halo there) the neighbours are clamped, as in bilinear_fuse
    edge = (slice(0, th), slice(0, tw))
    bilinear_core_into({g: d[0] for g, d in groups.items()}, edge, out, skip)
    assert torch.equal(out[kept], bilinear_fuse(rgb, groups)[0, kept, :th, :tw])
