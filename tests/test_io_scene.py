"""Scene reads: native windows, halo, boundless, validity, window-only decoding, GeoTIFF stacks."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.io
from rasterio.windows import Window

from difffusr_cli.bands import BAND_NAMES, GROUPS, RGB
from difffusr_cli.errors import InputError
from difffusr_cli.io import open_scene
from difffusr_cli.io.geotiff import native_window


@pytest.fixture()
def scene(example_safe):
    with open_scene(example_safe) as opened:
        yield opened


@pytest.mark.parametrize(
    ("window", "ratio", "halo", "expected"),
    [
        (Window(0, 0, 192, 192), 1, 0, Window(0, 0, 192, 192)),
        (Window(5, 7, 10, 10), 2, 0, Window(2, 3, 6, 6)),
        (Window(5, 7, 10, 10), 2, 1, Window(1, 2, 8, 8)),
        (Window(5, 7, 10, 10), 6, 0, Window(0, 1, 3, 2)),
        (Window(-7, 0, 7, 6), 6, 2, Window(-4, -2, 6, 5)),
    ],
)
def test_native_window(window, ratio, halo, expected):
    assert native_window(window, ratio, halo) == expected


def test_native_window_needs_whole_pixels():
    with pytest.raises(ValueError):
        native_window(Window(0.5, 0, 10, 10), 2)


def test_block_shapes_and_covered_window(scene):
    window = Window(13, 29, 50, 41)
    for group, ratio in (("10m", 1), ("20m", 2), ("60m", 6)):
        block = scene.read_group(group, window, halo=3)
        expected = native_window(window, ratio, 3)
        assert block.ratio == ratio and block.window == expected
        assert block.bands == GROUPS[group]
        assert block.data.shape == (len(GROUPS[group]), expected.height, expected.width)
        assert block.data.dtype == np.float32 and block.valid.dtype == bool


def test_halo_extends_the_same_pixels(scene):
    inner = scene.read_group("20m", Window(40, 40, 60, 60))
    outer = scene.read_group("20m", Window(40, 40, 60, 60), halo=4)
    assert np.array_equal(outer.data[:, 4:-4, 4:-4], inner.data)


def test_reads_are_boundless(scene):
    block = scene.read_group("10m", Window(-10, -5, 30, 20))
    assert not block.valid[:5].any() and not block.valid[:, :10].any()
    assert np.all(block.data[:, ~block.valid] == 0)
    assert block.valid[5:, 10:].all()
    far = scene.read_group("60m", Window(500, 500, 12, 12), halo=1)
    assert not far.valid.any() and not far.data.any()


def test_nodata_is_invalid_in_every_band(scene):
    block = scene.read_group("20m", scene.full_window)
    assert not block.valid.all()
    assert np.all(block.data[:, ~block.valid] == 0)
    with rasterio.open(scene.bands["B05"].path) as ds:
        assert np.array_equal(ds.read(1) == 0, ~block.valid)


def test_rgb_read_in_network_order(scene):
    block = scene.read_bands(RGB, Window(0, 0, 32, 32))
    single = scene.read_bands(["B02"], Window(0, 0, 32, 32))
    assert block.bands == ("B04", "B03", "B02")
    assert np.array_equal(block.data[2], single.data[0])


def test_bands_of_different_grids_cannot_share_a_block(scene):
    with pytest.raises(InputError, match="not on one grid"):
        scene.read_bands(["B02", "B05"], Window(0, 0, 12, 12))


def test_only_the_blocks_the_window_touches_are_decoded(scene, monkeypatch):
    seen: list[tuple[Window, tuple[int, int], tuple[int, int]]] = []
    original = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        seen.append((kwargs["window"], self.block_shapes[0], self.shape))
        return original(self, *args, **kwargs)

    def check(native: Window) -> None:
        assert seen
        for window, (bh, bw), (height, width) in seen:
            # whole internal blocks (cut at the raster's edge), each touching the window asked for
            assert window.row_off % bh == 0 and window.col_off % bw == 0
            assert window.height == min(bh, height - window.row_off)
            assert window.width % bw == 0 or window.col_off + window.width == width
            assert window.row_off < native.row_off + native.height
            assert native.row_off < window.row_off + window.height
            assert window.col_off < native.col_off + native.width
            assert native.col_off < window.col_off + window.width
        seen.clear()

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    scene.read_group("10m", Window(100, 100, 16, 8), halo=2)
    check(Window(98, 98, 20, 12))
    scene.read_group("10m", Window(180, 0, 30, 10))  # partly outside: only the inside part
    # the blocks are cached now: nothing is decoded again (the example's bands are one block)
    assert not seen
    scene.read_group("20m", Window(180, 0, 30, 10))
    check(Window(90, 0, 6, 5))


def test_reads_from_threads_agree(scene):
    windows = [Window(c, r, 48, 48) for c in (0, 48, 96, 144) for r in (0, 96)]
    expected = [scene.read_group("20m", w).data for w in windows]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = scene.read_group("20m", windows[i]).data

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(windows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(results[i], expected[i]) for i in range(len(windows)))


def _stack(scene, path: Path, names=BAND_NAMES) -> Path:
    """All bands resampled (nearest) to the 10 m grid, in one GeoTIFF with band descriptions."""
    layers = []
    for name in names:
        with rasterio.open(scene.bands[name].path) as ds:
            ratio = scene.bands[name].ratio
            layers.append(np.kron(ds.read(1), np.ones((ratio, ratio), np.uint16)))
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=scene.width,
        height=scene.height,
        count=len(names),
        dtype="uint16",
        crs=scene.crs,
        transform=scene.transform,
        nodata=0,
    ) as dst:
        dst.write(np.stack(layers))
        dst.descriptions = tuple(names)
    return path


def test_multiband_geotiff_is_one_grid(scene, tmp_path):
    stack = _stack(scene, tmp_path / "stack.tif")
    with open_scene(stack, offset=-0.1) as tif:
        assert tif.kind == "geotiff" and tif.found_bands == BAND_NAMES
        assert {tif.bands[n].ratio for n in BAND_NAMES} == {1}
        assert {tif.bands[n].bidx for n in BAND_NAMES} == set(range(1, 13))
        assert (tif.transform, tif.width, tif.height) == (
            scene.transform,
            scene.width,
            scene.height,
        )
        window = Window(12, 24, 36, 30)
        block = tif.read_group("20m", window)
        native = scene.read_group("20m", window)
        assert block.ratio == 1 and block.data.shape == (6, 30, 36)
        assert np.array_equal(
            block.data, np.kron(native.data, np.ones((1, 2, 2), np.float32))[:, 0:30, 0:36]
        )
        assert "user override" in tif.radiometry.source


def test_geotiff_without_band_names(scene, tmp_path):
    path = tmp_path / "plain.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=2,
        dtype="uint16",
        crs=scene.crs,
        transform=scene.transform,
    ) as dst:
        dst.write(np.ones((2, 8, 8), np.uint16))
    with pytest.raises(InputError, match="no band description names a Sentinel-2 band"):
        open_scene(path)


def test_partial_stack_reports_missing_bands(scene, tmp_path):
    stack = _stack(scene, tmp_path / "rgbn.tif", names=("B02", "B03", "B04", "B08"))
    with open_scene(stack) as tif:
        assert tif.found_bands == GROUPS["10m"]
        with pytest.raises(InputError, match="B01, B05, B06, B07, B8A, B09, B11, B12 not found"):
            tif.require_bands()


def test_missing_path_and_unknown_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_scene(tmp_path / "nope.SAFE")
    odd = tmp_path / "notes.txt"
    odd.write_text("x")
    with pytest.raises(InputError, match="not a recognised input"):
        open_scene(odd)


def test_scene_pickles_for_worker_processes(scene):
    window = Window(40, 40, 30, 30)
    expected = scene.read_group("60m", window, halo=1)
    clone = pickle.loads(pickle.dumps(scene))
    try:
        got = clone.read_group("60m", window, halo=1)
        assert np.array_equal(got.data, expected.data) and clone.info() == scene.info()
    finally:
        clone.close()


def test_a_closed_scene_reopens_its_files_on_the_next_read(example_safe):
    """superres checks every input first and closes it until its turn: reads must still work."""
    from rasterio.windows import Window

    from difffusr_cli.io import open_scene

    scene = open_scene(example_safe)
    before = scene.read_group("20m", Window(0, 0, 24, 24))
    scene.close()
    after = scene.read_group("20m", Window(0, 0, 24, 24))
    assert (before.data == after.data).all() and (before.valid == after.valid).all()
    scene.close()
