"""Input integrity (issue 10): unusable radiometry metadata, floating-point reflectance, unclear
messages (null href, no CRS, off-grid band), non-UTF-8 paths, and ``Scene.read_native``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from difffusr_cli.bands import BAND_NAMES, GROUPS
from difffusr_cli.cli import main
from difffusr_cli.errors import InputError
from difffusr_cli.example import write_example_cogs, write_example_stac
from difffusr_cli.io.scene import open_scene


def _fails_cleanly(capsys, *args, needle: str) -> str:
    code = main(["info", *map(str, args)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and needle in lines[0], lines[0]
    return lines[0]


def _info_json(capsys, *args) -> dict:
    code = main(["info", "--json", *map(str, args)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def cogs(example_safe, tmp_path_factory) -> Path:
    """The example product as a COG folder (read-only: copy before changing)."""
    return write_example_cogs(example_safe, tmp_path_factory.mktemp("cogs") / "cogs")


def _safe_with_metadata(example_safe: Path, tmp_path: Path, edit) -> Path:
    """A SAFE whose MTD_MSIL2A.xml is ``edit(text)``; the image folders are symlinked."""
    safe = tmp_path / example_safe.name
    safe.mkdir()
    for child in example_safe.iterdir():
        if child.name != "MTD_MSIL2A.xml":
            (safe / child.name).symlink_to(child)
    text = (example_safe / "MTD_MSIL2A.xml").read_text()
    (safe / "MTD_MSIL2A.xml").write_text(edit(text))
    return safe


BAD_NUMBERS = ["nan", "inf", "-inf", "abc", "null", ""]


@pytest.mark.parametrize("value", [*BAD_NUMBERS, "0", "-10000"])
def test_bad_quantification_value(capsys, example_safe, tmp_path, value):
    def edit(text: str) -> str:
        return re.sub(
            r"(<BOA_QUANTIFICATION_VALUE[^>]*>)[^<]*(<)", rf"\g<1>{value}\g<2>", text, count=1
        )

    safe = _safe_with_metadata(example_safe, tmp_path, edit)
    line = _fails_cleanly(capsys, safe, needle="BOA_QUANTIFICATION_VALUE")
    assert "MTD_MSIL2A.xml" in line


@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_bad_boa_add_offset(capsys, example_safe, tmp_path, value):
    def edit(text: str) -> str:
        return text.replace(
            '<BOA_ADD_OFFSET band_id="3">-1000</BOA_ADD_OFFSET>',
            f'<BOA_ADD_OFFSET band_id="3">{value}</BOA_ADD_OFFSET>',
        )

    safe = _safe_with_metadata(example_safe, tmp_path, edit)
    line = _fails_cleanly(capsys, safe, needle="BOA_ADD_OFFSET band_id=3")
    assert "MTD_MSIL2A.xml" in line


def test_zero_boa_add_offset_is_fine(capsys, example_safe, tmp_path):
    def edit(text: str) -> str:
        return text.replace(
            '<BOA_ADD_OFFSET band_id="3">-1000</BOA_ADD_OFFSET>',
            '<BOA_ADD_OFFSET band_id="3">0</BOA_ADD_OFFSET>',
        )

    info = _info_json(capsys, _safe_with_metadata(example_safe, tmp_path, edit))
    assert info["radiometry"]["offsets"]["B04"] == 0


def _stac_with(cogs: Path, tmp_path: Path, edit) -> Path:
    item_path = write_example_stac(cogs, tmp_path / "item.json")
    item = json.loads(item_path.read_text())
    edit(item)
    item_path.write_text(json.dumps(item))  # NaN / Infinity are written as JSON allows
    return item_path


@pytest.mark.parametrize("key", ["scale", "offset"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "abc", None, "", True], ids=repr)
def test_bad_stac_scale_offset(capsys, cogs, tmp_path, key, value):
    def edit(item: dict) -> None:
        item["assets"]["B05"]["raster:bands"][0][key] = value

    line = _fails_cleanly(capsys, _stac_with(cogs, tmp_path, edit), needle="item.json")
    assert "'B05'" in line and key in line


@pytest.mark.parametrize("value", [0, -0.0001])
def test_stac_scale_not_positive(capsys, cogs, tmp_path, value):
    def edit(item: dict) -> None:
        item["assets"]["B05"]["raster:bands"][0]["scale"] = value

    line = _fails_cleanly(capsys, _stac_with(cogs, tmp_path, edit), needle="scale is")
    assert "'B05'" in line and "item.json" in line


def test_null_stac_href(capsys, cogs, tmp_path):
    def edit(item: dict) -> None:
        item["assets"]["B8A"]["href"] = None

    line = _fails_cleanly(capsys, _stac_with(cogs, tmp_path, edit), needle="no usable href")
    assert "'B8A'" in line and "None" not in line


def _rewrite(path: Path, *, transform: Affine | None = None, crs=..., data=None, **extra) -> None:
    """Rewrite a single-band GeoTIFF with a changed transform, CRS, data or profile items."""
    with rasterio.open(path) as src:
        profile, pixels = src.profile, src.read()
        description = src.descriptions
    profile.update(driver="GTiff", **extra)
    if transform is not None:
        profile["transform"] = transform
    if crs is not ...:
        profile["crs"] = crs
    if data is not None:
        pixels = data
        profile["dtype"] = data.dtype.name
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
        dst.descriptions = description


def _copy_cogs(cogs: Path, target: Path) -> Path:
    target.mkdir()
    for f in cogs.glob("*.tif"):
        (target / f.name).write_bytes(f.read_bytes())
    return target


def test_band_without_crs(capsys, cogs, tmp_path):
    folder = _copy_cogs(cogs, tmp_path / "cogs")
    _rewrite(folder / "B03.tif", crs=None)
    line = _fails_cleanly(capsys, folder, needle="no coordinate reference system")
    assert "B03" in line and "None" not in line


def test_shifted_b02_is_the_band_blamed(capsys, cogs, tmp_path):
    folder = _copy_cogs(cogs, tmp_path / "cogs")
    with rasterio.open(folder / "B02.tif") as src:
        t = src.transform
    _rewrite(folder / "B02.tif", transform=Affine(t.a, 0, t.c + 5, 0, t.e, t.f))
    line = _fails_cleanly(capsys, folder, needle="do not nest")
    assert "band B02" in line and "B04's" in line and "B01" not in line
    assert "(0.50, 0.00) reference pixels" in line and "5 m" in line


def _float_cogs(cogs: Path, target: Path, *, tagged: bool) -> Path:
    """The COGs as float32 reflectance; ``tagged`` keeps a scale/offset 1e-4/-0.1 on B04."""
    folder = _copy_cogs(cogs, target)
    for f in folder.glob("*.tif"):
        with rasterio.open(f) as src:
            dn = src.read().astype(np.float32)
        refl = np.where(dn == 0, 0, (dn - 1000) / 10000).astype(np.float32)
        keep_dn = tagged and f.stem == "B04"
        _rewrite(f, data=dn if keep_dn else refl, nodata=0)
        with rasterio.open(f, "r+") as dst:
            dst.scales, dst.offsets = ((1e-4,), (-0.1,)) if keep_dn else ((1.0,), (0.0,))
    return folder


def test_float_bands_are_reflectance(capsys, example_safe, cogs, tmp_path):
    folder = _float_cogs(cogs, tmp_path / "float", tagged=False)
    info = _info_json(capsys, folder)
    for entry in info["bands"]:
        assert entry["dtype"] == "float32" and entry["convention"] == "reflectance"
    assert info["radiometry"]["scale"]["B04"] == 1.0 and info["radiometry"]["offset"]["B04"] == 0
    assert "floating-point" in info["radiometry"]["source"]
    window = Window(0, 0, 192, 192)
    with open_scene(folder) as floats, open_scene(example_safe) as dns:
        got = floats.read_bands(["B04"], window)
        want = dns.read_bands(["B04"], window)
    assert np.array_equal(got.valid, want.valid)
    np.testing.assert_allclose(got.data, want.data, atol=1e-6)
    assert 0.05 < float(got.data[0][got.valid].mean()) < 1.0
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "float32 reflectance" in out and "floating-point bands" in out


def test_float_band_with_scale_tags_is_dn(capsys, cogs, tmp_path):
    info = _info_json(capsys, _float_cogs(cogs, tmp_path / "float", tagged=True))
    bands = {b["name"]: b for b in info["bands"]}
    assert bands["B04"]["dtype"] == "float32" and bands["B04"]["convention"] == "dn"
    assert info["radiometry"]["scale"]["B04"] == pytest.approx(1e-4)
    assert bands["B03"]["convention"] == "reflectance"


def test_uint16_bands_report_dtype(capsys, example_safe):
    info = _info_json(capsys, example_safe)
    assert {(b["dtype"], b["convention"]) for b in info["bands"]} == {("uint16", "dn")}
    assert main(["info", str(example_safe)]) == 0
    assert "uint16 DN" in capsys.readouterr().out


def test_non_utf8_path(capsys, cogs, tmp_path):
    folder = tmp_path / os.fsdecode(b"scene-\xff")
    _copy_cogs(cogs, folder)
    line = _fails_cleanly(capsys, folder, needle="not valid UTF-8")
    assert "scene-\\xff" in line
    with pytest.raises(InputError, match="not valid UTF-8"):
        open_scene(folder)
    with pytest.raises(InputError, match="not valid UTF-8"):
        open_scene(os.fsencode(folder).decode("utf-8", "surrogateescape"))


def test_read_native_matches_read_bands(example_safe):
    window = Window(12, 24, 36, 60)
    with open_scene(example_safe) as scene:
        for group, ratio in (("10m", 1), ("20m", 2), ("60m", 6)):
            data, valid = scene.read_native(group, window)
            block = scene.read_group(group, window)
            assert data.shape == (len(GROUPS[group]), 60 // ratio, 36 // ratio)
            assert data.dtype == np.float32 and valid.shape == data.shape[1:]
            np.testing.assert_array_equal(data, block.data)
        data, _ = scene.read_native(["B11", "B05"], window)
        np.testing.assert_array_equal(data, scene.read_bands(["B11", "B05"], window).data)
        with pytest.raises(ValueError, match="native resolution"):
            scene.read_native(["B04", "B05"], window)


def test_read_native_averages_a_stack(example_safe, tmp_path):
    with open_scene(example_safe) as scene:
        layers = [
            np.kron(scene.read_bands([n], scene.full_window).data[0], np.ones((r, r)))
            for n, r in ((n, scene.bands[n].ratio) for n in BAND_NAMES)
        ]
        profile = {
            "driver": "GTiff",
            "width": 192,
            "height": 192,
            "count": 12,
            "dtype": "float32",
            "crs": scene.crs,
            "transform": scene.transform,
        }
        want, want_valid = scene.read_native("20m", Window(0, 0, 48, 48))
    stack = tmp_path / "stack.tif"
    with rasterio.open(stack, "w", **profile) as dst:
        dst.write(np.stack(layers).astype(np.float32))
        dst.descriptions = tuple(BAND_NAMES)
    with open_scene(stack) as tif:
        data, valid = tif.read_native("20m", Window(0, 0, 48, 48))
    assert data.shape == (6, 24, 24)
    np.testing.assert_array_equal(valid, want_valid)
    np.testing.assert_allclose(data[:, valid], want[:, want_valid], atol=1e-6)


def test_report_is_plain_data(example_safe):
    from difffusr_cli.io import report

    source = Path(report.__file__).read_text()
    assert "import rich" not in source and "from rich" not in source
    info = report.collect_info(example_safe)
    rows = report.band_rows(info)
    assert [r["band"] for r in rows] == list(BAND_NAMES)
    assert all(isinstance(r[c], str) for r in rows for c in report.BAND_COLUMNS)
    assert rows[0]["data"] == "uint16 DN"
    assert any("radiometry from" in line for line in report.footer_lines(info))


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -1e-4])
def test_bad_file_scale_tags(capsys, cogs, tmp_path, scale):
    folder = _copy_cogs(cogs, tmp_path / "cogs")
    with rasterio.open(folder / "B11.tif", "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
        dst.scales = (scale,)
    line = _fails_cleanly(capsys, folder, needle="B11.tif band 1")
    assert "scale" in line


def test_non_utf8_path_through_the_console_script(cogs, tmp_path):
    import subprocess
    import sys

    folder = os.path.join(os.fsencode(tmp_path), b"scene-\xff")
    os.mkdir(folder)
    result = subprocess.run(
        [os.fsencode(sys.executable), b"-m", b"difffusr_cli.cli", b"info", folder],
        capture_output=True,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
    err = result.stderr.decode("utf-8", "replace").strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, err
    assert "not valid UTF-8" in err[0] and "Traceback" not in err[0]
