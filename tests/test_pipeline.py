"""The superres pipeline with stand-in models on the synthetic SAFE: grid, nodata, seams, block
independence, resume, fusion methods, windows, output rules."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import StandInSR, read_product, stand_in_models
from rasterio.windows import Window

from difffusr_cli.bands import BAND_NAMES, GROUP_RATIO, GROUPS, RGB, SCALE, indices
from difffusr_cli.device import select_device, select_precision
from difffusr_cli.errors import InputError, OutputError
from difffusr_cli.example import make_example_safe, write_example_cogs
from difffusr_cli.io import open_scene, partial_path_for
from difffusr_cli.superres import (
    SuperresOptions,
    output_paths,
    product_stem,
    progress_path_for,
    resolve_region,
    superres_many,
)
from difffusr_cli.tiling import axis_starts

SIZE = 48  # 10 m pixels: a 192 × 192 product
SMALL = SuperresOptions(
    steps=2,
    patch_size=32,
    overlap=8,
    batch_size=4,
    device="cpu",
    fusion_tile=48,
    fusion_overlap=24,
    block_rows=48,
    quiet=True,
)


@pytest.fixture(scope="module")
def safe(tmp_path_factory) -> Path:
    return make_example_safe(tmp_path_factory.mktemp("scene"), size=SIZE)


def run(safe: Path, out: Path, models=None, **changes) -> Path:
    superres_many([safe], out, replace(SMALL, **changes), models=models or stand_in_models())
    return out


def expected_validity(scene, window: Window) -> np.ndarray:
    """The documented rule: nodata if the containing 10/20/60 m pixel is nodata in its group."""
    valid = np.ones((int(window.height) * SCALE, int(window.width) * SCALE), bool)
    for group in GROUPS:
        factor = SCALE * GROUP_RATIO[group]
        block = scene.read_group(group, window)
        valid &= np.kron(block.valid, np.ones((factor, factor), bool)).astype(bool)
    return valid


def test_product_grid_bands_tags_and_nodata(safe, tmp_path):
    scene = open_scene(safe)
    data, meta = read_product(run(safe, tmp_path / "u16.tif"))
    assert data.shape == (12, SIZE * 4, SIZE * 4) and data.dtype == np.uint16
    assert meta["descriptions"] == BAND_NAMES and meta["crs"] == scene.crs
    t = meta["transform"]
    assert (t.c, t.f) == (scene.transform.c, scene.transform.f) and (t.a, t.e) == (2.5, -2.5)
    valid = expected_validity(scene, scene.full_window)
    assert 0 < (~valid).sum() < valid.size  # the example has a nodata corner
    assert np.all(data[:, ~valid] == 0) and np.all(data[:, valid] > 0)
    tags = meta["tags"]
    assert (
        tags["steps"] == "2"
        and tags["seed"] == "0"
        and tags["patch_size"] == "32"
        and tags["overlap"] == "8"
    )
    assert tags["fusion_method"] == "net" and tags["rgb_model_sha256"] == "0" * 64
    assert json.loads(tags["radiometric_offsets_applied_dn"])["B04"] == -1000
    assert tags["source_product"] == scene.product_id

    reflectance, _ = read_product(run(safe, tmp_path / "f32.tif", dtype="float32"))
    assert np.all(np.isnan(reflectance[:, ~valid])) and np.all(np.isfinite(reflectance[:, valid]))
    # uint16 keeps the input convention: DN = (reflectance - offset) / scale
    np.testing.assert_allclose(
        data[:, valid], np.clip(np.rint(reflectance[:, valid] / 1e-4 + 1000), 1, 65535), atol=1
    )


def test_tiled_output_equals_whole_image_output(safe, tmp_path):
    # Far enough from the nodata corner that no halo reaches it: the fill value of nodata (the
    # mean over a read strip) is the one thing that depends on the tiling.
    window = (0, 0, 24, 24)
    whole, _ = read_product(
        run(
            safe,
            tmp_path / "whole.tif",
            window=window,
            dtype="float32",
            patch_size=96,
            overlap=0,
            fusion_tile=96,
            fusion_overlap=0,
        )
    )
    tiled, _ = read_product(
        run(safe, tmp_path / "tiled.tif", window=window, dtype="float32", block_rows=40)
    )
    assert np.isfinite(whole).all()
    border = 8
    inner = np.s_[:, border:-border, border:-border]
    assert np.abs(tiled[inner] - whole[inner]).max() < 1e-5


def test_block_size_changes_nothing(safe, tmp_path):
    a, _ = read_product(run(safe, tmp_path / "a.tif", models=stand_in_models(0.05), block_rows=48))
    b, _ = read_product(run(safe, tmp_path / "b.tif", models=stand_in_models(0.05), block_rows=100))
    c, _ = read_product(run(safe, tmp_path / "c.tif", models=stand_in_models(0.07), block_rows=48))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)  # the noise does reach the pixels


def test_nodata_patches_are_skipped_and_holes_filled(safe, tmp_path):
    models = stand_in_models()
    [summary] = superres_many([safe], tmp_path / "o.tif", SMALL, models=models)
    sr: StandInSR = models.rgb  # type: ignore[assignment]
    seen = sum(len(b) for b in sr.batches)
    grid = (
        len(axis_starts(SIZE * 4, 32, 8)) ** 2
    )  # 192 px, patch 32, stride 24, last snapped: 8 × 8
    assert (
        summary.patches_skipped > 0
        and seen == summary.patches_run == grid - summary.patches_skipped
    )
    assert all(len(b) <= SMALL.batch_size for b in sr.batches)
    # Nodata (0) never reaches the model: partly invalid patches were filled.
    assert all(float(b.min()) > 0 for b in sr.batches)


@pytest.mark.parametrize("method", ["bilinear", "gs"])
def test_baseline_fusions_keep_the_diffusion_rgb(safe, tmp_path, method):
    # --consistency off: the pipeline as before the consistency step (it would correct the RGB).
    out = run(
        safe,
        tmp_path / f"{method}.tif",
        stand_in_models(method=method),
        fusion=method,
        dtype="float32",
        window=(0, 0, 24, 24),
        consistency="off",
    )
    data, meta = read_product(out)
    assert meta["tags"]["fusion_method"] == method and np.isfinite(data).all()
    scene = open_scene(safe)
    lr = scene.read_bands(RGB, Window(0, 0, 24, 24)).data
    up = np.kron(lr, np.ones((1, 4, 4), np.float32))
    np.testing.assert_allclose(
        data[indices(RGB)], up + 0.25 * up * up, atol=1e-6
    )  # StandInSR's curve
    net, _ = read_product(
        run(safe, tmp_path / "net.tif", dtype="float32", window=(0, 0, 24, 24), consistency="off")
    )
    assert np.abs(net[indices(RGB)] - data[indices(RGB)]).max() > 1e-3


@pytest.mark.parametrize("consistency", ["box", "off"])
def test_resume_after_interruption_is_bitwise_identical(safe, tmp_path, consistency):
    options = replace(SMALL, consistency=consistency)
    reference_path = run(
        safe, tmp_path / "ref.tif", models=stand_in_models(0.05), consistency=consistency
    )
    reference, _ = read_product(reference_path)
    out = tmp_path / "out.tif"

    def stop_after_three(index: int) -> None:
        if index == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        superres_many(
            [safe], out, options, models=stand_in_models(0.05), on_block_done=stop_after_three
        )
    assert not out.exists() and partial_path_for(out).exists()
    record = json.loads(progress_path_for(out).read_text())
    assert record["blocks_done"] == [0, 1, 2]

    with pytest.raises(OutputError, match="--resume"):
        run(safe, out, models=stand_in_models(0.05), consistency=consistency)
    with pytest.raises(OutputError, match="seed"):
        run(safe, out, models=stand_in_models(0.05), resume=True, seed=1, consistency=consistency)
    other = "off" if consistency == "box" else "box"
    with pytest.raises(OutputError, match="consistency"):
        run(safe, out, models=stand_in_models(0.05), resume=True, consistency=other)

    models = stand_in_models(0.05)
    [summary] = superres_many([safe], out, replace(options, resume=True), models=models)
    resumed, _ = read_product(out)
    assert np.array_equal(resumed, reference)
    assert out.read_bytes() == reference_path.read_bytes()  # the file itself, not only its pixels
    assert summary.blocks_resumed == 3 and summary.blocks_written == 1
    # Only what the last block needs (with box, its consistency context reaches most of this
    # small scene).
    assert 0 < summary.patches_run + summary.patches_skipped < (65 if consistency == "box" else 64)
    assert not progress_path_for(out).exists() and not partial_path_for(out).exists()


def test_window_and_bbox_select_the_same_aligned_region(safe, tmp_path):
    scene = open_scene(safe)
    assert resolve_region(scene, (5, 7, 10, 10), None) == Window(0, 6, 18, 12)  # whole 60 m pixels
    assert resolve_region(scene, None, None) == Window(0, 0, SIZE, SIZE)
    left, top = scene.transform @ (12, 6)
    right, bottom = scene.transform @ (30, 18)
    assert resolve_region(scene, None, (left, bottom, right, top)) == Window(12, 6, 18, 12)
    with pytest.raises(InputError, match="does not overlap"):
        resolve_region(scene, (100, 100, 5, 5), None)

    data, meta = read_product(run(safe, tmp_path / "w.tif", bbox=(left, bottom, right, top)))
    assert data.shape == (12, 48, 72)
    assert (meta["transform"].c, meta["transform"].f) == (left, top)
    full, _ = read_product(run(safe, tmp_path / "full.tif", window=(12, 6, 18, 12), patch_size=32))
    assert np.array_equal(full, data)


def test_existing_outputs_are_never_touched(safe, tmp_path):
    out = tmp_path / "exists.tif"
    out.write_bytes(b"precious")
    # Refused before any model is loaded: the model path does not even exist.
    with pytest.raises(OutputError, match="--overwrite"):
        superres_many([safe], out, replace(SMALL, rgb_model="/no/such/model"))
    assert out.read_bytes() == b"precious"
    with pytest.raises(OutputError, match="does not exist"):
        superres_many([safe], tmp_path / "missing" / "o.tif", SMALL, models=stand_in_models())
    run(safe, out, overwrite=True)
    assert read_product(out)[0].shape == (12, 192, 192)


def test_several_inputs_write_one_product_each_and_skip_complete_ones(safe, tmp_path):
    cogs = write_example_cogs(safe, tmp_path / "T32TMT_cogs")
    folder = tmp_path / "products"
    first = superres_many(
        [safe, cogs], folder, replace(SMALL, window=(0, 0, 12, 12)), models=stand_in_models()
    )
    assert [s.status for s in first] == ["written", "written"]
    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".tif")
    assert names == sorted([f"{product_stem(safe)}_difffusr.tif", "T32TMT_cogs_difffusr.tif"])
    assert sorted(p.name for p in folder.iterdir() if p.suffix != ".tif") == ["difffusr-batch.json"]
    a, _ = read_product(folder / names[0])
    b, _ = read_product(folder / names[1])
    assert np.array_equal(a, b)  # same pixels from the SAFE and from its COG copy
    again = superres_many(
        [safe, cogs], folder, replace(SMALL, window=(0, 0, 12, 12)), models=stand_in_models()
    )
    assert [s.status for s in again] == ["skipped", "skipped"]
    report = json.loads((folder / "difffusr-batch.json").read_text())
    assert [e["status"] for e in report["inputs"]] == ["skipped", "skipped"]
    assert [e["fingerprint"] for e in report["inputs"]] == [s.fingerprint for s in first]
    with pytest.raises(InputError, match="folder"):
        output_paths([safe, cogs], tmp_path / "x.tif")
    with pytest.raises(InputError, match="both be written"):
        output_paths([safe, safe], folder)


class _BrokenSR:
    """A super-resolver that fails like a model error on its first call."""

    def super_resolve(self, lr, steps=20, *, noise=None):
        raise RuntimeError("model exploded")


def test_failure_before_the_first_block_leaves_nothing_behind(safe, tmp_path):
    out = tmp_path / "o.tif"
    with pytest.raises(RuntimeError, match="exploded"):
        superres_many([safe], out, SMALL, models=replace(stand_in_models(), rgb=_BrokenSR()))
    assert (
        not out.exists()
        and not partial_path_for(out).exists()
        and not progress_path_for(out).exists()
    )
    # So the next run starts without --resume/--overwrite.
    run(safe, out)
    data, meta = read_product(out)
    assert data.shape == (12, SIZE * 4, SIZE * 4)
    # Per-band tag objects list the bands in product order (B8A after B08), not sorted.
    radiometry = json.loads(meta["tags"]["radiometry"])
    assert list(radiometry["scale"]) == list(radiometry["offsets"]) == list(BAND_NAMES)


def test_failure_after_a_recorded_block_keeps_the_partial_file(safe, tmp_path):
    out = tmp_path / "o.tif"
    models = stand_in_models()
    real = models.rgb
    recorded: list[int] = []

    class FailsLater:
        def super_resolve(self, lr, steps=20, *, noise=None):
            if recorded:  # a model error once the first block is written and recorded
                raise RuntimeError("model exploded")
            return real.super_resolve(lr, steps, noise=noise)

    # Block i is written while block i + 1 is computed, and recorded before block i + 2 is:
    # thin blocks leave patches to compute once the first block is recorded.
    with pytest.raises(RuntimeError, match="exploded"):
        superres_many(
            [safe],
            out,
            # thin blocks, and consistency off: with box, its context reaches most of this
            # small scene, so the first block would be recorded only after all patches ran
            replace(SMALL, block_rows=12, consistency="off"),
            models=replace(models, rgb=FailsLater()),
            on_block_done=recorded.append,
        )
    assert recorded, "the stand-in failed before any block was recorded"
    assert partial_path_for(out).exists()
    assert json.loads(progress_path_for(out).read_text())["blocks_done"] == recorded


def test_output_folder_by_trailing_slash_and_tif_suffix_required(safe, tmp_path):
    folder = tmp_path / "outs"
    [target], is_dir = output_paths([safe], f"{folder}/")
    assert (
        is_dir and target.parent == folder and target.name == f"{product_stem(safe)}_difffusr.tif"
    )
    [summary] = superres_many(
        [safe], f"{folder}/", replace(SMALL, window=(0, 0, 12, 12)), models=stand_in_models()
    )
    assert folder.is_dir() and summary.output == target and target.is_file()
    for bad in ("x.jp2", "x.png", "x"):
        with pytest.raises(InputError, match=r"\.tif"):
            output_paths([safe], tmp_path / bad)
    assert output_paths([safe], tmp_path / "x.TIFF") == ([tmp_path / "x.TIFF"], False)


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"resume": True, "overwrite": True}, "not both"),
        ({"window": (0, 0, 10, 10), "bbox": (0, 0, 1, 1)}, "not both"),
        ({"fusion": "gs", "fusion_model": "x.safetensors"}, "--fusion-model"),
        ({"patch_size": 30}, "--patch-size"),
        ({"overlap": 20}, "--overlap"),
        ({"batch_size": 0}, "--batch-size"),
        ({"steps": 0}, "--steps"),
        ({"steps": 1}, "--steps"),  # the DDIM sampler needs at least 2 steps
        ({"steps": 1001}, "--steps"),
        ({"window": (0, 0, 0, 5)}, "positive"),
        ({"bbox": (5, 0, 1, 1)}, "XMIN < XMAX"),
    ],
)
def test_bad_option_combinations_are_rejected(changes, match):
    with pytest.raises(InputError, match=match):
        replace(SMALL, **changes).validate()


def test_device_and_precision_selection():
    cpu = select_device("cpu")
    assert select_precision("auto", cpu) == torch.float32
    assert select_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(InputError, match="fp16"):
        select_precision("fp16", cpu)
    with pytest.raises(InputError):
        select_device("tpu")
    with pytest.raises(InputError):
        select_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            select_device("cuda")
    assert select_device("auto").type in ("cpu", "cuda", "mps")


def test_product_stems():
    assert product_stem(Path("/d/S2B_X.SAFE")) == "S2B_X"
    assert product_stem(Path("/d/S2B_X.SAFE.zip")) == "S2B_X"
    assert product_stem(Path("/d/S2B_X.SAFE/MTD_MSIL2A.xml")) == "S2B_X"
    assert product_stem(Path("/d/item.json")) == "item"


def test_unblended_fusion_tiles_equal_blended_ones_for_a_position_independent_fusion(
    safe, tmp_path
):
    # Bilinear fusion depends on position only: tiles copied in without a blended overlap (the
    # default for it and the MTF nets) give the pixels that weighted, overlapping tiles give.
    models = stand_in_models(method="bilinear")
    copied, _ = read_product(
        run(
            safe,
            tmp_path / "a.tif",
            models=models,
            fusion="bilinear",
            dtype="float32",
            fusion_overlap=0,
        )
    )
    blended, _ = read_product(
        run(
            safe,
            tmp_path / "b.tif",
            models=models,
            fusion="bilinear",
            dtype="float32",
            fusion_overlap=24,
        )
    )
    valid = np.isfinite(blended).all(axis=0)
    assert valid.mean() > 0.5 and np.array_equal(valid, np.isfinite(copied).all(axis=0))
    # Nodata is filled with the mean of the strip read, which depends on the tiling (and the
    # consistency step spreads it a little): compare pixels 48 or more away from nodata.
    invalid = torch.from_numpy(~valid).float()[None, None]
    near = torch.nn.functional.max_pool2d(invalid, 97, stride=1, padding=48)[0, 0].numpy() > 0
    far = ~near
    assert far.mean() > 0.3
    assert np.abs(copied[:, far] - blended[:, far]).max() < 1e-5
