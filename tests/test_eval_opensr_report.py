"""`difffusr eval opensr` results: the CSV, summary and rank logic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from difffusr_cli.errors import InputError
from difffusr_cli.evaluate.opensr_report import (
    METRICS,
    ResultRow,
    average_rank,
    format_stat,
    model_means,
    read_results_csv,
    stat,
    summarise,
    write_rows_csv,
)

# pandas comes with the `eval` extra (opensr-test's metadata tables).
pd = pytest.importorskip("pandas")

# --------------------------------------------------------------------------------------------
# CSV, summaries and ranks


def _rows() -> list[ResultRow]:
    rng = np.random.default_rng(3)
    rows = []
    for model in ("a", "b"):
        for dataset in ("naip", "spot"):
            for i in range(3):
                metrics = {m: float(rng.uniform(0, 1)) for m in METRICS}
                rows.append(ResultRow(model, "nd", dataset, f"{dataset}{i}", metrics))
    rows[0].metrics["spatial"] = math.nan  # type: ignore[index] - opensr-test's NaN for a failed alignment
    return rows


def test_csv_round_trip_is_exact(tmp_path):
    rows = _rows()
    write_rows_csv(rows, tmp_path / "r.csv")
    back = read_results_csv(tmp_path / "r.csv")
    assert [(r.model, r.distance, r.dataset, r.image) for r in back] == [
        (r.model, r.distance, r.dataset, r.image) for r in rows
    ]
    for a, b in zip(rows, back, strict=True):
        for m in METRICS:
            assert (math.isnan(a.metrics[m]) and math.isnan(b.metrics[m])) or a.metrics[
                m
            ] == b.metrics[m]


def test_reads_paper_style_summary_csv(tmp_path):
    path = tmp_path / "paper_nd.csv"
    path.write_text(
        "Model,Reflectance,Spectral,Spatial,Synthesis,ha_metric,om_metric,im_metric\n"
        "opensrmodel,0.0031 ± 0.0018,1.2632,0.0114,0.0068,0.3431,0.4593,0.1976\n"
        "superimage,0.0029,1.5672,,0.0046,0.2026,0.6288,0.1686\n"
    )
    rows = read_results_csv(path)
    assert [r.model for r in rows] == ["opensrmodel", "superimage"]
    assert rows[0].distance is None and rows[0].dataset is None
    assert rows[0].metrics["reflectance"] == 0.0031 and rows[0].metrics["hallucination"] == 0.3431
    assert math.isnan(rows[1].metrics["spatial"])
    # Summary rows count for any distance and any dataset.
    means = model_means(rows, distance="lpips", datasets=["naip"])
    assert means["superimage"]["improvement"] == 0.1686

    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="no metric column"):
        read_results_csv(tmp_path / "junk.csv")
    (tmp_path / "text.csv").write_text("model,reflectance\nm,abc\n")
    with pytest.raises(InputError, match="text.csv:2"):
        read_results_csv(tmp_path / "text.csv")
    with pytest.raises(InputError, match="not found"):
        read_results_csv(tmp_path / "absent.csv")


def test_summary_is_mean_and_sample_std_per_dataset_and_pooled():
    rows = [r for r in _rows() if r.model == "a"]
    table = summarise(rows)["nd"]
    assert list(table) == ["naip", "spot", "all"]
    spatial = [r.metrics["spatial"] for r in rows if r.dataset == "naip"]
    assert table["naip"]["spatial"].n == 2  # the NaN is left out
    assert table["naip"]["spatial"].mean == pytest.approx(np.nanmean(spatial))
    assert table["naip"]["spatial"].std == pytest.approx(np.nanstd(spatial, ddof=1))
    omission = [r.metrics["omission"] for r in rows]
    assert table["all"]["omission"].mean == pytest.approx(np.mean(omission))
    assert table["all"]["omission"].n == 6
    assert format_stat(table["all"]["omission"]).count("±") == 1
    assert format_stat(stat([])) == "n/a" and "±" not in format_stat(stat([0.5]))


def test_average_rank_agrees_with_pandas_ranking():
    rng = np.random.default_rng(11)
    means = {
        f"m{k}": {m: float(rng.choice([0.1, 0.2, 0.3, rng.uniform()])) for m in METRICS}
        for k in range(6)
    }
    frame = pd.DataFrame(means).T
    ranks = pd.DataFrame(
        {
            m: frame[m].rank(method="average", ascending=m not in ("synthesis", "improvement"))
            for m in METRICS
        }
    )
    expected = ranks.mean(axis=1)
    got = average_rank(means)
    assert list(got) == sorted(got, key=got.get)  # best first
    for model, value in got.items():
        assert value == pytest.approx(expected[model])


def test_average_rank_directions_and_ties():
    best = {m: (1.0 if m in ("synthesis", "improvement") else 0.0) for m in METRICS}
    worst = {m: (0.0 if m in ("synthesis", "improvement") else 1.0) for m in METRICS}
    assert average_rank({"worst": worst, "best": best}) == {"best": 1.0, "worst": 2.0}
    assert average_rank({"x": best, "y": dict(best)}) == {"x": 1.5, "y": 1.5}
    partial = dict(worst, spatial=math.nan)
    ranks = average_rank({"best": best, "partial": partial})
    assert ranks == {"best": 1.0, "partial": 2.0}  # the NaN metric is left out, not ranked last
