"""Training data.

High-resolution image folders for ``train rgb``, Sentinel-2 patches for ``train fusion``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from difffusr_cli.bands import BANDS, GROUP_RATIO
from difffusr_cli.errors import InputError
from difffusr_cli.train.data import open_hr_dataset, open_s2_products


def write_image(
    path: Path, data: np.ndarray, *, res: float | None = None, descriptions=None
) -> Path:
    """Write ``(C, H, W)`` as PNG (no georeferencing) or GeoTIFF (UTM, pixel size ``res``)."""
    profile = {
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
    }
    if path.suffix == ".png":
        profile["driver"] = "PNG"
    else:
        profile.update(
            driver="GTiff", crs="EPSG:32633", transform=Affine(res, 0, 500000, 0, -res, 6000000)
        )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = tuple(descriptions)
    return path


def write_s2_product(
    folder: Path, size: int, *, seed: int = 0, nodata_rows: int = 0, skip=()
) -> Path:
    """A folder of single-band GeoTIFFs B01.tif … B12.tif.

    ``size`` px at 10 m, nested 20/60 m grids.

    Reflectance is a smooth random field per band (DN = 10000·ρ); the first ``nodata_rows`` rows
    (10 m) are DN 0 in every band.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.random((size // 6, size // 6))
    field = np.kron(base, np.ones((6, 6))) + 0.05 * rng.random((size, size))
    for band in BANDS:
        if band.name in skip:
            continue
        ratio = band.ratio
        n = size // ratio
        native = field.reshape(n, ratio, n, ratio).mean(axis=(1, 3))
        dn = np.round((0.05 + 0.02 * band.index + 0.2 * native) * 10000).astype(np.uint16)
        if nodata_rows:
            dn[: -(-nodata_rows // ratio)] = 0
        transform = Affine(10.0 * ratio, 0, 300000, 0, -10.0 * ratio, 6200040)
        with rasterio.open(
            folder / f"{band.name}.tif",
            "w",
            driver="GTiff",
            width=n,
            height=n,
            count=1,
            dtype="uint16",
            crs="EPSG:32633",
            transform=transform,
            nodata=0,
        ) as dst:
            dst.write(dn, 1)
    return folder


# ---------------------------------------------------------------------------------------------
# High-resolution RGB


def test_folder_images_are_resampled_to_2_5_m_with_band_order_from_descriptions(tmp_path):
    rng = np.random.default_rng(0)
    bgrn = (rng.random((4, 40, 40)) * 2000).astype(np.uint16)
    write_image(tmp_path / "ms.tif", bgrn, res=1.25, descriptions=("blue", "green", "red", "nir"))
    data = open_hr_dataset("folder", tmp_path, min_size=16)
    (image,) = data.images
    assert image.rgb_bands == (3, 2, 1) and image.gsd == pytest.approx(1.25)
    assert (image.width, image.height) == (20, 20)
    array = data.read(0)
    assert array.shape == (3, 20, 20) and array.dtype == np.float32
    # R is band 3, area-averaged 2×2, uint16 scaled by 1/10000
    expected_red = bgrn[2].reshape(20, 2, 20, 2).mean(axis=(1, 3)) / 10000
    assert np.allclose(array[0], expected_red, atol=1e-4)
    assert any("1 image(s)" in line for line in data.summary())


def test_png_needs_a_declared_gsd_and_uint8_is_scaled_to_unit_range(tmp_path):
    write_image(tmp_path / "a.png", np.full((3, 32, 32), 255, np.uint8))
    with pytest.raises(InputError, match="--gsd"):
        open_hr_dataset("folder", tmp_path, min_size=8)
    data = open_hr_dataset("folder", tmp_path, min_size=8, gsd=1.25)
    assert data.read(0).shape == (3, 16, 16)
    assert np.allclose(data.read(0), 1.0)


def test_small_images_are_skipped_and_reported(tmp_path):
    write_image(tmp_path / "big.png", np.zeros((3, 64, 64), np.uint8))
    write_image(tmp_path / "tiny.png", np.zeros((3, 8, 8), np.uint8))
    data = open_hr_dataset("folder", tmp_path, min_size=32, gsd=2.5)
    assert [im.path.name for im in data.images] == ["big.png"]
    assert any("tiny.png" in line for line in data.summary())
    with pytest.raises(InputError, match="patch"):
        open_hr_dataset("folder", tmp_path, min_size=128, gsd=2.5)


def test_bad_folders_and_files_raise_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_hr_dataset("folder", tmp_path / "missing", min_size=8, gsd=1.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        open_hr_dataset("folder", tmp_path / "empty", min_size=8, gsd=1.0)
    gray = tmp_path / "gray"
    gray.mkdir()
    write_image(gray / "g.png", np.zeros((1, 16, 16), np.uint8))
    with pytest.raises(InputError, match="1 band"):
        open_hr_dataset("folder", gray, min_size=8, gsd=1.0)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="unreadable"):
        open_hr_dataset("folder", broken, min_size=8, gsd=1.0)
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    write_image(coarse / "c.tif", np.zeros((3, 16, 16), np.uint8), res=10.0)
    with pytest.raises(InputError, match="coarser"):
        open_hr_dataset("folder", coarse, min_size=8)
    with pytest.raises(InputError, match="--data"):
        open_hr_dataset("naip", tmp_path, min_size=8)  # type: ignore[arg-type]


def test_sen2naip_uses_hr_tiles_only_and_the_hub_needs_network(tmp_path):
    roi = tmp_path / "roi1"
    roi.mkdir()
    write_image(roi / "hr.tif", np.zeros((4, 32, 32), np.uint8), res=2.5)
    write_image(roi / "lr.tif", np.zeros((4, 8, 8), np.uint8), res=10.0)
    data = open_hr_dataset("sen2naip", tmp_path, min_size=16)
    assert [im.path.name for im in data.images] == ["hr.tif"]
    assert data.harmonize_default
    with pytest.raises(InputError, match="HF_HUB_OFFLINE"):
        open_hr_dataset("sen2naip", None, min_size=16, hub_repo="someone/sen2naip-copy")
    with pytest.raises(InputError, match="--hub-repo"):
        open_hr_dataset("folder", None, min_size=16, hub_repo="someone/x")


def test_worldstrat_takes_pansharpened_tiles_at_1_5_m(tmp_path):
    area = tmp_path / "area1"
    area.mkdir()
    write_image(area / "area1_ps.tif", np.zeros((4, 50, 50), np.uint16), res=1.5)
    write_image(area / "area1_rgbn.tif", np.zeros((4, 13, 13), np.uint16), res=6.0)
    data = open_hr_dataset("worldstrat", tmp_path, min_size=16)
    assert [im.path.name for im in data.images] == ["area1_ps.tif"]
    assert (data.images[0].width, data.images[0].gsd) == (30, 1.5)


def test_shared_hr_rgb_folder(shared_data):
    data = open_hr_dataset("folder", shared_data / "hr_rgb" / "deepforest", min_size=64, gsd=0.5)
    assert len(data) >= 3
    image = data.read(0)
    assert image.shape[0] == 3 and image.min() >= 0.0 and image.max() <= 1.0
    solaris = open_hr_dataset("folder", shared_data / "hr_rgb" / "solaris", min_size=64)
    assert all(im.rgb_bands == (3, 2, 1) for im in solaris.images)  # blue, green, red, nir


# ---------------------------------------------------------------------------------------------
# Sentinel-2 patches


def test_patches_have_nested_shapes_and_validation_is_held_aside(tmp_path):
    first = write_s2_product(tmp_path / "p1", 288, seed=1)
    second = write_s2_product(tmp_path / "p2", 144, seed=2)
    sampler = open_s2_products([first, second], patch=144, max_nodata=0.05, val_fraction=0.2)
    assert [r.scene_index for r in sampler.train_regions] == [0]
    assert [r.scene_index for r in sampler.val_regions] == [1]
    batch = sampler.batch(np.random.default_rng(0), 3, "train")
    assert {g: a.shape for g, a in batch.items()} == {
        "10m": (3, 4, 144, 144),
        "20m": (3, 6, 72, 72),
        "60m": (3, 2, 24, 24),
    }
    assert all(a.dtype == np.float32 for a in batch.values())
    val_a = sampler.batch(np.random.default_rng(5), 2, "val")
    val_b = sampler.batch(np.random.default_rng(5), 2, "val")
    assert all(np.array_equal(val_a[g], val_b[g]) for g in val_a)
    # the 60 m patch is the area average of the 10 m field: the groups show the same ground
    b10, b60 = batch["10m"][0, 0], batch["60m"][0, 0]
    assert np.corrcoef(b10.reshape(24, 6, 24, 6).mean(axis=(1, 3)).ravel(), b60.ravel())[0, 1] > 0.9
    assert any("validation" in line for line in sampler.summary())


def test_single_product_is_split_by_rows(tmp_path):
    product = write_s2_product(tmp_path / "p", 432)
    sampler = open_s2_products([product], patch=144, max_nodata=0.05, val_fraction=0.2)
    (train,), (val,) = sampler.train_regions, sampler.val_regions
    assert train.row1 <= val.row0 and val.row1 - val.row0 >= 144 and train.row1 - train.row0 >= 144
    small = write_s2_product(tmp_path / "small", 144)
    with pytest.raises(InputError, match="validation strip"):
        open_s2_products([small], patch=144, max_nodata=0.05, val_fraction=0.2)


def test_nodata_patches_are_skipped_and_nodata_is_filled_with_the_band_mean(tmp_path):
    product = write_s2_product(tmp_path / "p", 288, nodata_rows=126)
    other = write_s2_product(tmp_path / "q", 144, seed=3)
    sampler = open_s2_products([product, other], patch=144, max_nodata=0.05, val_fraction=0.2)
    rng = np.random.default_rng(0)

    def filled_rows(patch: np.ndarray) -> int:
        # valid rows carry per-pixel noise; a row filled with the band mean is constant
        return int((patch[0].max(axis=1) == patch[0].min(axis=1)).sum())

    strict = sampler.batch(rng, 6, "train")["10m"]
    assert all(filled_rows(p) <= 0.05 * 144 for p in strict)
    lenient = open_s2_products([product, other], patch=144, max_nodata=0.9, val_fraction=0.2)
    batch = lenient.batch(np.random.default_rng(1), 6, "train")
    assert max(filled_rows(p) for p in batch["10m"]) > 0.05 * 144
    assert (batch["60m"] > 0).all() and (batch["10m"] > 0).all()  # filled with the mean, never 0
    hopeless = write_s2_product(tmp_path / "h", 144, nodata_rows=144)
    with pytest.raises(InputError, match="nodata"):
        open_s2_products([hopeless, other], patch=144, max_nodata=0.05, val_fraction=0.2).batch(
            rng, 1, "train"
        )


def test_product_lists_folders_and_missing_bands(tmp_path):
    write_s2_product(tmp_path / "many" / "a", 144, seed=1)
    write_s2_product(tmp_path / "many" / "b", 144, seed=2)
    sampler = open_s2_products([tmp_path / "many"], patch=144, max_nodata=0.05, val_fraction=0.5)
    assert len(sampler.scenes) == 2
    listing = tmp_path / "list.txt"
    listing.write_text("# products\nmany/a\n\nmany/b\n")
    assert (
        len(open_s2_products([listing], patch=144, max_nodata=0.05, val_fraction=0.5).scenes) == 2
    )
    (tmp_path / "bad.txt").write_text("nowhere\n")
    with pytest.raises(InputError, match="does not exist"):
        open_s2_products([tmp_path / "bad.txt"], patch=144, max_nodata=0.05, val_fraction=0.5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no Sentinel-2 product"):
        open_s2_products([tmp_path / "empty"], patch=144, max_nodata=0.05, val_fraction=0.5)
    lacking = write_s2_product(tmp_path / "lacking", 144, skip=("B09",))
    with pytest.raises(InputError, match="B09"):
        open_s2_products([lacking], patch=144, max_nodata=0.05, val_fraction=0.5)
    with pytest.raises(InputError, match="use --patch-size 144 or less"):
        open_s2_products([tmp_path / "many" / "a"], patch=288, max_nodata=0.05, val_fraction=0.5)


def test_product_errors_name_the_real_problem(tmp_path):
    products = tmp_path / "products"
    write_s2_product(products / "a", 144, seed=1)
    listing = tmp_path / "list.txt"
    listing.write_text("# products\nproducts/a\n\nproducts/nowhere\n")
    with pytest.raises(InputError, match=r"list\.txt, line 4: .*nowhere: does not exist"):
        open_s2_products([listing], patch=144, max_nodata=0.05, val_fraction=0.5)
    # too small for the smallest patch: no hint towards a smaller --patch-size
    tiny = write_s2_product(tmp_path / "tiny", 96)
    with pytest.raises(
        InputError, match="too small for training; the smallest patch is 144 px"
    ) as err:
        open_s2_products([tiny, products / "a"], patch=144, max_nodata=0.05, val_fraction=0.5)
    assert "--patch-size" not in str(err.value)


def test_a_truncated_band_file_is_reported_as_unreadable(example_safe, tmp_path):
    import shutil

    safe = shutil.copytree(example_safe, tmp_path / "in" / example_safe.name)
    band = next(safe.rglob("*_B05_20m.jp2"))
    band.write_bytes(band.read_bytes()[: band.stat().st_size // 3])
    for given in (safe, safe.parent):  # the SAFE itself, or a folder of products
        with pytest.raises(InputError, match="cannot read .*B05_20m") as err:
            open_s2_products([given], patch=144, max_nodata=0.05, val_fraction=0.5)
        assert "no Sentinel-2 product" not in str(err.value)


def _stack_scene(safe: Path, path: Path) -> Path:
    """The SAFE's 12 bands repeated onto its 10 m grid, in one GeoTIFF named by band descriptions.

    The PRODUCT_ID tag carries the processing baseline, so both files share their radiometry.
    """
    from difffusr_cli.bands import BAND_NAMES
    from difffusr_cli.io import open_scene

    with open_scene(safe) as scene:
        layers = []
        for name in BAND_NAMES:
            ratio = scene.bands[name].ratio
            with rasterio.open(scene.bands[name].path) as ds:
                layers.append(np.kron(ds.read(1), np.ones((ratio, ratio), ds.dtypes[0])))
        profile = {
            "driver": "GTiff",
            "width": scene.width,
            "height": scene.height,
            "count": len(layers),
            "dtype": layers[0].dtype.name,
            "crs": scene.crs,
            "transform": scene.transform,
            "nodata": 0,
        }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack(layers))
        dst.descriptions = tuple(BAND_NAMES)
        dst.update_tags(PRODUCT_ID=safe.name.removesuffix(".SAFE"))
    return path


@pytest.mark.parametrize("in_memory", [True, False])
def test_stacked_geotiff_gives_the_patches_of_its_safe(
    example_safe, tmp_path, monkeypatch, in_memory
):
    from difffusr_cli.train import data

    if not in_memory:  # patches read window by window instead of sliced from the whole scene
        monkeypatch.setattr(data, "_CACHE_BYTES", 0)
    stack = _stack_scene(example_safe, tmp_path / "stack.tif")
    batches = []
    for product in (example_safe, stack):
        sampler = open_s2_products([product, product], patch=144, max_nodata=0.5, val_fraction=0.5)
        batches.append(sampler.batch(np.random.default_rng(3), 4, "train"))
    safe_batch, stack_batch = batches
    for group in GROUP_RATIO:
        assert safe_batch[group].shape == stack_batch[group].shape
        assert safe_batch[group].shape[-1] * GROUP_RATIO[group] == 144
        np.testing.assert_allclose(stack_batch[group], safe_batch[group], rtol=0, atol=1e-6)


def test_shared_dsen2_products(shared_data):
    products = [shared_data / "dsen2_T33UUB", shared_data / "dsen2_T49JGM"]
    sampler = open_s2_products(products, patch=144, max_nodata=0.05, val_fraction=0.5)
    batch = sampler.batch(np.random.default_rng(0), 2, "train")
    assert batch["20m"].shape == (2, 6, 72, 72)
    assert 0.0 < float(batch["10m"].mean()) < 1.0
    assert GROUP_RATIO["60m"] * batch["60m"].shape[-1] == 144
