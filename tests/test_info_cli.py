"""`difffusr info` through the CLI entry point: JSON schema, table, overrides, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import rasterio
from affine import Affine

from difffusr_cli.bands import BAND_NAMES, BY_NAME
from difffusr_cli.cli import main
from difffusr_cli.example import write_example_cogs


def _info_json(capsys, *args) -> dict:
    code = main(["info", "--json", *map(str, args)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def _fails_cleanly(capsys, *args, needle: str) -> str:
    code = main(["info", *map(str, args)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and needle in lines[0], lines[0]
    return lines[0]


def test_json_schema(capsys, example_safe):
    info = _info_json(capsys, example_safe)
    assert set(info) >= {"source", "grid", "bands", "radiometry"}
    assert info["source"]["kind"] == "safe" and info["source"]["path"] == str(example_safe)
    assert {"tile", "datetime", "processing_baseline"} <= set(info["source"])
    assert info["source"]["tile"] == "T32TMT" and info["source"]["processing_baseline"] == "05.09"
    grid = info["grid"]
    assert grid["crs"] == "EPSG:32632" and (grid["width"], grid["height"]) == (192, 192)
    assert (
        len(grid["transform"]) == 6
        and grid["transform"][0] == 10.0
        and grid["transform"][4] == -10.0
    )
    assert [b["name"] for b in info["bands"]] == list(BAND_NAMES)
    for entry in info["bands"]:
        assert {"name", "gsd", "width", "height", "path", "found"} <= set(entry)
        assert entry["found"] and entry["gsd"] == BY_NAME[entry["name"]].gsd
        assert entry["width"] == 192 // BY_NAME[entry["name"]].ratio
    radiometry = info["radiometry"]
    assert radiometry["quantification"] == 10000
    assert radiometry["offsets"] == {name: -1000 for name in BAND_NAMES}


def test_overrides_are_reported(capsys, example_safe):
    info = _info_json(capsys, example_safe, "--scale", "0.0001", "--offset", "0")
    assert info["radiometry"]["offsets"] == {name: 0 for name in BAND_NAMES}
    assert info["radiometry"]["source"].startswith("user override")


def test_human_table(capsys, example_safe):
    assert main(["info", str(example_safe)]) == 0
    out = capsys.readouterr().out
    assert "T32TMT" in out and "EPSG:32632" in out and "MTD_MSIL2A.xml" in out
    assert all(name in out for name in BAND_NAMES)


def test_missing_bands_still_exit_0(capsys, example_safe, tmp_path):
    partial = Path(shutil.copytree(example_safe, tmp_path / example_safe.name))
    for jp2 in partial.glob("GRANULE/*/IMG_DATA/R20m/*.jp2"):
        jp2.unlink()
    info = _info_json(capsys, partial)
    found = {b["name"]: b["found"] for b in info["bands"]}
    assert [n for n, f in found.items() if not f] == ["B05", "B06", "B07", "B8A", "B11", "B12"]
    missing = next(b for b in info["bands"] if b["name"] == "B05")
    assert missing["path"] is None and missing["width"] is None


def test_path_does_not_exist(capsys, tmp_path):
    _fails_cleanly(capsys, tmp_path / "absent.SAFE", needle="absent.SAFE does not exist")


def test_folder_without_bands(capsys, tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    _fails_cleanly(capsys, tmp_path, needle=f"no Sentinel-2 band files recognised in {tmp_path}")


def test_truncated_jp2(capsys, example_safe, tmp_path):
    broken = Path(shutil.copytree(example_safe, tmp_path / example_safe.name))
    jp2 = next(broken.glob("GRANULE/*/IMG_DATA/R10m/*_B04_10m.jp2"))
    jp2.write_bytes(jp2.read_bytes()[:2000])
    line = _fails_cleanly(capsys, broken, needle="cannot read")
    assert jp2.name in line


def test_level_1c(capsys, tmp_path):
    l1c = tmp_path / "S2B_MSIL1C_20230101T000000_N0509_R001_T32TMT_20230101T000000.SAFE"
    l1c.mkdir()
    (l1c / "MTD_MSIL1C.xml").write_text("<x/>")
    line = _fails_cleanly(capsys, l1c, needle="Level-1C")
    assert "Level-2A" in line and str(l1c) in line


def test_grids_that_do_not_nest(capsys, example_safe, tmp_path):
    folder = write_example_cogs(example_safe, tmp_path / "cogs")
    band = folder / "B06.tif"
    with rasterio.open(band) as src:
        profile, data = src.profile, src.read()
    t = profile["transform"]
    profile.update(driver="GTiff", transform=Affine(t.a, 0, t.c + 30, 0, t.e, t.f))
    band.unlink()
    with rasterio.open(band, "w", **profile) as dst:
        dst.write(data)
    line = _fails_cleanly(capsys, folder, needle="do not nest")
    assert "B06" in line and str(folder) in line
