"""ProductWriter and output_grid: georeferencing, DN convention, metadata, atomic commit, resume."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from difffusr_cli import __version__
from difffusr_cli.bands import BAND_NAMES, BANDS
from difffusr_cli.errors import OutputError
from difffusr_cli.io import (
    ProductWriter,
    check_output_path,
    open_scene,
    output_grid,
    partial_path_for,
)


@pytest.fixture(scope="module")
def product(example_safe):
    """The example scene's 12 bands, nearest-upsampled to 2.5 m: ``(scene, data, valid, dn)``."""
    with open_scene(example_safe) as scene:
        layers, valid, dns = [], np.ones((768, 768), bool), []
        for b in BANDS:
            block = scene.read_bands([b.name], scene.full_window)
            factor = 4 * block.ratio
            layers.append(np.kron(block.data[0], np.ones((factor, factor), np.float32)))
            valid &= np.kron(block.valid, np.ones((factor, factor), bool))
            with rasterio.open(scene.bands[b.name].path) as ds:
                dns.append(np.kron(ds.read(1), np.ones((factor, factor), np.uint16)))
        yield scene, np.stack(layers), valid, np.stack(dns)


def _writer(scene, path: Path, **kwargs) -> ProductWriter:
    transform, width, height = output_grid(scene)
    radiometry = scene.radiometry
    kwargs.setdefault("scale", [radiometry.scale[n] for n in BAND_NAMES])
    kwargs.setdefault("offset", [radiometry.offset[n] for n in BAND_NAMES])
    return ProductWriter(
        path, crs=scene.crs, transform=transform, width=width, height=height, **kwargs
    )


def _write_in_blocks(
    writer: ProductWriter, data: np.ndarray, valid: np.ndarray, step: int = 300, stop_after=None
):
    count = 0
    for row in range(0, data.shape[1], step):
        for col in range(0, data.shape[2], step):
            if stop_after is not None and count == stop_after:
                raise KeyboardInterrupt
            # Windows overhanging the raster are cropped by the writer.
            window = Window(col, row, step, step)
            block = np.zeros((12, step, step), np.float32)
            mask = np.zeros((step, step), bool)
            h, w = min(step, data.shape[1] - row), min(step, data.shape[2] - col)
            block[:, :h, :w] = data[:, row : row + h, col : col + w]
            mask[:h, :w] = valid[row : row + h, col : col + w]
            writer.write(window, block, mask)
            count += 1


def test_output_grid_nests_exactly(example_safe):
    with open_scene(example_safe) as scene:
        transform, width, height = output_grid(scene)
        assert transform == scene.transform @ Affine.scale(0.25)
        assert (transform.c, transform.f) == (scene.transform.c, scene.transform.f)
        assert (transform.a, transform.e) == (2.5, -2.5) and (width, height) == (768, 768)
        sub, w, h = output_grid(scene, Window(10, 20, 30, 40))
        assert (w, h) == (120, 160)
        assert (
            sub.c == scene.transform.c + 100 and sub.f == scene.transform.f - 200 and sub.a == 2.5
        )
        with pytest.raises(ValueError):
            output_grid(scene, Window(0.5, 0, 10, 10))


def test_uint16_round_trip(product, tmp_path):
    scene, data, valid, dn = product
    path = tmp_path / "out.tif"
    tags = {"source_product": scene.product_id, "radiometry": scene.radiometry.source, "seed": 3}
    with _writer(scene, path, tags=tags) as writer:
        assert writer.partial_path == tmp_path / ".out.tif.partial.tif"
        _write_in_blocks(writer, data, valid)
        assert not path.exists()
    assert path.exists() and not partial_path_for(path).exists()
    with rasterio.open(path) as ds:
        assert ds.crs == scene.crs
        assert ds.transform == output_grid(scene)[0]
        assert (ds.width, ds.height, ds.count) == (768, 768, 12)
        assert ds.descriptions == BAND_NAMES and ds.dtypes[0] == "uint16" and ds.nodata == 0
        assert ds.scales == tuple(scene.radiometry.scale[n] for n in BAND_NAMES)
        assert ds.offsets == tuple(scene.radiometry.offset[n] for n in BAND_NAMES)
        assert ds.block_shapes[0] == (512, 512)
        structure = ds.tags(ns="IMAGE_STRUCTURE")
        assert structure["COMPRESSION"] in ("ZSTD", "DEFLATE") and structure.get("PREDICTOR") == "2"
        stored = ds.tags()
        assert stored["difffusr_version"] == __version__ and stored["seed"] == "3"
        assert stored["source_product"] == scene.product_id and "MTD_MSIL2A" in stored["radiometry"]
        written = ds.read()
    # Input DN come back unchanged where every band is valid; nodata stays nodata in all bands.
    assert np.array_equal(written[:, valid], dn[:, valid])
    assert np.all(written[:, ~valid] == 0) and (~valid).any()
    assert written[:, valid].min() >= 1


