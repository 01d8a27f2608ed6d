"""`difffusr eval fusion`: Wald's protocol and the product check on the synthetic example scene
and the shared DSen2 folders; outputs and bad input (streaming scores and the block plan:
test_eval_running_scores.py)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from difffusr_cli.bands import BAND_NAMES, GROUP_RATIO, GROUPS, SCALE, indices
from difffusr_cli.cli import main
from difffusr_cli.evaluate import fusion
from difffusr_cli.evaluate.fusion import (
    BILINEAR,
    GRAM_SCHMIDT,
    NET,
    PRODUCT,
    FusionEvalOptions,
    NetChoice,
)
from difffusr_cli.evaluate.fusion_product import evaluate_product
from difffusr_cli.evaluate.fusion_wald import evaluate_wald
from difffusr_cli.io.scene import open_scene
from difffusr_cli.io.writer import ProductWriter, output_grid
from difffusr_cli.metrics import METRIC_NAMES
from difffusr_cli.models.config import FusionConfig
from difffusr_cli.models.fusion import FusionNetwork

DSEN2 = ("dsen2_T33UUB", "dsen2_T49JGM")


def _methods(report, index: int = 0) -> dict:
    return {m.method: m for m in report.products[index].methods}


def _all_scores(table) -> list:
    return [table.overall, *table.per_group.values(), *table.per_band.values()]


def _native_on_fine_grid(scene, window: Window, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """All 12 bands of ``window`` repeated onto a grid ``factor`` times finer than 10 m (each
    native pixel copied over its area), and the validity of every group there."""
    height, width = int(window.height) * factor, int(window.width) * factor
    out = np.zeros((12, height, width), dtype=np.float32)
    valid = np.ones((height, width), dtype=bool)
    for group, ratio in GROUP_RATIO.items():
        data, ok = scene.read_native(group, window)
        reps = ratio * factor
        out[indices(GROUPS[group])] = data.repeat(reps, axis=1).repeat(reps, axis=2)
        valid &= ok.repeat(reps, axis=0).repeat(reps, axis=1)
    return out, valid


def _oracle(scene, region: Window) -> NetChoice:
    """A "net" that returns the truth: the native bands repeated onto the 10 m grid (one block)."""
    truth, _ = _native_on_fine_grid(scene, region, 1)
    expected = torch.from_numpy(truth)[None]

    def fuse(rgb, groups, valid):
        assert rgb.shape[-2:] == expected.shape[-2:], (
            "the oracle works on one block covering the region"
        )
        return expected

    return NetChoice(fuse=fuse, reach=0, detail="oracle", reason=None)


def _write_product(
    scene, path: Path, window: Window | None = None, dtype: str = "uint16", shift: float = 0.0
) -> Path:
    """A 2.5 m product repeating the source's native pixels (consistent by construction)."""
    window = window or Window(0, 0, scene.width, scene.height)
    data, valid = _native_on_fine_grid(scene, window, SCALE)
    transform, width, height = output_grid(scene, window)
    if shift:
        transform = transform @ rasterio.Affine.translation(shift, 0)
    radiometry = scene.radiometry
    writer = ProductWriter(
        path,
        crs=scene.crs,
        transform=transform,
        width=width,
        height=height,
        dtype=dtype,
        scale=[radiometry.scale[n] for n in BAND_NAMES],
        offset=[radiometry.offset[n] for n in BAND_NAMES],
    )
    writer.write(Window(0, 0, width, height), data, valid)
    return writer.commit()


@pytest.fixture(scope="module")
def tiny_fusion_file(tmp_path_factory) -> Path:
    from difffusr_cli.weights import save_network

    torch.manual_seed(0)
    config = FusionConfig("mtf", 8, 2, 4)
    path = tmp_path_factory.mktemp("fusion-weights") / "tiny_fusion.safetensors"
    return save_network(
        FusionNetwork(config).state_dict(), "fusion", config, path, source={"test": "random"}
    )


# -- Wald mode ------------------------------------------------------------------------------------


