"""Folder of single-band files: naming, radiometry from tags or assumed, overrides, grid nesting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from difffusr_cli.bands import BAND_NAMES, GROUPS
from difffusr_cli.errors import InputError
from difffusr_cli.example import write_example_cogs
from difffusr_cli.io import open_scene
from difffusr_cli.io.cogs import band_of_file

WINDOW = Window(20, 30, 120, 100)


@pytest.fixture(scope="module")
def cog_dir(example_safe, tmp_path_factory) -> Path:
    return write_example_cogs(example_safe, tmp_path_factory.mktemp("cogs"))


def _rewrite(
    path: Path,
    *,
    transform: Affine | None = None,
    crs: str | None = None,
    tags: bool = True,
    product_tags: bool = True,
    scale_by: int = 1,
) -> None:
    """Rewrite a single-band file with another transform / CRS / resolution, or without its
    scale/offset (``tags``) or dataset tags (``product_tags``)."""
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read(1)
        scale, offset = src.scales[0], src.offsets[0]
        dataset_tags = src.tags()
    if scale_by > 1:
        data = np.kron(data, np.ones((scale_by, scale_by), dtype=data.dtype))
        t = profile["transform"]
        profile.update(
            width=data.shape[1], height=data.shape[0], transform=t @ Affine.scale(1 / scale_by)
        )
    profile.update(driver="GTiff")
    profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
    if transform is not None:
        profile["transform"] = transform
    if crs is not None:
        profile["crs"] = crs
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        if product_tags:
            dst.update_tags(**dataset_tags)
        if tags:
            dst.scales, dst.offsets = (scale,), (offset,)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("B02.tif", ("B02", None)),
        ("b8a.TIF", ("B8A", None)),
        ("B2.tif", ("B02", None)),
        ("T33UUB_20170527T102031_B02_10m.jp2", ("B02", 10)),
        ("T33UUB_20170527T102031_B8A.tif", ("B8A", None)),
        ("nir08.tif", ("B8A", None)),
        ("swir16.tif", ("B11", None)),
        ("coastal.tif", ("B01", None)),
        ("T33UUB_20170527T102031_SCL_20m.jp2", None),
        ("B10.tif", None),
        ("visual.tif", None),
        ("B02.json", None),
    ],
)
def test_file_names(name, expected):
    assert band_of_file(Path(name)) == expected


@pytest.mark.parametrize("naming", ["band", "earth-search", "long"])
def test_cogs_read_like_the_safe(example_safe, tmp_path, naming):
    folder = write_example_cogs(example_safe, tmp_path / naming, naming=naming)
    with open_scene(example_safe) as safe, open_scene(folder) as cogs:
        assert cogs.kind == "cog-dir" and cogs.found_bands == BAND_NAMES
        assert (cogs.transform, cogs.width, cogs.height, cogs.crs) == (
            safe.transform,
            safe.width,
            safe.height,
            safe.crs,
        )
        assert cogs.radiometry.offsets == safe.radiometry.offsets
        assert "scale/offset metadata" in cogs.radiometry.source
        assert cogs.tile == "T32TMT" and cogs.processing_baseline == "05.09"
        for group in GROUPS:
            a, b = safe.read_group(group, WINDOW, halo=2), cogs.read_group(group, WINDOW, halo=2)
            assert np.array_equal(a.data, b.data) and np.array_equal(a.valid, b.valid)


def test_untagged_files_assume_the_l2a_convention_and_say_so(cog_dir, tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    for name in ("B02", "B03"):
        target = folder / f"{name}.tif"
        target.write_bytes((cog_dir / f"{name}.tif").read_bytes())
        _rewrite(target, tags=False)
    with open_scene(folder) as scene:
        assert scene.radiometry.assumed
        assert (
            "assumed" in scene.radiometry.source and "--scale/--offset" in scene.radiometry.source
        )
        # The PRODUCT_ID tag tells baseline 05.09, so the assumed offset is -1000 DN.
        assert scene.radiometry.offsets["B02"] == -1000
        raw = scene.read_bands(["B02"], WINDOW)
    with open_scene(folder, scale=2e-4, offset=0.0) as scene:
        assert scene.radiometry.overridden and not scene.radiometry.assumed
        assert "user override" in scene.radiometry.source
        assert scene.radiometry.quantification == 5000 and scene.radiometry.offsets["B02"] == 0
        overridden = scene.read_bands(["B02"], WINDOW)
    dn = (raw.data[0] + 0.1) * 1e4
    assert np.allclose(overridden.data[0][raw.valid], (dn * 2e-4)[raw.valid], atol=1e-5)
    with open_scene(folder, offset=-0.05) as scene:
        assert (
            scene.radiometry.offsets["B02"] == -500 and "--offset -0.05" in scene.radiometry.source
        )
    # Without any hint of the processing baseline, no offset is assumed.
    for name in ("B02", "B03"):
        _rewrite(folder / f"{name}.tif", tags=False, product_tags=False)
    with open_scene(folder) as scene:
        assert (
            scene.radiometry.offsets["B02"] == 0
            and "no processing baseline known" in scene.radiometry.source
        )


def test_bad_overrides_are_input_errors(cog_dir):
    with pytest.raises(InputError, match="--scale"):
        open_scene(cog_dir, scale=0.0)
    with pytest.raises(InputError, match="--offset"):
        open_scene(cog_dir, offset=float("nan"))
    # DN-valued numbers (BOA_ADD_OFFSET, QUANTIFICATION_VALUE) would saturate every band.
    with pytest.raises(InputError, match=r"reflectance units.*--scale 0\.0001 --offset -0\.1"):
        open_scene(cog_dir, offset=-1000)
    with pytest.raises(InputError, match="--offset"):
        open_scene(cog_dir, scale=1e-4, offset=1.0)
    with pytest.raises(InputError, match=r"--scale 10000.*--scale 0\.0001"):
        open_scene(cog_dir, scale=10000)
    with open_scene(cog_dir, scale=1.0, offset=-0.999) as scene:  # the edges are allowed
        assert scene.radiometry.overridden


def test_product_id_comes_from_the_files_tag(cog_dir, tmp_path):
    folder = _copy(cog_dir, tmp_path)
    with rasterio.open(cog_dir / "B02.tif") as src:
        tagged = src.tags()["PRODUCT_ID"]
    with open_scene(folder) as scene:
        assert scene.product_id == tagged != folder.name
    for file in folder.glob("*.tif"):
        _rewrite(file, product_tags=False)
    with open_scene(folder) as scene:
        assert scene.product_id == folder.name  # no tag: the folder's name stands in


def test_folder_without_bands(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "SCL_20m.tif").write_bytes(b"")
    with pytest.raises(InputError, match="no Sentinel-2 band files recognised"):
        open_scene(tmp_path)


def test_two_files_for_one_band(cog_dir, tmp_path):
    folder = tmp_path / "dup"
    folder.mkdir()
    for name in ("B02.tif", "blue.tif"):
        (folder / name).write_bytes((cog_dir / "B02.tif").read_bytes())
    with pytest.raises(InputError, match="several files for band B02"):
        open_scene(folder)


def _copy(cog_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    folder.mkdir(parents=True)
    for file in cog_dir.glob("*.tif"):
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


def test_shifted_origin_does_not_nest(cog_dir, tmp_path):
    folder = _copy(cog_dir, tmp_path)
    with rasterio.open(folder / "B05.tif") as src:
        t = src.transform
    _rewrite(folder / "B05.tif", transform=Affine(t.a, 0, t.c + 7.0, 0, t.e, t.f))
    with pytest.raises(InputError, match=r"band B05 .*origin.*do not nest"):
        open_scene(folder)


def test_sub_tolerance_origin_difference_nests(cog_dir, tmp_path):
    folder = _copy(cog_dir, tmp_path)
    with rasterio.open(folder / "B05.tif") as src:
        t = src.transform
    _rewrite(folder / "B05.tif", transform=Affine(t.a, 0, t.c + 0.5, 0, t.e, t.f - 0.5))
    with open_scene(folder) as scene:
        assert scene.bands["B05"].ratio == 2


def test_wrong_pixel_size_or_crs_does_not_nest(cog_dir, tmp_path):
    folder = _copy(cog_dir, tmp_path)
    with rasterio.open(folder / "B09.tif") as src:
        t = src.transform
    _rewrite(folder / "B09.tif", transform=Affine(30.0, 0, t.c, 0, -30.0, t.f))
    with pytest.raises(InputError, match=r"band B09 .*pixel size 30.*do not nest"):
        open_scene(folder)
    folder2 = _copy(cog_dir, tmp_path / "b")
    _rewrite(folder2 / "B12.tif", crs="EPSG:32633")
    with pytest.raises(InputError, match=r"band B12 .*do not nest"):
        open_scene(folder2)


def test_band_resampled_to_10m_is_accepted_per_group(cog_dir, tmp_path):
    folder = _copy(cog_dir, tmp_path)
    for name in GROUPS["60m"]:
        _rewrite(folder / f"{name}.tif", scale_by=6)
    with open_scene(folder) as scene, open_scene(cog_dir) as native:
        assert scene.bands["B01"].ratio == 1 and scene.bands["B05"].ratio == 2
        block = scene.read_group("60m", Window(6, 6, 12, 12))
        assert block.ratio == 1 and block.data.shape == (2, 12, 12)
        coarse = native.read_group("60m", Window(6, 6, 12, 12))
        assert np.array_equal(block.data, np.kron(coarse.data, np.ones((1, 6, 6), np.float32)))
    _rewrite(folder / "B05.tif", scale_by=2)  # one 20 m band at 10 m, the others at 20 m
    with pytest.raises(InputError, match="20m bands are not on one grid"):
        open_scene(folder)