def test_float32_stores_reflectance_and_nan(product, tmp_path):
    scene, data, valid, _ = product
    path = tmp_path / "float.tif"
    with _writer(scene, path, dtype="float32") as writer:
        _write_in_blocks(writer, data, valid, step=512)
    with rasterio.open(path) as ds:
        assert ds.dtypes[0] == "float32" and math.isnan(ds.nodata)
        assert ds.scales == (1.0,) * 12 and ds.offsets == (0.0,) * 12
        assert ds.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "3"
        written = ds.read()
    assert np.array_equal(written[:, valid], data[:, valid])
    assert np.isnan(written[:, ~valid]).all()


def test_interrupted_write_leaves_no_output_and_resumes(product, tmp_path):
    scene, data, valid, _ = product
    path = tmp_path / "out.tif"
    with pytest.raises(KeyboardInterrupt), _writer(scene, path) as writer:
        _write_in_blocks(writer, data, valid, stop_after=4)
    assert not path.exists() and partial_path_for(path).exists()
    with _writer(scene, path, resume=True) as writer:
        assert writer.resumed
        _write_in_blocks(writer, data, valid)
    reference = tmp_path / "reference.tif"
    with _writer(scene, reference) as writer:
        _write_in_blocks(writer, data, valid)
    with rasterio.open(path) as a, rasterio.open(reference) as b:
        assert np.array_equal(a.read(), b.read())


def test_resume_refuses_a_partial_for_another_grid(product, tmp_path):
    scene, *_ = product
    path = tmp_path / "out.tif"
    _writer(scene, path).abort()
    transform, width, height = output_grid(scene, Window(0, 0, 48, 48))
    with pytest.raises(OutputError, match="cannot resume"):
        ProductWriter(
            path, crs=scene.crs, transform=transform, width=width, height=height, resume=True
        )


def test_existing_output_needs_overwrite(product, tmp_path):
    scene, data, valid, _ = product
    path = tmp_path / "out.tif"
    path.write_bytes(b"previous")
    with pytest.raises(OutputError, match="already exists.*--overwrite"):
        _writer(scene, path)
    assert path.read_bytes() == b"previous"
    with _writer(scene, path, overwrite=True) as writer:
        _write_in_blocks(writer, data, valid, step=768)
    with rasterio.open(path) as ds:
        assert ds.count == 12


def test_output_directory_problems(tmp_path, monkeypatch):
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.tif")
    with pytest.raises(OutputError, match="is a directory"):
        check_output_path(tmp_path)
    with monkeypatch.context() as patch:  # as root, permissions are not enforced: ask os.access
        patch.setattr("difffusr_cli.io.writer.os.access", lambda *args: False)
        with pytest.raises(OutputError, match="not writable"):
            check_output_path(tmp_path / "out.tif")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running with privileges that ignore directory permissions")
        with pytest.raises(OutputError, match="not writable"):
            check_output_path(locked / "out.tif")
    finally:
        locked.chmod(0o700)


def test_cog_output(product, tmp_path):
    scene, data, valid, dn = product
    path = tmp_path / "cog.tif"
    with _writer(scene, path, cog=True, tags={"source_product": scene.product_id}) as writer:
        _write_in_blocks(writer, data, valid, step=400)
    assert not partial_path_for(path).exists() and not list(tmp_path.glob(".*"))
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1)
        assert ds.descriptions == BAND_NAMES and ds.nodata == 0
        assert (
            ds.scales[0] == scene.radiometry.scale["B01"]
            and ds.offsets[0] == scene.radiometry.offset["B01"]
        )
        assert ds.tags()["source_product"] == scene.product_id
        assert ds.transform == output_grid(scene)[0]
        assert np.array_equal(ds.read()[:, valid], dn[:, valid])


def test_write_checks_shapes(product, tmp_path):
    scene, *_ = product
    writer = _writer(scene, tmp_path / "out.tif")
    try:
        with pytest.raises(ValueError, match="do not match"):
            writer.write(
                Window(0, 0, 10, 10), np.zeros((12, 10, 9), np.float32), np.ones((10, 10), bool)
            )
        with pytest.raises(ValueError, match="do not match"):
            writer.write(
                Window(0, 0, 10, 10), np.zeros((3, 10, 10), np.float32), np.ones((10, 10), bool)
            )
    finally:
        writer.abort()


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_a_pixel_non_finite_in_any_band_is_nodata(product, tmp_path, dtype):
    scene, data, valid, _ = product
    piece = data[:, :64, :64].copy()
    ok = valid[:64, :64].copy()
    piece[3, 5, 7], piece[10, 20, 30], piece[0, 40, 2] = np.nan, np.inf, -np.inf
    writer = _writer(scene, tmp_path / "n.tif", dtype=dtype)
    try:
        stored = writer.encode(piece, ok)
        clean = writer.encode(np.nan_to_num(piece, posinf=0, neginf=0), ok)
    finally:
        writer.abort()
    bad = np.zeros_like(ok)
    bad[5, 7] = bad[20, 30] = bad[40, 2] = True
    nodata = (stored == 0).all(axis=0) if dtype == "uint16" else np.isnan(stored).all(axis=0)
    assert nodata[bad].all()  # every band of those pixels
    np.testing.assert_array_equal(nodata, bad | ~ok)  # and nothing else
    np.testing.assert_array_equal(stored[:, ~nodata], clean[:, ~nodata])