def test_wald_perfect_reconstruction_and_bilinear_below_it(example_safe: Path) -> None:
    with open_scene(example_safe) as scene:
        oracle = _oracle(scene, Window(0, 0, scene.width, scene.height))
    report = evaluate_wald([example_safe], FusionEvalOptions(device="cpu", block=192), nets=oracle)
    methods = _methods(report)
    assert [m.method for m in report.products[0].methods] == [NET, GRAM_SCHMIDT, BILINEAR]
    pixels = report.products[0].pixels
    # The example has a nodata corner: fewer pixels are scored than the grid holds, but most are.
    assert 0.5 * 192 * 192 < pixels["10m"] < 192 * 192 and pixels["20m"] < 96 * 96
    for scores in _all_scores(methods[NET].table):
        assert scores.psnr == math.inf and scores.mse == 0 and scores.ergas == 0
        assert scores.ssim == pytest.approx(1.0, abs=1e-6)
        assert scores.r2 == 1 and scores.cc == pytest.approx(1.0)
    for method in (GRAM_SCHMIDT, BILINEAR):
        for scores in _all_scores(methods[method].table):
            assert all(math.isfinite(v) for v in scores.as_dict().values()), method
    # A textured scene degraded ×4 is not recovered by interpolation: every band loses.
    for name, scores in methods[BILINEAR].table.per_band.items():
        assert (
            scores.psnr < 60 and scores.ssim < 0.99 and scores.ergas > 0.1 and scores.r2 < 0.99
        ), name
    # The RGB guidance carries the 10 m detail: Gram–Schmidt restores B02–B04 far better.
    for name in ("B02", "B03", "B04"):
        assert (
            methods[GRAM_SCHMIDT].table.per_band[name].psnr
            > methods[BILINEAR].table.per_band[name].psnr + 3
        )


def test_wald_scores_of_local_methods_do_not_depend_on_the_block_size(example_safe: Path) -> None:
    whole = evaluate_wald([example_safe], FusionEvalOptions(device="cpu", use_net=False, block=192))
    blocks = evaluate_wald(
        [example_safe], FusionEvalOptions(device="cpu", use_net=False, block=96, gs_pan="mean")
    )
    assert whole.settings["halo"] == 96 and blocks.products[0].pixels == whole.products[0].pixels
    a, b = _methods(whole)[BILINEAR].table, _methods(blocks)[BILINEAR].table
    for x, y in zip(_all_scores(a), _all_scores(b), strict=True):
        for metric in METRIC_NAMES:
            # SSIM is filtered in float32 (as metrics.py): its rounding depends on the array size.
            rel = 1e-4 if metric == "ssim" else 1e-6
            assert getattr(x, metric) == pytest.approx(getattr(y, metric), rel=rel, abs=1e-9), (
                metric
            )
    assert _methods(blocks)[NET].table is None and "--no-net" in _methods(blocks)[NET].reason
    # The classic mean synthetic pan is another Gram–Schmidt (the bilinear rows above are not).
    assert blocks.settings["gs_pan"] == "mean" and whole.settings["gs_pan"] == "regression"
    assert (
        _methods(blocks)[GRAM_SCHMIDT].table.overall.mse
        != _methods(whole)[GRAM_SCHMIDT].table.overall.mse
    )


def test_wald_window_and_small_random_nets(example_safe: Path, tiny_fusion_file: Path) -> None:
    options = FusionEvalOptions(
        device="cpu", fusion_model=str(tiny_fusion_file), window=(50, 40, 100, 110)
    )
    report = evaluate_wald([example_safe], options)
    product = report.products[0]
    # Widened to 60 m pixels (as superres), then cut to whole 240 m cells.
    assert product.region == Window(48, 36, 96, 96)
    net = _methods(report)[NET]
    assert net.table is not None and net.detail == str(tiny_fusion_file)
    for scores in _all_scores(net.table):
        assert all(math.isfinite(v) for v in scores.as_dict().values())
    assert report.settings["halo"] == fusion.default_halo(
        "wald", FusionNetwork(FusionConfig("mtf", 8, 2, 4)).receptive_radius
    )


@pytest.fixture(scope="module")
def small_example_safe(tmp_path_factory) -> Path:
    """A 96 × 96 example scene: too small, beside its nodata corner, for any 60 m pixel to score."""
    from difffusr_cli.example import make_example_safe

    return make_example_safe(tmp_path_factory.mktemp("small-example"), size=96)


