"""`difffusr eval opensr`: the OpenSR-test benchmark on a tiny dataset written in the package's
layout, scored with opensr-test's own metrics (the CSV, summary and rank logic:
test_eval_opensr_report.py).

Tests that score need the optional `opensr-test` package (``pip install 'difffusr[eval]' &&
pip install --no-deps opensr-test==1.3.3``) and skip without it.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from difffusr_cli.cli import main
from difffusr_cli.errors import InputError
from difffusr_cli.evaluate import opensr, opensr_data
from difffusr_cli.evaluate.opensr_report import (
    METRICS,
    OpenSRReport,
    ResultRow,
    load_comparisons,
    rank_models,
    read_results_csv,
    write_rows_csv,
)
from difffusr_cli.models.bicubic import BicubicUpsampler

# pandas comes with the `eval` extra (opensr-test's metadata tables).
pd = pytest.importorskip("pandas")

ND_SETTINGS = {
    "agg_method": "patch",
    "patch_size": 1,
    "border_mask": 64,
    "correctness_distance": "nd",
}


def _opensr_test():
    try:
        import opensr_test
    except ImportError as exc:  # includes a satalign that needs torchvision
        pytest.skip(
            f"opensr-test not importable ({exc}); pip install 'difffusr[eval]' && pip install "
            "--no-deps opensr-test==1.3.3"
        )
    return opensr_test


def _write_dataset(
    path: Path, name: str, *, n: int = 2, lr_size: int = 48, scale: int = 4, seed: int = 0
) -> dict:
    """A tiny dataset in opensr-test's pickle layout: 12-band L2A DN (B01…B12) whose R, G, B are
    the antialiased downsampling of a textured 4-band HR (R, G, B, NIR), plus metadata."""
    rng = np.random.default_rng(seed)
    size = lr_size * scale
    yy, xx = np.mgrid[0:size, 0:size] / size
    hr = np.empty((n, 4, size, size), dtype=np.uint16)
    for i in range(n):
        for band in range(4):
            pattern = np.sin(2 * np.pi * (3 + band + i) * xx) * np.cos(2 * np.pi * (2 + i) * yy)
            field = 1500 + 600 * band + 700 * pattern + rng.normal(0, 120, size=(size, size))
            hr[i, band] = np.clip(field, 1, 9000).astype(np.uint16)
    lr_rgb = F.interpolate(
        torch.from_numpy(hr[:, :3].astype(np.float32)),
        scale_factor=1 / scale,
        mode="bilinear",
        antialias=True,
    ).numpy()
    l2a = rng.uniform(200, 3000, size=(n, 12, lr_size, lr_size)).astype(np.uint16)
    l2a[:, [3, 2, 1]] = np.rint(lr_rgb).astype(np.uint16)
    metadata = pd.DataFrame(
        {
            "hr_file": [f"{name}_roi{i:02d}" for i in range(n)],
            "crs": ["EPSG:32633"] * n,
            "affine": [f"2.5,0.0,{400000 + 1000 * i},0.0,-2.5,5000000" for i in range(n)],
        },
        # The published pickles hold object-dtype strings; pandas ≥ 3 with pyarrow installed
        # would otherwise store Arrow strings, which the benchmark files never contain.
        dtype=object,
    )
    metadata.columns = pd.Index(list(metadata.columns), dtype=object)
    data = {"L2A": l2a, "HRharm": hr, "metadata": metadata}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(data, handle)
    return data


def _direct_scores(opensr_test, data: dict, index: int) -> dict[str, float]:
    """opensr-test called directly on the same arrays the command uses, bicubic ×4 SR.

    The SR is the built-in bicubic (torch's to float rounding, tests/test_bicubic.py): the
    spectral angle of near-identical spectra magnifies rounding, so the same SR is compared.
    """
    lr = torch.from_numpy(data["L2A"][index, [3, 2, 1]].astype(np.float32)) / 10000
    hr = torch.from_numpy(data["HRharm"][index, :3].astype(np.float32)) / 10000
    sr = BicubicUpsampler().super_resolve(lr[None])
    if sr.shape[-2:] != hr.shape[-2:]:
        sr = F.interpolate(
            sr, size=hr.shape[-2:], mode="bilinear", antialias=True, align_corners=False
        )
    sr = sr[0].clamp_min(0.0)
    scores = opensr_test.Metrics(device="cpu", **ND_SETTINGS).compute(lr=lr, sr=sr, hr=hr)
    keys = {"hallucination": "ha_metric", "omission": "om_metric", "improvement": "im_metric"}
    return {m: float(scores[keys.get(m, m)]) for m in METRICS}


# --------------------------------------------------------------------------------------------
# End to end with opensr-test


def test_eval_opensr_end_to_end_matches_direct_metric_calls(tmp_path, capsys):
    opensr_test = _opensr_test()
    data_dir = tmp_path / "bench"
    datasets = {
        name: _write_dataset(data_dir / f"{name}.pkl", name, seed=k)
        for k, name in enumerate(("naip", "spot"))
    }
    csv_path, sr_dir = tmp_path / "bicubic.csv", tmp_path / "sr"

    code = main(
        [
            "eval",
            "opensr",
            "--rgb-model",
            "bicubic",
            "--dataset",
            "naip,spot",
            "--data-dir",
            str(data_dir),
            "--distance",
            "nd",
            "--device",
            "cpu",
            "--csv",
            str(csv_path),
            "--save-sr",
            str(sr_dir),
            "--json",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)

    rows = read_results_csv(csv_path)
    assert [(r.dataset, r.image) for r in rows] == [
        (n, f"{n}_roi{i:02d}") for n in ("naip", "spot") for i in range(2)
    ]
    assert {r.model for r in rows} == {"bicubic"} and {r.distance for r in rows} == {"nd"}
    for row in rows:
        index = int(row.image[-2:])
        expected = _direct_scores(opensr_test, datasets[row.dataset], index)
        for metric in METRICS:
            assert row.metrics[metric] == pytest.approx(
                expected[metric], rel=1e-9, abs=1e-12, nan_ok=True
            ), (row.image, metric)
    # Bicubic adds no detail the HR has: improvement is small, synthesis is finite and positive.
    assert all(0 <= r.metrics["improvement"] <= 1 and r.metrics["synthesis"] > 0 for r in rows)

    # The JSON summary is the mean ± sample std of the per-image rows, per dataset and pooled.
    summary = report["summary"]["nd"]
    assert set(summary) == {"naip", "spot", "all"}
    for metric in ("reflectance", "hallucination"):
        values = [r.metrics[metric] for r in rows]
        assert summary["all"][metric]["mean"] == pytest.approx(np.mean(values))
        assert summary["all"][metric]["std"] == pytest.approx(np.std(values, ddof=1))
        assert summary["naip"][metric]["mean"] == pytest.approx(np.mean(values[:2]))
    assert (
        report["distances"] == ["nd"] and report["settings"]["protocol"]["nd"]["border_mask"] == 64
    )
    assert len(report["images"]) == 4

    # Saved SR images: uint16 DN = reflectance × 10000 on the HR grid the metadata describes.
    saved = sr_dir / "spot" / "spot_roi01.tif"
    with rasterio.open(saved) as src:
        assert (src.count, src.height, src.width, src.dtypes[0]) == (3, 192, 192, "uint16")
        assert src.crs.to_epsg() == 32633 and src.transform.c == 401000 and src.transform.a == 2.5
        dn = src.read()
    lr = torch.from_numpy(datasets["spot"]["L2A"][1, [3, 2, 1]].astype(np.float32)) / 10000
    sr = F.interpolate(lr[None], scale_factor=4, mode="bicubic", align_corners=False)[0].clamp_min(
        0
    )
    assert np.abs(dn.astype(np.int64) - np.rint(sr.numpy() * 1e4).astype(np.int64)).max() <= 1


def test_eval_opensr_hf_layout_x2_dataset_and_compare(tmp_path, capsys):
    opensr_test = _opensr_test()
    # The Hugging Face repository layout (<version folder>/<dataset>/<dataset>.pkl) and the ×2
    # venus dataset: the ×4 SR is resized to the HR grid before scoring.
    data = _write_dataset(
        tmp_path / "hf" / "021" / "venus" / "venus.pkl", "venus", n=1, lr_size=80, scale=2
    )
    other = tmp_path / "other.csv"
    code = main(
        [
            "eval",
            "opensr",
            "--rgb-model",
            "bicubic",
            "--dataset",
            "venus",
            "--data-dir",
            str(tmp_path / "hf"),
            "--distance",
            "nd",
            "--device",
            "cpu",
            "--csv",
            str(tmp_path / "first.csv"),
            "--json",
        ]
    )
    assert code == 0, capsys.readouterr().err
    first = json.loads(capsys.readouterr().out)
    row = first["images"][0]
    expected = _direct_scores(opensr_test, data, 0)
    assert row["reflectance"] == pytest.approx(expected["reflectance"], rel=1e-9)
    assert row["improvement"] == pytest.approx(expected["improvement"], rel=1e-9)

    # A compared model worse on every metric ranks 2, this run 1; the other file's rows are
    # relabelled when they carry this run's label.
    worse = []
    for r in read_results_csv(tmp_path / "first.csv"):
        metrics = {
            m: v * (0.5 if m in ("synthesis", "improvement") else 2.0)
            + (0 if m in ("synthesis", "improvement") else 0.01)
            for m, v in r.metrics.items()
        }
        worse.append(ResultRow("bicubic", r.distance, r.dataset, r.image, metrics))
    write_rows_csv(worse, other)
    code = main(
        [
            "eval",
            "opensr",
            "--rgb-model",
            "bicubic",
            "--dataset",
            "venus",
            "--data-dir",
            str(tmp_path / "hf"),
            "--distance",
            "nd",
            "--device",
            "cpu",
            "--csv",
            str(tmp_path / "second.csv"),
            "--compare",
            str(other),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Average rank" in out and "bicubic (other)" in out
    ranking = rank_models(
        OpenSRReport("bicubic", tuple(read_results_csv(tmp_path / "second.csv")), ("nd",)),
        load_comparisons([other], "bicubic"),
        ["venus"],
    )
    assert {m: e["average_rank"] for m, e in ranking["nd"].items()} == {
        "bicubic": 1.0,
        "bicubic (other)": 2.0,
    }


def test_library_call_passes_steps_and_per_image_seeds(tmp_path):
    _opensr_test()
    _write_dataset(tmp_path / "spot.pkl", "spot", n=3, lr_size=40)
    calls = []

    class Recording(opensr.BicubicUpsampler):
        def super_resolve(self, lr, steps=20, seed=None):
            calls.append((tuple(lr.shape), steps, seed))
            return super().super_resolve(lr, steps, seed)

    config = opensr.OpenSRConfig(
        rgb_model="mine",
        datasets=("spot",),
        data_dir=tmp_path,
        distances=("nd",),
        steps=7,
        seed=5,
        device="cpu",
        limit=2,
    )
    report = opensr.evaluate_opensr(config, model=Recording(), progress=False)
    assert calls == [((1, 3, 40, 40), 7, 5), ((1, 3, 40, 40), 7, 6)]
    assert report.model == "mine" and report.distances == ("nd",) and len(report.rows) == 2
    assert report.sources == {"spot": str(tmp_path / "spot.pkl")}
    assert all(math.isfinite(r.metrics["reflectance"]) for r in report.rows)


def test_corrupt_pickle_is_an_input_error(tmp_path, capsys):
    _opensr_test()
    (tmp_path / "naip.pkl").write_bytes(b"<html>404 not found</html>")
    code = main(
        [
            "eval",
            "opensr",
            "--rgb-model",
            "bicubic",
            "--dataset",
            "naip",
            "--data-dir",
            str(tmp_path),
            "--distance",
            "nd",
            "--device",
            "cpu",
            "--csv",
            str(tmp_path / "r.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert (
        "naip.pkl" in err and "not a readable opensr-test pickle" in err and "Traceback" not in err
    )


# --------------------------------------------------------------------------------------------
# Errors that need no opensr-test


def test_missing_data_names_every_missing_file(tmp_path, capsys):
    _write_dataset(tmp_path / "spot.pkl", "spot", n=1)
    code = main(
        [
            "eval",
            "opensr",
            "--rgb-model",
            "bicubic",
            "--dataset",
            "naip",
            "--dataset",
            "spot,spain_urban",
            "--data-dir",
            str(tmp_path),
            "--csv",
            str(tmp_path / "r.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "naip (naip.pkl or 021/naip/naip.pkl)" in err and "spain_urban" in err
    assert "spot (" not in err and "isp-uv-es/opensr-test" in err
    assert not (tmp_path / "r.csv").exists()


def test_offline_without_cache_asks_for_data_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    code = main(
        [
            "eval",
            "opensr",
            "--rgb-model",
            "bicubic",
            "--dataset",
            "spot",
            "--csv",
            str(tmp_path / "r.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "HF_HUB_OFFLINE" in err and "--data-dir" in err and "spot.pkl" in err


def test_missing_package_says_how_to_install(tmp_path, monkeypatch, capsys):
    _write_dataset(tmp_path / "naip.pkl", "naip", n=1)
    monkeypatch.setitem(sys.modules, "opensr_test", None)  # import opensr_test → ImportError
    code = main(
        [
            "eval",
            "opensr",
            "--rgb-model",
            "bicubic",
            "--dataset",
            "naip",
            "--data-dir",
            str(tmp_path),
            "--csv",
            str(tmp_path / "r.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert (
        code == 2 and "pip install --no-deps opensr-test==1.3.3" in err and "difffusr[eval]" in err
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "sentinel"], "--dataset sentinel"),
        (["--distance", "psnr"], "--distance psnr"),
        (["--data-version", "v9"], "--data-version v9"),
        (["--steps", "0"], "--steps 0"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    code = main(["eval", "opensr", "--rgb-model", "bicubic", "--data-dir", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_existing_csv_is_not_replaced_without_overwrite(tmp_path, capsys):
    existing = tmp_path / "r.csv"
    existing.write_text("keep me\n")
    code = main(
        [
            "eval",
            "opensr",
            "--rgb-model",
            "bicubic",
            "--data-dir",
            str(tmp_path),
            "--csv",
            str(existing),
        ]
    )
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert existing.read_text() == "keep me\n"


def test_benchmark_dict_is_converted_and_checked(tmp_path):
    data = _write_dataset(tmp_path / "x.pkl", "naip", n=2, lr_size=8)
    bench = opensr_data.benchmark_from_dict("naip", tmp_path / "x.pkl", data)
    assert bench.lr.shape == (2, 3, 8, 8) and bench.hr.shape == (2, 3, 32, 32) and bench.scale == 4
    assert bench.lr.dtype == np.float32
    np.testing.assert_allclose(bench.lr[1, 0], data["L2A"][1, 3] / 1e4, rtol=1e-6)  # R = B04
    np.testing.assert_allclose(bench.lr[1, 2], data["L2A"][1, 1] / 1e4, rtol=1e-6)  # B = B02
    np.testing.assert_allclose(bench.hr[0, 1], data["HRharm"][0, 1] / 1e4, rtol=1e-6)
    assert bench.image_ids == ("naip_roi00", "naip_roi01") and bench.transforms[1].c == 401000

    no_meta = opensr_data.benchmark_from_dict(
        "spot", tmp_path / "y.pkl", {"L2A": data["L2A"], "HRharm": data["HRharm"]}
    )
    assert no_meta.image_ids == ("spot_000", "spot_001") and no_meta.crs == (None, None)

    bad = {
        "keys": {"L2A": data["L2A"]},
        "bands": {"L2A": data["L2A"][:, :3], "HRharm": data["HRharm"]},
        "count": {"L2A": data["L2A"][:1], "HRharm": data["HRharm"]},
        "scale": {"L2A": data["L2A"], "HRharm": data["HRharm"][..., :30, :30]},
    }
    for raw in bad.values():
        with pytest.raises(InputError, match="y.pkl"):
            opensr_data.benchmark_from_dict("spot", tmp_path / "y.pkl", raw)
