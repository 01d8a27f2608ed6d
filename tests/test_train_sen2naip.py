"""SEN2NAIP v1 as published: zip shards read in place, extracted trees, the Hub cache, errors,
histogram harmonisation with ``sim_histograms``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from difffusr_cli.cli import main
from difffusr_cli.degrade import match_histograms
from difffusr_cli.errors import InputError
from difffusr_cli.train.hr_data import open_hr_dataset
from difffusr_cli.train.sen2naip import parse_sim_histograms

ROIS = ("ROI_0001", "ROI_0002")
ERAS = ("early", "late")
#: Tiles are small here; the published ones are 1100 × 1100.
SIZE = 40
FAST = [
    "--config",
    "small",
    "--batch-size",
    "2",
    "--patch-size",
    "16",
    "--device",
    "cpu",
    "--no-progress",
    "--set",
    "val_steps=2",
    "--set",
    "model.moco.K=16",
]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tile(seed: int, count: int = 4, dtype: str = "uint8") -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    base = 120 + 60 * np.sin(x / (3 + seed % 3)) * np.cos(y / 4)
    data = np.clip(base[None] + rng.normal(0, 25, (count, SIZE, SIZE)), 0, 255)
    return data.astype(dtype)


def _geotiff_bytes(data: np.ndarray, folder: Path) -> bytes:
    path = folder / "t.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs="EPSG:32613",
        transform=Affine(2.5, 0, 500000, 0, -2.5, 4000000),
    ) as dst:
        dst.write(data)
    raw = path.read_bytes()
    path.unlink()
    return raw


def _sim_histograms(bins: int = 16) -> list[dict[str, list[float]]]:
    """R, G, B, NIR reference histograms in reflectance: R dark, G mid, B bright, NIR flat."""
    edges = np.linspace(0.0, 0.5, bins + 1).tolist()
    centres = np.arange(bins)
    shapes = [np.exp(-(((centres - mu) / 2.0) ** 2)) for mu in (3, 8, 12)] + [np.ones(bins)]
    return [{"counts": (1000 * s).round().tolist(), "bin_edges": edges} for s in shapes]


def v1_members(
    folder: Path, *, shard: int = 1, count: int = 4, dtype: str = "uint8", metadata: bool = True
) -> dict[str, bytes]:
    """The members of a small shard in the published layout: two ROIs, both eras, one tile each."""
    members: dict[str, bytes] = {}
    for r, roi in enumerate(ROIS):
        for e, era in enumerate(ERAS):
            prefix = f"synthetic_{shard}/{roi}/{era}"
            name = f"{prefix}/{r * 2 + e + 1:02d}__m_3410{shard}{r}{e}_ne_13_060_2020.tif"
            members[name] = _geotiff_bytes(_tile(10 * shard + 2 * r + e, count, dtype), folder)
            if metadata:
                doc = {"roi": roi, "sim_histograms": _sim_histograms()}
                members[f"{prefix}/metadata.json"] = json.dumps(doc).encode()
    return members


def write_shard(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, raw in members.items():
            archive.writestr(name, raw)
    return path


@pytest.fixture()
def shard(tmp_path: Path) -> Path:
    return write_shard(tmp_path / "synthetic_01.zip", v1_members(tmp_path))


def test_a_shard_is_read_in_place_with_a_summary(shard, tmp_path):
    data = open_hr_dataset("sen2naip", shard, min_size=16)
    assert len(data) == 4 and data.harmonize_default and data.harmonise_default == "gamma"
    assert all(im.uri.startswith("/vsizip/") for im in data.images)
    assert not any(p.suffix == ".tif" for p in tmp_path.iterdir())  # nothing extracted
    line = data.summary()[0]
    assert "1 shard(s) (synthetic_01.zip), 2 ROI(s), 4 tile(s) (early 2, late 2)" in line
    assert "sim_histograms for 4 of 4 ROI era(s)" in line
    # bands 1, 2, 3 as R, G, B, uint8 / 255, at 2.5 m: the pixels of the file
    image = data.read(0)
    assert image.shape == (3, SIZE, SIZE)
    assert np.allclose(image, _tile(10)[:3] / 255, atol=1e-6)


def test_extracted_trees_and_folders_of_shards(shard, tmp_path):
    tree = tmp_path / "extracted"
    with zipfile.ZipFile(shard) as archive:
        archive.extractall(tree)
    extracted = open_hr_dataset("sen2naip", tree, min_size=16)
    zipped = open_hr_dataset("sen2naip", shard, min_size=16)
    assert [im.path.name for im in extracted.images] == [im.path.name for im in zipped.images]
    assert np.array_equal(extracted.read(3), zipped.read(3))
    assert "synthetic_1" in extracted.summary()[0]
    # a folder of shards, and a subset of them
    folder = tmp_path / "shards"
    folder.mkdir()
    shutil.copy(shard, folder / "synthetic_01.zip")
    write_shard(folder / "synthetic_02.zip", v1_members(tmp_path, shard=2))
    both = open_hr_dataset("sen2naip", folder, min_size=16)
    assert len(both) == 8 and "2 shard(s)" in both.summary()[0]
    second = open_hr_dataset("sen2naip", folder, min_size=16, shards=[2])
    assert len(second) == 4 and {im.path.parent.parent.parent.name for im in second.images} == {
        "synthetic_2"
    }
    with pytest.raises(InputError, match="--shards 3"):
        open_hr_dataset("sen2naip", folder, min_size=16, shards=[3])


def test_clear_errors_name_the_file(tmp_path):
    flat = write_shard(tmp_path / "flat.zip", {"a.tif": _geotiff_bytes(_tile(0), tmp_path)})
    with pytest.raises(InputError, match=r"flat\.zip: no ROI_\* folders"):
        open_hr_dataset("sen2naip", flat, min_size=16)
    empty = write_shard(tmp_path / "empty.zip", {"synthetic_1/ROI_0001/early/notes.txt": b"x"})
    with pytest.raises(InputError, match=r"empty\.zip: ROI_\* folders but no early/ or late/"):
        open_hr_dataset("sen2naip", empty, min_size=16)
    two = write_shard(tmp_path / "two.zip", v1_members(tmp_path, count=2))
    with pytest.raises(InputError, match=r"two\.zip/synthetic_1/ROI_0001/early/01__.*2 band"):
        open_hr_dataset("sen2naip", two, min_size=16)
    wide = write_shard(tmp_path / "wide.zip", v1_members(tmp_path, dtype="uint16"))
    with pytest.raises(InputError, match=r"wide\.zip/.*uint16; SEN2NAIP HR tiles are uint8"):
        open_hr_dataset("sen2naip", wide, min_size=16)
    broken = tmp_path / "synthetic_09.zip"
    broken.write_bytes(b"PK not really")
    with pytest.raises(InputError, match="synthetic_09.zip: not a readable zip"):
        open_hr_dataset("sen2naip", broken, min_size=16)
    (tmp_path / "tree" / "ROI_0001" / "early").mkdir(parents=True)
    with pytest.raises(InputError, match=r"tree: ROI_\* folders but no early/ or late/"):
        open_hr_dataset("sen2naip", tmp_path / "tree", min_size=16, shards=[1])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="nothing: no SEN2NAIP v1 shards"):
        open_hr_dataset("sen2naip", tmp_path / "nothing", min_size=16, shards=[1])


def test_histogram_matching_follows_the_reference():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 64, 64, generator=generator) ** 2
    hist = parse_sim_histograms(_sim_histograms(), "test")
    counts, edges = torch.from_numpy(hist.counts), torch.from_numpy(hist.edges)
    out = match_histograms(x, counts, edges)
    for c in range(3):
        got = np.histogram(out[c].numpy(), bins=hist.edges[c])[0] / out[c].numel()
        want = hist.counts[c] / hist.counts[c].sum()
        assert np.abs(got - want).max() < 0.01
        # monotone: the order of the pixels is kept
        order = torch.argsort(x[c].flatten())
        assert (torch.diff(out[c].flatten()[order]) >= -1e-7).all()
    # 8-bit tiles (values k/255, the counting path) follow the same definition as the sort path:
    # a value's quantile is the mid-rank of its run, read off the reference CDF linearly
    levels = torch.randint(0, 256, (3, 32, 32), generator=generator)
    x8 = levels.float() / 255
    got = match_histograms(x8, counts, edges).numpy()
    for c in range(3):
        flat = x8[c].numpy().ravel()
        ranks = (
            np.searchsorted(np.sort(flat), flat, "left")
            + np.searchsorted(np.sort(flat), flat, "right")
        ) / (2 * flat.size)
        cdf = np.concatenate([[0], np.cumsum(hist.counts[c]) / hist.counts[c].sum()])
        want = np.interp(ranks, cdf, hist.edges[c]).reshape(32, 32)
        assert np.allclose(got[c], want, atol=1e-6)
    # equal inputs stay equal (ties share one quantile)
    flat = match_histograms(torch.full((3, 8, 8), 0.3), counts, edges)
    assert flat.unique().numel() <= 3


def test_sim_histogram_forms():
    by_name = {
        "Red": [1, 0, 0, 0],
        "green": {"hist": [0, 1, 0, 0], "edges": [0, 64, 128, 192, 255]},
        "B02": {"counts": [0, 0, 0, 1], "bins": [0, 2500, 5000, 7500, 10000]},
    }
    hist = parse_sim_histograms(by_name, "m.json")
    assert hist.counts.shape == (3, 4) and np.allclose(hist.edges[0], [0, 0.25, 0.5, 0.75, 1])
    assert np.isclose(hist.edges[1][-1], 1.0) and np.isclose(hist.edges[2][-1], 1.0)
    with pytest.raises(InputError, match="m.json: sim_histograms has keys"):
        parse_sim_histograms({"nir": [1]}, "m.json")
    with pytest.raises(InputError, match="ascending edges"):
        parse_sim_histograms([{"counts": [1, 2], "edges": [0, 1]}] * 3, "m.json")


def test_histogram_harmonisation_reads_matched_tiles(shard, tmp_path):
    data = open_hr_dataset("sen2naip", shard, min_size=16)
    matched = data.read(0, matched=True)
    assert matched.max() <= 0.5 + 1e-6  # the reference's range
    assert matched[0].mean() < matched[1].mean() < matched[2].mean()  # R dark … B bright
    assert not np.array_equal(matched, data.read(0))
    bare = write_shard(tmp_path / "synthetic_05.zip", v1_members(tmp_path, metadata=False))
    plain = open_hr_dataset("sen2naip", bare, min_size=16)
    assert plain.missing_histograms() and "for 0 of 4" in plain.summary()[0]
    with pytest.raises(InputError, match="no sim_histograms"):
        plain.read(0, matched=True)


def test_train_rgb_from_a_zip_read_in_place(shard, tmp_path, capsys):
    from difffusr_cli.api import load_rgb_model

    out = tmp_path / "run"
    args = ["train", "rgb", "--data", "sen2naip", "--data-dir", str(shard), *FAST]
    code = main([*args, "--out", str(out), "--max-steps", "1", "--harmonize", "histogram"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "SEN2NAIP v1 in" in printed and "2 ROI(s), 4 tile(s)" in printed
    assert "histogram matching" in printed
    assert json.loads((out / "train_config.json").read_text())["train"]["harmonize"] == "histogram"
    source = json.loads((out / "best.json").read_text())["source"]
    assert source["harmonize"] == "histogram" and source["data"] == f"sen2naip:{shard}"
    sr = load_rgb_model(out / "best.safetensors").super_resolve(torch.rand(1, 3, 4, 4), steps=2)
    assert sr.shape == (1, 3, 16, 16) and torch.isfinite(sr).all()
    # histogram matching needs the metadata; the others are refused in one line
    bare = write_shard(tmp_path / "synthetic_05.zip", v1_members(tmp_path, metadata=False))
    cases = [
        (["--data-dir", str(bare), "--harmonize", "histogram"], "have no sim_histograms"),
        (["--data-dir", str(shard), "--harmonize", "sepia"], "harmonize must be one of"),
        (["--data-dir", str(shard), "--shards", "x"], "--shards 'x'"),
        (["--data-dir", str(shard), "--harmonize", "gamma", "--no-harmonize"], "exclude"),
    ]
    for extra, message in cases:
        run = tmp_path / "refused"
        code = main(["train", "rgb", "--data", "sen2naip", *FAST, "--out", str(run), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err, err
        assert not run.exists()


COMMIT = "5e2a1b0c0ffee00000000000000000000000000a"


def _dataset_cache(hub: Path, shards: dict[str, Path], repo: str = "isp-uv-es/SEN2NAIP") -> Path:
    """``datasets--isp-uv-es--SEN2NAIP/{refs,blobs,snapshots}`` as huggingface_hub writes it."""
    root = hub / ("datasets--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True)
    (root / "refs").mkdir()
    for name, source in shards.items():
        blob = root / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
        shutil.copyfile(source, blob)
        link = root / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs" / "main").write_text(COMMIT)
    return root


def test_hub_repo_from_an_offline_cache(shard, tmp_path, monkeypatch, capsys):
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    with pytest.raises(InputError, match="HF_HUB_OFFLINE is set and isp-uv-es/SEN2NAIP@main"):
        open_hr_dataset("sen2naip", None, min_size=16, hub_repo="isp-uv-es/SEN2NAIP")
    second = write_shard(tmp_path / "s2.zip", v1_members(tmp_path, shard=2))
    _dataset_cache(hub, {"synthetic/synthetic_01.zip": shard, "synthetic/synthetic_02.zip": second})
    (hub / "datasets--isp-uv-es--SEN2NAIP" / "snapshots" / COMMIT / "README.md").write_text("x")
    data = open_hr_dataset("sen2naip", None, min_size=16, hub_repo="isp-uv-es/SEN2NAIP")
    assert len(data) == 8 and f"isp-uv-es/SEN2NAIP@{COMMIT[:12]}" in data.summary()[0]
    with pytest.raises(InputError, match="--shards 7: isp-uv-es/SEN2NAIP@main has shards 1,2"):
        open_hr_dataset("sen2naip", None, min_size=16, hub_repo="isp-uv-es/SEN2NAIP", shards=[1, 7])
    # online but the Hub fails: the cached snapshot stands in (downloads from the cache only)
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", unreachable)
    cached = open_hr_dataset("sen2naip", None, min_size=16, hub_repo="isp-uv-es/SEN2NAIP")
    assert len(cached) == 8
    with pytest.raises(InputError, match="listing the dataset failed .ConnectionError"):
        open_hr_dataset("sen2naip", None, min_size=16, hub_repo="someone/elsewhere")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "rgb",
            "--data",
            "sen2naip",
            "--hub-repo",
            "isp-uv-es/SEN2NAIP",
            "--shards",
            "1",
            *FAST,
            "--out",
            str(out),
            "--max-steps",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "1 shard(s) (synthetic_01.zip), 2 ROI(s), 4 tile(s)" in printed
    assert "harmonisation gamma" in printed and (out / "last.safetensors").is_file()


def test_worldstrat_reads_the_published_hr_dataset_layout(tmp_path):
    """hr_dataset/<AOI>/<AOI>_{ps,pan,rgbn}.tiff + _rgb.png, lr_dataset/<AOI>/L2A/… (Zenodo)."""
    aoi = "Landcover-1234"
    hr, lr = tmp_path / "hr_dataset" / aoi, tmp_path / "lr_dataset" / aoi / "L2A"
    hr.mkdir(parents=True)
    lr.mkdir(parents=True)
    rng = np.random.default_rng(0)
    products = {
        f"{aoi}_ps.tiff": (4, 60, 1.5),
        f"{aoi}_pan.tiff": (1, 60, 1.5),
        f"{aoi}_rgbn.tiff": (4, 15, 6.0),
    }
    arrays = {}
    for name, (count, size, res) in products.items():
        arrays[name] = (rng.random((count, size, size)) * 3000).astype(np.uint16)
        with rasterio.open(
            hr / name,
            "w",
            driver="GTiff",
            width=size,
            height=size,
            count=count,
            dtype="uint16",
            crs="EPSG:32633",
            transform=Affine(res, 0, 500000, 0, -res, 6000000),
        ) as dst:
            dst.write(arrays[name])
    with rasterio.open(
        hr / f"{aoi}_rgb.png", "w", driver="PNG", width=60, height=60, count=3, dtype="uint8"
    ) as dst:
        dst.write(np.zeros((3, 60, 60), np.uint8))
    with rasterio.open(
        lr / f"{aoi}-1-L2A_data.tiff", "w", driver="GTiff", width=6, height=6, count=12,
        dtype="uint16",
    ) as dst:  # fmt: skip
        dst.write(np.zeros((12, 6, 6), np.uint16))
    data = open_hr_dataset("worldstrat", tmp_path, min_size=16)
    (image,) = data.images
    assert image.path.name == f"{aoi}_ps.tiff" and image.rgb_bands == (1, 2, 3)
    assert (image.width, image.height, image.gsd) == (36, 36, 1.5)
    # R, G, B = bands 1, 2, 3 / 10000, area-averaged from 1.5 m to 2.5 m
    red = data.read(0)[0]
    assert abs(float(red.mean()) - float(arrays[f"{aoi}_ps.tiff"][0].mean()) / 10000) < 2e-3
    # Zenodo's hr_dataset.zip, read in place
    archive = tmp_path / "hr_dataset.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted((tmp_path / "hr_dataset").rglob("*")):
            out.write(file, file.relative_to(tmp_path).as_posix())
    zipped = open_hr_dataset("worldstrat", archive, min_size=16)
    (member,) = zipped.images
    assert member.path == archive / "hr_dataset" / aoi / f"{aoi}_ps.tiff"
    assert member.uri.startswith("/vsizip/") and np.array_equal(zipped.read(0), data.read(0))


# ---------------------------------------------------------------------------------------------
# SEN2NAIP v2: TACO containers written by the documented byte layout (needs the taco extra)


def _parquet(rows: list[tuple[str, str, int, int]]) -> bytes:
    import io

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    ids, formats, offsets, lengths = zip(*rows, strict=True)
    table = pa.table(
        {
            "tortilla:id": list(ids),
            "tortilla:file_format": list(formats),
            "tortilla:offset": pa.array(offsets, pa.uint64()),
            "tortilla:length": pa.array(lengths, pa.uint64()),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _container(magic: bytes, items: list[tuple[str, str, bytes]], header: int) -> bytes:
    """magic, footer offset, footer length (u64 LE), payloads, Parquet footer (offsets from 0)."""
    body, rows, position = b"", [], header
    for item_id, file_format, payload in items:
        rows.append((item_id, file_format, position, len(payload)))
        body += payload
        position += len(payload)
    footer = _parquet(rows)
    head = magic + position.to_bytes(8, "little") + len(footer).to_bytes(8, "little")
    return head + bytes(header - len(head)) + body + footer


def write_taco(path: Path, hr_arrays: list[np.ndarray], scale: float | None = None) -> Path:
    folder = path.parent
    samples = []
    for i, hr in enumerate(hr_arrays):
        lr = _tiff(hr[:, ::4, ::4].copy(), 10.0)  # the published LR: 10 m, a quarter the size
        hr_bytes = _geotiff_bytes(hr, folder)
        if scale is not None:  # a GDAL band scale carried by the file itself
            with rasterio.MemoryFile(hr_bytes) as memory, memory.open() as src:
                profile, data = src.profile, src.read()
            with rasterio.MemoryFile() as memory:
                with memory.open(**profile) as dst:
                    dst.write(data)
                    dst.scales = (scale,) * data.shape[0]
                hr_bytes = memory.read()
        tortilla = _container(b"#y", [("lr", "GTiff", lr), ("hr", "GTiff", hr_bytes)], 18)
        samples.append((f"ROI_{i:04d}", "TORTILLA", tortilla))
    path.write_bytes(_container(b"WX", samples, 42))
    return path


def test_sen2naipv2_taco_hr_items_are_read_in_place(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(0)
    hrs = [(rng.random((4, 32, 32)) * 4000).astype(np.uint16) for _ in range(3)]
    taco = write_taco(tmp_path / "sen2naipv2-unet.0001.part.taco", hrs)
    data = open_hr_dataset("sen2naip", taco, min_size=16, pairs="degrade")
    assert data.pairs == "degrade" and "pairs: degrade (HR alone)" in data.summary()[0]
    assert len(data) == 3 and all(im.uri.startswith("/vsisubfile/") for im in data.images)
    assert "1 file(s), 3 sample(s); HR reflectance = value × 0.0001" in data.summary()[0]
    assert np.allclose(data.read(1), hrs[1][:3] / 10000, atol=1e-6)
    # the file's own scale wins over the dtype default
    scaled = write_taco(tmp_path / "scaled.taco", hrs[:1], scale=1 / 20000)
    scaled_data = open_hr_dataset("sen2naip", scaled, min_size=16, pairs="degrade")
    assert np.allclose(scaled_data.read(0), hrs[0][:3] / 2e4)
    broken = tmp_path / "broken.taco"
    broken.write_bytes(b"no taco here")
    with pytest.raises(InputError, match="broken.taco: not a TACO/tortilla container"):
        open_hr_dataset("sen2naip", broken, min_size=16)
    code = main(
        ["train", "rgb", "--data", "sen2naip", "--data-dir", str(taco), *FAST]
        + ["--out", str(tmp_path / "run"), "--max-steps", "1", "--pairs", "degrade"]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "SEN2NAIP v2 (TACO)" in printed and "LR by the degradation model" in printed
    assert "harmonisation gamma" in printed
    # the same container through a Hub dataset cache, offline; --shards picks the part
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    repo = "tacofoundation/SEN2NAIPv2"
    _dataset_cache(hub, {f"{taco.name}": taco, "sen2naipv2-unet.0002.part.taco": scaled}, repo)
    one = open_hr_dataset("sen2naip", None, min_size=16, hub_repo=repo, shards=[1])
    assert one.pairs == "own" and len(one) == 3 and f"{repo}@{COMMIT[:12]}" in one.summary()[0]


def test_taco_without_pyarrow_says_which_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if not installed
    taco = tmp_path / "x.taco"
    taco.write_bytes(b"WX" + bytes(40))
    with pytest.raises(InputError, match=r"x.taco: reading .taco files needs pyarrow .*\[taco\]"):
        open_hr_dataset("sen2naip", taco, min_size=16)


# The cross-sensor set's own pairs: LR 130² RGBN Sentinel-2 at 10 m, HR 520² NAIP at 2.5 m
# (here LR 10², HR 40²).


def _tiff(data: np.ndarray, pixel: float, scale: float | None = None, offset: float = 0.0) -> bytes:
    """GeoTIFF bytes at ``pixel`` metres, optionally with a GDAL band scale/offset."""
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0])
    profile.update(dtype=data.dtype.name, crs="EPSG:32613")
    with rasterio.MemoryFile() as memory:
        transform = Affine(pixel, 0, 500000, 0, -pixel, 4000000)
        with memory.open(**profile, transform=transform) as dst:
            dst.write(data)
            if scale is not None:
                dst.scales = (scale,) * data.shape[0]
                dst.offsets = (offset,) * data.shape[0]
        return memory.read()


def crosssensor_pairs(count: int = 2, lr_side: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(lr, hr)`` uint16 RGBN: HR reflectance × 10000; LR = its 4×4 means, stored as
    reflectance × 10000 + 1000 (a Sentinel-2 L2A style offset the file declares)."""
    rng = np.random.default_rng(7)
    pairs = []
    for _ in range(count):
        hr = (rng.random((4, 4 * lr_side, 4 * lr_side)) * 3000 + 200).astype(np.uint16)
        means = hr.reshape(4, lr_side, 4, lr_side, 4).astype(np.float64).mean(axis=(2, 4))
        pairs.append((np.round(means + 1000).astype(np.uint16), hr))
    return pairs