def test_wald_small_scene_keeps_gram_schmidt_and_explains_unscored_groups(
    small_example_safe: Path, tmp_path: Path, capsys
) -> None:
    report = evaluate_wald([small_example_safe], FusionEvalOptions(device="cpu", use_net=False))
    product = report.products[0]
    assert product.pixels["10m"] > 0 and product.pixels["20m"] > 0 and product.pixels["60m"] == 0
    assert fusion.wald_min_clean_side("60m") > 96
    # Gram–Schmidt statistics come from each group's own clean pixels, not the (empty) 60 m mask.
    gs, bl = _methods(report)[GRAM_SCHMIDT].table, _methods(report)[BILINEAR].table
    for group in ("10m", "20m"):
        assert gs.per_group[group].mse < bl.per_group[group].mse, group
    assert set(product.not_scored) == {"60m", "all"}
    assert "too small" in product.not_scored["60m"]

    csv_path = tmp_path / "small.csv"
    args = ["eval", "fusion", "--data", str(small_example_safe), "--device", "cpu", "--no-net"]
    assert main([*args, "-q", "--json", "--csv", str(csv_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    not_scored = result["products"][0]["not_scored"]
    assert "too small" in not_scored["60m"] and "60m" in not_scored["all"]
    for method in ("gram-schmidt", "bilinear"):
        entry = result["products"][0]["methods"][method]
        scopes = {"all": entry["overall"], **entry["groups"]}
        scopes.update({band: entry["bands"][band] for band in BAND_NAMES})
        for name, metrics in scopes.items():
            group = (
                name
                if name in GROUPS or name == "all"
                else next(g for g, members in GROUPS.items() if name in members)
            )
            # A null (NaN) metric only where the report says why.
            assert group in not_scored or all(v is not None for v in metrics.values()), name
    with csv_path.open() as handle:
        for row in csv.DictReader(handle):
            if row["status"] == "not-scored":
                assert row["reason"] and all(row[m] == "" for m in METRIC_NAMES)
            elif row["status"] == "ok":
                assert all(not math.isnan(float(row[m])) for m in METRIC_NAMES), row
    assert main([*args, "-q"]) == 0
    table = capsys.readouterr().out
    assert "nan" not in table and "60m: too small" in table and "all: not scored" in table


def test_wald_on_shared_dsen2_scenes(shared_data: Path) -> None:
    scenes = [shared_data / name for name in DSEN2]
    report = evaluate_wald(
        scenes, FusionEvalOptions(device="cpu", use_net=False, window=(0, 0, 288, 288))
    )
    assert len(report.products) == 2 and report.mean is not None
    for index in range(2):
        assert report.products[index].pixels == {"10m": 288 * 288, "20m": 144 * 144, "60m": 48 * 48}
        for method in (GRAM_SCHMIDT, BILINEAR):
            for scores in _all_scores(_methods(report, index)[method].table):
                assert all(math.isfinite(v) for v in scores.as_dict().values())
    mean = {m.method: m for m in report.mean}
    per_scene = [_methods(report, i)[BILINEAR].table.overall.psnr for i in range(2)]
    assert mean[BILINEAR].table.overall.psnr == pytest.approx(sum(per_scene) / 2)
    assert mean[NET].table is None


def test_wald_compat_small_fusion_weights(compat: Path, example_safe: Path) -> None:
    weights = compat / "fusion_rrdb_small.safetensors"
    if not weights.is_file():
        pytest.skip(f"{weights} not present")
    options = FusionEvalOptions(device="cpu", fusion_model=str(weights), window=(0, 0, 96, 96))
    report = evaluate_wald([example_safe], options)
    net = _methods(report)[NET].table
    assert net is not None and all(math.isfinite(v) for v in net.overall.as_dict().values())


# -- product mode ---------------------------------------------------------------------------------


def test_product_mode_consistent_product_is_perfect(example_safe: Path, tmp_path: Path) -> None:
    with open_scene(example_safe) as scene:
        path = _write_product(scene, tmp_path / "product.tif")
    report = evaluate_product(path, example_safe, FusionEvalOptions(device="cpu", block=96))
    methods = _methods(report)
    assert [m.method for m in report.products[0].methods] == [PRODUCT, GRAM_SCHMIDT, BILINEAR]
    for scores in _all_scores(methods[PRODUCT].table):
        assert (
            scores.psnr == math.inf
            and scores.ergas == 0
            and scores.ssim == pytest.approx(1.0, abs=1e-6)
        )
    for method in (GRAM_SCHMIDT, BILINEAR):
        overall = methods[method].table.overall
        assert all(math.isfinite(v) for v in overall.as_dict().values()) and overall.psnr > 20
    assert report.settings["ergas_ratio"] == {"10m": 4, "20m": 8, "60m": 24}


def test_product_mode_float_product_over_a_window(example_safe: Path, tmp_path: Path) -> None:
    with open_scene(example_safe) as scene:
        path = _write_product(scene, tmp_path / "part.tif", Window(24, 36, 96, 72), dtype="float32")
    report = evaluate_product(path, example_safe, FusionEvalOptions(device="cpu"))
    assert report.products[0].region == Window(24, 36, 96, 72)
    assert report.settings["product_radiometry"] == "float reflectance"
    assert _methods(report)[PRODUCT].table.overall.mse == 0


# -- the command ----------------------------------------------------------------------------------


def test_cli_offline_without_weights_keeps_the_baselines(
    example_safe: Path, tmp_path: Path, capsys
) -> None:
    csv_path = tmp_path / "scores.csv"
    code = main(
        [
            "eval",
            "fusion",
            "--data",
            str(example_safe),
            "--device",
            "cpu",
            "--json",
            "-q",
            "--csv",
            str(csv_path),
            "--plot",
            str(tmp_path / "plots"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    methods = result["products"][0]["methods"]
    assert methods["net"]["status"] == "missing" and "weights" in methods["net"]["reason"]
    for method in ("gram-schmidt", "bilinear"):
        assert methods[method]["status"] == "ok"
        assert set(methods[method]["bands"]) == set(BAND_NAMES)
        assert all(
            isinstance(v, float) and math.isfinite(v) for v in methods[method]["overall"].values()
        )
    assert result["settings"]["ergas_ratio"] == {"10m": 4, "20m": 4, "60m": 4}
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    net_rows = [r for r in rows if r["method"] == "net"]
    assert len(net_rows) == 1 and net_rows[0]["status"] == "missing" and net_rows[0]["reason"]
    gs_rows = [r for r in rows if r["method"] == "gram-schmidt"]
    assert len(gs_rows) == 1 + 3 + 12 and all(
        math.isfinite(float(r[m])) for r in gs_rows for m in METRIC_NAMES
    )
    plots = sorted(result["plots"])
    assert len(plots) == 8
    with rasterio.open(next(p for p in plots if p.endswith("_swir_reference.png"))) as png:
        image = png.read()
    assert (
        png.driver == "PNG"
        and image.dtype == np.uint8
        and image.shape == (3, 192, 192)
        and image.max() > 0
    )

    code = main(["eval", "fusion", "--data", str(example_safe), "--device", "cpu", "-q"])
    captured = capsys.readouterr()
    assert code == 0 and "net: missing" in captured.out and "gram-schmidt" in captured.out


def test_cli_with_random_nets_and_product_mode(
    example_safe: Path, tiny_fusion_file: Path, tmp_path: Path, capsys
) -> None:
    code = main(
        [
            "eval",
            "fusion",
            "--data",
            str(example_safe),
            "--fusion-model",
            str(tiny_fusion_file),
            "--device",
            "cpu",
            "--json",
            "-q",
            "--window",
            "0",
            "0",
            "96",
            "96",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["products"][0]["methods"]["net"]["status"] == "ok"

    with open_scene(example_safe) as scene:
        product = _write_product(scene, tmp_path / "product.tif", Window(48, 48, 96, 96))
    code = main(
        [
            "eval",
            "fusion",
            "--product",
            str(product),
            "--source",
            str(example_safe),
            "--device",
            "cpu",
            "--json",
            "-q",
            "--csv",
            str(tmp_path / "p.csv"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)  # strict JSON: an infinite PSNR is the string "inf"
    assert result["products"][0]["methods"]["product"]["overall"]["psnr"] == "inf"
    with (tmp_path / "p.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["method"] == "product"]
    assert float(rows[0]["psnr"]) == math.inf and float(rows[0]["ergas"]) == 0


def _one_line_error(capsys, argv: list[str], needle: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def test_cli_bad_input(example_safe: Path, tmp_path: Path, capsys) -> None:
    safe = str(example_safe)
    _one_line_error(
        capsys, ["eval", "fusion", "--data", str(tmp_path / "nope.SAFE")], "does not exist"
    )
    _one_line_error(capsys, ["eval", "fusion"], "--data")
    _one_line_error(capsys, ["eval", "fusion", "--data", safe, "--product", safe], "not both")
    _one_line_error(capsys, ["eval", "fusion", "--product", safe], "--source")
    _one_line_error(capsys, ["eval", "fusion", "--data", safe, "--block", "100"], "--block 100")
    _one_line_error(
        capsys,
        ["eval", "fusion", "--data", safe, "--window", "500", "500", "10", "10"],
        "does not overlap",
    )
    _one_line_error(
        capsys,
        ["eval", "fusion", "--data", safe, "--window", "0", "0", "12", "12", "--no-net"],
        "too small",
    )
    _one_line_error(
        capsys,
        ["eval", "fusion", "--data", safe, "--fusion-model", str(tmp_path / "missing.safetensors")],
        "missing.safetensors",
    )
    existing = tmp_path / "exists.csv"
    existing.write_text("x")
    _one_line_error(
        capsys, ["eval", "fusion", "--data", safe, "--csv", str(existing)], "--overwrite"
    )

    with open_scene(example_safe) as scene:
        shifted = _write_product(scene, tmp_path / "shifted.tif", shift=0.5)
    _one_line_error(
        capsys, ["eval", "fusion", "--product", str(shifted), "--source", safe], "10 m pixel corner"
    )
    not_a_product = tmp_path / "plain.tif"
    with rasterio.open(
        not_a_product, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint16"
    ) as dst:
        dst.write(np.ones((1, 8, 8), dtype=np.uint16))
    _one_line_error(
        capsys,
        ["eval", "fusion", "--product", str(not_a_product), "--source", safe],
        "no band described",
    )
