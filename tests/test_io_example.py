"""The synthetic example L2A product: structure, determinism, plausible content."""

from __future__ import annotations

from xml.etree import ElementTree

import numpy as np
import pytest
import rasterio

from difffusr_cli.bands import BAND_NAMES, GROUPS
from difffusr_cli.example import make_example_safe, synthetic_reflectance
from difffusr_cli.io import open_scene


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def test_structure_follows_the_l2a_layout(example_safe):
    assert example_safe.name.endswith(".SAFE") and "_MSIL2A_" in example_safe.name
    root = ElementTree.parse(example_safe / "MTD_MSIL2A.xml").getroot()
    assert _local(root.tag) == "Level-2A_User_Product"
    listed = [el.text for el in root.iter() if _local(el.tag) == "IMAGE_FILE"]
    assert listed, "no IMAGE_FILE entries"
    for rel in listed:
        assert (example_safe / f"{rel}.jp2").is_file(), rel
    for name in BAND_NAMES:
        gsd = {"10m": 10, "20m": 20, "60m": 60}[next(g for g, m in GROUPS.items() if name in m)]
        files = list(example_safe.glob(f"GRANULE/*/IMG_DATA/R{gsd}m/T32TMT_*_{name}_{gsd}m.jp2"))
        assert len(files) == 1, name
        with rasterio.open(files[0]) as ds:
            assert (
                ds.driver == "JP2OpenJPEG"
                and ds.dtypes[0] == "uint16"
                and ds.crs.to_epsg() == 32632
            )
    assert list(example_safe.glob("GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2"))
    assert list(example_safe.glob("GRANULE/*/MTD_TL.xml"))
    texts = {_local(el.tag): (el.text or "").strip() for el in root.iter()}
    assert texts["PROCESSING_BASELINE"] == "05.09" and texts["BOA_QUANTIFICATION_VALUE"] == "10000"
    offsets = [el.text for el in root.iter() if _local(el.tag) == "BOA_ADD_OFFSET"]
    assert offsets and all(v == "-1000" for v in offsets)


def test_deterministic_for_a_seed(tmp_path):
    a = synthetic_reflectance(48, seed=3)[0]
    b = synthetic_reflectance(48, seed=3)[0]
    c = synthetic_reflectance(48, seed=4)[0]
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = make_example_safe(tmp_path / "one", size=48, seed=1)
    two = make_example_safe(tmp_path / "two", size=48, seed=1)
    with open_scene(one) as s1, open_scene(two) as s2:
        for group in GROUPS:
            assert np.array_equal(
                s1.read_group(group, s1.full_window).data, s2.read_group(group, s2.full_window).data
            )


def test_size_must_be_a_multiple_of_six(tmp_path):
    with pytest.raises(ValueError, match="multiple of 6"):
        make_example_safe(tmp_path, size=100)


def test_content_is_textured_coherent_and_has_a_nodata_corner(example_safe):
    with open_scene(example_safe) as scene:
        ten = scene.read_group("10m", scene.full_window)
        twenty = scene.read_group("20m", scene.full_window)
        sixty = scene.read_group("60m", scene.full_window)
    # A no-data corner, identical on every grid (whole 60 m pixels), and mostly valid elsewhere.
    assert 0.03 < 1 - ten.valid.mean() < 0.3
    assert not ten.valid[-1, -1] and ten.valid[0, 0]
    assert np.array_equal(np.kron(sixty.valid, np.ones((6, 6), bool)), ten.valid)
    assert np.array_equal(np.kron(twenty.valid, np.ones((2, 2), bool)), ten.valid)
    # Texture: every band varies in space, with local (pixel-to-pixel) detail.
    for block in (ten, twenty):
        for band in block.data:
            values = band[block.valid]
            assert values.std() > 0.01
            assert (
                np.abs(np.diff(band, axis=1))[block.valid[:, 1:] & block.valid[:, :-1]].mean()
                > 0.002
            )
    # Spectral coherence: B8A (20 m) is close to B08 (10 m) averaged over 2 × 2 pixels.
    b08 = ten.data[3].reshape(96, 2, 96, 2).mean(axis=(1, 3))
    b8a = twenty.data[3]
    both = twenty.valid
    assert np.corrcoef(b08[both], b8a[both])[0, 1] > 0.95
    # Reflectance in a plausible range.
    assert ten.data[:, ten.valid].min() >= 0.0 and ten.data.max() < 1.0
