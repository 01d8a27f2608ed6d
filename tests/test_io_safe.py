"""SAFE reader: folder, zip and XML entry points, radiometry, native folders, bad products."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from difffusr_cli.bands import BAND_NAMES, BY_NAME, GROUPS
from difffusr_cli.errors import InputError
from difffusr_cli.io import open_scene


@pytest.fixture()
def safe_copy(example_safe, tmp_path) -> Path:
    """A private copy of the example product, free to damage."""
    return Path(shutil.copytree(example_safe, tmp_path / example_safe.name))


def _zip(safe: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for file in sorted(safe.rglob("*")):
            archive.write(file, Path(safe.name) / file.relative_to(safe))
    return target


def test_metadata_and_radiometry(example_safe):
    with open_scene(example_safe) as scene:
        assert scene.kind == "safe"
        assert scene.tile == "T32TMT"
        assert scene.processing_baseline == "05.09"
        assert scene.datetime.startswith("2023-06-15T10:20:21")
        assert scene.crs.to_epsg() == 32632
        assert (scene.width, scene.height) == (192, 192)
        radiometry = scene.radiometry
        assert radiometry.quantification == 10000
        assert radiometry.offsets == {name: -1000 for name in BAND_NAMES}
        assert "MTD_MSIL2A.xml" in radiometry.source and not radiometry.assumed
        assert scene.scl_path is not None and scene.scl_path.endswith("_SCL_20m.jp2")


def test_each_band_comes_from_its_native_folder(example_safe):
    with open_scene(example_safe) as scene:
        for name in BAND_NAMES:
            gsd = int(BY_NAME[name].gsd)
            assert re.search(rf"/R{gsd}m/[^/]*_{name}_{gsd}m\.jp2$", scene.bands[name].path), name
            assert scene.bands[name].ratio == BY_NAME[name].ratio


def test_reflectance_is_dn_plus_offset_over_quantification(example_safe):
    window = Window(30, 12, 50, 40)
    with open_scene(example_safe) as scene:
        block = scene.read_group("20m", window)
        path = scene.bands["B11"].path
    with rasterio.open(path) as ds:
        dn = ds.read(1, window=block.window).astype(np.float64)
    expected = (dn - 1000) / 10000
    got = block.data[block.bands.index("B11")]
    assert np.allclose(got[block.valid], expected[block.valid], atol=1e-6)
    assert np.array_equal(block.valid, dn > 0)


def test_folder_xml_and_zip_read_the_same(example_safe, tmp_path):
    archive = _zip(example_safe, tmp_path / f"{example_safe.name}.zip")
    window = Window(100, 90, 80, 70)
    with (
        open_scene(example_safe) as ref,
        open_scene(example_safe / "MTD_MSIL2A.xml") as xml,
        open_scene(archive) as zipped,
    ):
        assert zipped.bands["B02"].path.startswith("/vsizip/")
        for other in (xml, zipped):
            assert other.kind == "safe"
            assert other.info()["grid"] == ref.info()["grid"]
            assert other.info()["radiometry"] == ref.info()["radiometry"]
            for group in GROUPS:
                a, b = (
                    ref.read_group(group, window, halo=1),
                    other.read_group(group, window, halo=1),
                )
                assert np.array_equal(a.data, b.data) and np.array_equal(a.valid, b.valid)


def test_level_1c_is_refused(safe_copy, tmp_path):
    l1c = tmp_path / "S2A_MSIL1C_20220101T000000_N0400_R001_T29UNU_20220101T000000.SAFE"
    l1c.mkdir()
    (l1c / "MTD_MSIL1C.xml").write_text("<n1:Level-1C_User_Product xmlns:n1='x'/>")
    for target in (l1c, l1c / "MTD_MSIL1C.xml"):
        with pytest.raises(InputError, match="Level-1C.*Level-2A"):
            open_scene(target)
    xml = safe_copy / "MTD_MSIL2A.xml"
    xml.write_text(xml.read_text().replace("<PRODUCT_TYPE>S2MSI2A<", "<PRODUCT_TYPE>S2MSI1C<"))
    with pytest.raises(InputError, match="Level-1C"):
        open_scene(safe_copy)


def test_products_before_baseline_0400_have_no_offset(safe_copy):
    xml = safe_copy / "MTD_MSIL2A.xml"
    text = re.sub(
        r"<BOA_ADD_OFFSET_VALUES_LIST>.*?</BOA_ADD_OFFSET_VALUES_LIST>",
        "",
        xml.read_text(),
        flags=re.S,
    )
    xml.write_text(text.replace("<PROCESSING_BASELINE>05.09<", "<PROCESSING_BASELINE>03.01<"))
    with open_scene(safe_copy) as scene:
        assert scene.processing_baseline == "03.01"
        assert set(scene.radiometry.offsets.values()) == {0}
        assert scene.radiometry.quantification == 10000


def test_truncated_jp2_fails_clearly(safe_copy):
    jp2 = next(safe_copy.glob("GRANULE/*/IMG_DATA/R20m/*_B11_20m.jp2"))
    data = jp2.read_bytes()
    jp2.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        open_scene(safe_copy)
    message = str(err.value)
    assert message.startswith("cannot read") and jp2.name in message and "\n" not in message


def test_without_10m_bands_the_grid_comes_from_a_coarser_band(example_safe, safe_copy):
    for jp2 in safe_copy.glob("GRANULE/*/IMG_DATA/R10m/*.jp2"):
        jp2.unlink()
    with open_scene(example_safe) as full, open_scene(safe_copy) as partial:
        assert partial.missing_bands == GROUPS["10m"]
        assert (partial.transform, partial.width, partial.height) == (
            full.transform,
            full.width,
            full.height,
        )
        with pytest.raises(InputError, match="B02, B03, B04, B08 not found"):
            partial.require_bands()
        with pytest.raises(InputError, match="B02"):
            partial.read_bands(["B02"], Window(0, 0, 6, 6))
        partial.require_bands(GROUPS["20m"])  # present bands pass


def test_a_folder_that_is_not_a_product(tmp_path):
    empty = tmp_path / "nothing.SAFE"
    empty.mkdir()
    with pytest.raises(InputError, match="no MTD_MSIL2A.xml"):
        open_scene(empty)
    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a zip"):
        open_scene(bogus)
