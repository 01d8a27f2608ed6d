"""`difffusr superres` through the CLI entry point: a real run, and every bad input giving exit
code 2 with one clear line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from pipeline_helpers import read_product, write_random_models

from difffusr_cli.bands import BAND_NAMES
from difffusr_cli.cli import main
from difffusr_cli.example import make_example_safe
from difffusr_cli.io import open_scene


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    rgb, _ = write_random_models(tmp_path_factory.mktemp("models"))
    return make_example_safe(tmp_path_factory.mktemp("scene"), size=48), rgb


def fast_args(rgb: Path) -> list[str]:
    return [
        "--rgb-model",
        str(rgb),
        "--fusion",
        "bilinear",
        "--steps",
        "2",
        "--patch-size",
        "32",
        "--overlap",
        "8",
        "--device",
        "cpu",
        "--window",
        "0",
        "0",
        "24",
        "24",
    ]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no message on stderr"
    return err[-1]


def test_superres_writes_a_product_and_a_summary(setup, tmp_path, capsys):
    safe, rgb = setup
    out = tmp_path / "out.tif"
    assert (
        main(
            [
                "superres",
                str(safe),
                "-o",
                str(out),
                *fast_args(rgb),
                "--dtype",
                "float32",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "patches/s" in err and "peak memory" in err and str(out) in err.replace("\n", "")
    data, meta = read_product(out)
    assert (
        data.shape == (12, 96, 96)
        and meta["dtype"] == "float32"
        and meta["descriptions"] == BAND_NAMES
    )
    assert meta["tags"]["seed"] == "3" and np.isfinite(data).all()

    # An existing output is never touched without --overwrite (and --resume finds it complete).
    before = out.read_bytes()
    assert main(["superres", str(safe), "-o", str(out), *fast_args(rgb), "--quiet"]) == 2
    assert "already exists" in error_line(capsys) and out.read_bytes() == before
    same = [*fast_args(rgb), "--dtype", "float32", "--seed", "3", "--quiet", "--resume"]
    assert main(["superres", str(safe), "-o", str(out), *same]) == 0
    assert out.read_bytes() == before
    # --resume keeps a complete product only when it was made with the same settings
    assert main(["superres", str(safe), "-o", str(out), *fast_args(rgb), "-q", "--resume"]) == 2
    assert "other settings" in error_line(capsys) and out.read_bytes() == before
    assert (
        main(
            [
                "superres",
                str(safe),
                "-o",
                str(out),
                *fast_args(rgb),
                "--quiet",
                "--overwrite",
                "--cog",
            ]
        )
        == 0
    )
    assert read_product(out)[0].dtype == np.uint16
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_missing_band_and_unreadable_file(setup, tmp_path, capsys):
    safe, rgb = setup
    broken = shutil.copytree(safe, tmp_path / safe.name)
    b05 = next(broken.rglob("*_B05_20m.jp2"))
    b05.unlink()
    assert main(["superres", str(broken), "-o", str(tmp_path / "a.tif"), *fast_args(rgb)]) == 2
    line = error_line(capsys)
    assert line.startswith("error: ") and "B05" in line and "not found" in line

    truncated = shutil.copytree(safe, tmp_path / "t" / safe.name)
    jp2 = next(truncated.rglob("*_B04_10m.jp2"))
    jp2.write_bytes(jp2.read_bytes()[:200])
    assert main(["superres", str(truncated), "-o", str(tmp_path / "b.tif"), *fast_args(rgb)]) == 2
    line = error_line(capsys)
    assert line.startswith("error: ") and "B04" in line
    assert not (tmp_path / "a.tif").exists() and not (tmp_path / "b.tif").exists()


def test_shared_safe_without_10m_bands_is_refused(shared_data, tmp_path, capsys):
    safe = next(shared_data.glob("*.SAFE"))
    assert main(["superres", str(safe), "-o", str(tmp_path / "o.tif"), "--fusion", "bilinear"]) == 2
    assert "B02" in error_line(capsys)


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--resume", "--overwrite"], "not both"),
        (["--bbox", "0", "0", "1", "1"], "not both"),  # with fast_args' --window
        (["--fusion", "gs", "--fusion-model", "x.safetensors"], "--fusion-model"),
        (["--patch-size", "30"], "--patch-size"),
        (["--fusion", "sharpest"], "sharpest"),
        (["--precision", "fp16"], "fp16"),
        (["--device", "tpu"], "tpu"),
        (["--rgb-model", "/no/such/weights.safetensors"], "no such weights file"),
        (["--steps", "1"], "--steps"),
        (["--offset", "-1000"], "--scale 0.0001 --offset -0.1"),  # a DN offset, not reflectance
        (["--scale", "10000"], "--scale"),
    ],
)
def test_bad_options_exit_2_with_one_line(setup, tmp_path, capsys, extra, match):
    safe, rgb = setup
    assert (
        main(["superres", str(safe), "-o", str(tmp_path / "o.tif"), *fast_args(rgb), *extra]) == 2
    )
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists()


def test_bad_places_exit_2(setup, tmp_path, capsys):
    safe, rgb = setup
    assert (
        main(["superres", str(safe), "-o", str(tmp_path / "no" / "dir" / "o.tif"), *fast_args(rgb)])
        == 2
    )
    assert "does not exist" in error_line(capsys)
    assert (
        main(["superres", str(safe), str(safe), "-o", str(tmp_path / "x.tif"), *fast_args(rgb)])
        == 2
    )
    assert "folder" in error_line(capsys)
    assert main(["superres", str(safe), "-o", str(tmp_path / "x.jp2"), *fast_args(rgb)]) == 2
    line = error_line(capsys)
    assert line.startswith("error: ") and ".tif" in line and not (tmp_path / "x.jp2").exists()
    args = [a for a in fast_args(rgb) if a not in ("--window",)][:-4]  # drop the window
    assert (
        main(
            [
                "superres",
                str(safe),
                "-o",
                str(tmp_path / "w.tif"),
                *args,
                "--window",
                "500",
                "500",
                "10",
                "10",
            ]
        )
        == 2
    )
    assert "does not overlap" in error_line(capsys)
    assert (
        main(
            [
                "superres",
                str(tmp_path / "nothing.SAFE"),
                "-o",
                str(tmp_path / "n.tif"),
                *fast_args(rgb),
            ]
        )
        == 2
    )
    assert "does not exist" in error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_unavailable_gpu_is_a_clear_error(setup, tmp_path, capsys):
    safe, rgb = setup
    assert (
        main(
            [
                "superres",
                str(safe),
                "-o",
                str(tmp_path / "o.tif"),
                *fast_args(rgb)[:-5],
                "--device",
                "cuda",
            ]
        )
        == 2
    )
    assert "no CUDA GPU" in error_line(capsys)


@pytest.mark.slow
def test_shared_dsen2_scene_with_compat_weights(shared_data, compat, tmp_path, capsys):
    """The DSen2 COG folder (Level-1C DN, no offset) with the compat small weights, on a window."""
    scene_dir = shared_data / "dsen2_T33UUB"
    out = tmp_path / "dsen2.tif"
    args = [
        "superres",
        str(scene_dir),
        "-o",
        str(out),
        "--rgb-model",
        str(compat / "sr_small.safetensors"),
        "--fusion-model",
        str(compat / "fusion_rrdb_small.safetensors"),
        "--steps",
        "2",
        "--patch-size",
        "64",
        "--overlap",
        "16",
        "--device",
        "cpu",
        "--window",
        "0",
        "0",
        "36",
        "36",
        "--quiet",
    ]
    assert main(args) == 0
    assert "Level-1C" in capsys.readouterr().err  # processed, but never silently
    data, meta = read_product(out)
    scene = open_scene(scene_dir)
    assert data.shape == (12, 144, 144) and meta["crs"] == scene.crs
    assert (meta["transform"].c, meta["transform"].f, meta["transform"].a) == (
        scene.transform.c,
        scene.transform.f,
        2.5,
    )
    assert np.all(data > 0)  # no nodata in this scene
    assert meta["tags"]["fusion_model"].endswith("fusion_rrdb_small.safetensors")

    # Radiometry round trip (bilinear fusion): a 20 m band averaged back matches the input.
    assert main([*args[:6], "--fusion", "bilinear", *args[8:], "--overwrite"]) == 0
    data, _ = read_product(out)
    b8a = scene.read_bands(["B8A"], scene.full_window).data[0][:18, :18]
    fused = (
        data[BAND_NAMES.index("B8A")].astype(np.float64).reshape(18, 8, 18, 8).mean(axis=(1, 3))
        * 1e-4
    )
    assert np.abs(fused - b8a)[1:-1, 1:-1].mean() < 0.01