def write_crosssensor(path: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    samples = []
    for i, (lr, hr) in enumerate(pairs):
        items = [("lr", "GTiff", _tiff(lr, 10.0, 1e-4, -0.1)), ("hr", "GTiff", _tiff(hr, 2.5))]
        samples.append((f"crosssensor_{i:04d}", "TORTILLA", _container(b"#y", items, 18)))
    path.write_bytes(_container(b"WX", samples, 42))
    return path


def test_crosssensor_pairs_are_used_as_published(tmp_path, capsys):
    from difffusr_cli.api import load_rgb_model
    from difffusr_cli.train import rgb

    pytest.importorskip("pyarrow")
    pairs = crosssensor_pairs()
    taco = write_crosssensor(tmp_path / "sen2naipv2-crosssensor.taco", pairs)
    data = open_hr_dataset("sen2naip", taco, min_size=16)  # auto: every sample has lr and hr
    line = data.summary()[0]
    assert data.pairs == "own" and "2 sample(s)" in line and "pairs: own" in line
    # each file's own scale: the LR declares scale and offset, the HR falls back to its dtype
    assert "LR reflectance = value × 0.0001 + -0.1 (band scale)" in line, line
    assert "HR reflectance = value × 0.0001 (uint16 default)" in line, line
    assert data.read(1).shape == (3, 40, 40) and data.read_lr(1).shape == (3, 10, 10)
    assert np.allclose(data.read_lr(1), pairs[1][0][:3] * 1e-4 - 0.1, atol=1e-6)
    assert np.allclose(data.read(1), pairs[1][1][:3] * 1e-4, atol=1e-6)
    # crops are aligned: every LR pixel is the mean of the 4×4 HR pixels under it
    config = rgb.resolve_config("small", {"train.batch_size": 2, "train.patch_size": 16})
    for step in range(3):
        batch = rgb.make_batch(data, (0, 1), config, "none", step)
        assert batch.hr.shape == (2, 3, 16, 16) and batch.lr.shape == (2, 3, 4, 4)
        assert torch.allclose(torch.nn.functional.avg_pool2d(batch.hr, 4), batch.lr, atol=1e-4)
        assert batch.lr_key.shape == (2, 3, 4, 4)
    val_hr, val_lr = rgb.make_validation_set(data, (1,), config, "none")
    assert torch.allclose(torch.nn.functional.avg_pool2d(val_hr, 4), val_lr, atol=1e-4)
    with pytest.raises(ValueError, match="harmonisation gamma"):
        rgb.make_batch(data, (0, 1), config, "gamma", 0)
    # a cheap train rgb run from the pairs
    out = tmp_path / "run"
    args = ["train", "rgb", "--data", "sen2naip", "--data-dir", str(taco), *FAST]
    assert main([*args, "--out", str(out), "--max-steps", "2"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "LR from the published pairs (no degradation)" in printed
    assert "harmonisation off" in printed
    assert json.loads((out / "train_config.json").read_text())["train"]["pairs"] == "own"
    source = json.loads((out / "best.json").read_text())["source"]
    assert source["pairs"] == "own" and source["harmonize"] == "none"
    sr = load_rgb_model(out / "best.safetensors").super_resolve(torch.rand(1, 3, 4, 4), steps=2)
    assert sr.shape == (1, 3, 16, 16) and torch.isfinite(sr).all()
    # --resume reads the pairs back from the saved config
    resumed = [*args, "--out", str(out), "--max-steps", "3", "--resume"]
    assert main(resumed) == 0, capsys.readouterr().err
    assert "LR from the published pairs" in capsys.readouterr().out


def test_pairs_errors_name_the_file(tmp_path, shard, capsys):
    pytest.importorskip("pyarrow")
    good = crosssensor_pairs(count=2)
    # HR 40² over LR 12²: not ×4
    lr12 = np.ones((4, 12, 12), np.uint16) * 2000
    odd = write_crosssensor(tmp_path / "odd.taco", [good[0], (lr12, good[1][1])])
    # no lr item: auto falls back to degrade, --pairs own is refused
    hr_only = tmp_path / "hr_only.taco"
    sample = _container(b"#y", [("hr", "GTiff", _tiff(good[0][1], 2.5))], 18)
    hr_only.write_bytes(_container(b"WX", [("s0", "TORTILLA", sample)], 42))
    assert open_hr_dataset("sen2naip", hr_only, min_size=16).pairs == "degrade"
    taco = write_crosssensor(tmp_path / "pairs.taco", good)
    cases = [
        ([str(odd)], "odd.taco: sample crosssensor_0001: HR 40×40 px, LR 12×12 px, not a ×4 pair"),
        ([str(hr_only), "--pairs", "own"], "hr_only.taco: sample s0 has no 'lr' item"),
        ([str(shard), "--pairs", "own"], "holds no SEN2NAIP v2 .taco containers"),
        ([str(taco), "--harmonize", "gamma"], "--harmonize gamma: published pairs"),
        ([str(taco), "--pairs", "mine"], "pairs must be own, degrade or auto"),
    ]
    for extra, message in cases:
        run = tmp_path / "refused"
        argv = ["train", "rgb", "--data", "sen2naip", *FAST, "--out", str(run), "--data-dir"]
        code = main([*argv, *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err, err
        assert not run.exists()
