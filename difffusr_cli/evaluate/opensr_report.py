"""Result rows of the OpenSR-test benchmark: CSV files, per-dataset summaries, average rank, tables.

This module knows nothing of models or of the ``opensr-test`` package (it imports neither torch nor
opensr_test), so ``--compare`` files can be read and ranked anywhere. It also holds the run's
:class:`OpenSRReport` and turns it into the ``--json`` object and the cells of the terminal tables
(drawn by :mod:`difffusr_cli.cli.eval_tables`).

A result row is one image of one dataset scored with one correctness distance. Its seven metrics
are those of the OpenSR-test paper, in the order of its tables:

====================  =====  ==================================================
column                better  opensr-test ``Metrics.compute`` key
====================  =====  ==================================================
``reflectance``       lower  ``reflectance``  (L1, LR vs SR downsampled)
``spectral``          lower  ``spectral``     (spectral angle, degrees)
``spatial``           lower  ``spatial``      (phase-correlation shift, LR px)
``synthesis``         higher ``synthesis``    (L1, SR vs LR upsampled)
``hallucination``     lower  ``ha_metric``
``omission``          lower  ``om_metric``
``improvement``       higher ``im_metric``
====================  =====  ==================================================
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difffusr_cli.errors import InputError, OutputError

#: The seven metrics, in the paper's column order.
METRICS: tuple[str, ...] = (
    "reflectance",
    "spectral",
    "spatial",
    "synthesis",
    "hallucination",
    "omission",
    "improvement",
)
#: Metrics where a larger value is better; every other metric is better when smaller.
HIGHER_IS_BETTER: frozenset[str] = frozenset({"synthesis", "improvement"})
#: Our column name → the key of ``opensr_test.Metrics.compute``'s result.
PACKAGE_KEYS: dict[str, str] = {
    "reflectance": "reflectance",
    "spectral": "spectral",
    "spatial": "spatial",
    "synthesis": "synthesis",
    "hallucination": "ha_metric",
    "omission": "om_metric",
    "improvement": "im_metric",
}
#: Identifying columns of the per-image CSV, before the metrics.
ID_COLUMNS: tuple[str, ...] = ("model", "distance", "dataset", "image")
#: The summary row that pools every image of every dataset.
ALL_DATASETS = "all"

# Column spellings accepted in --compare files (the authors' scripts capitalise, the package
# writes ha_metric/om_metric/im_metric).
_ALIASES: dict[str, str] = {
    **{m: m for m in METRICS},
    **{key: m for m, key in PACKAGE_KEYS.items()},
    "ha_percent": "hallucination",
    "om_percent": "omission",
    "im_percent": "improvement",
}


@dataclass(frozen=True)
class ResultRow:
    """One scored image (or, in a summary file, one model's averaged scores).

    Attributes:
        model: label of the model that produced the super-resolved image.
        distance: correctness distance (``"nd"``, ``"lpips"``, ``"clip"``); None when a compared
            file does not say.
        dataset: benchmark dataset (``"naip"``…); None when a compared file does not say.
        image: image id inside the dataset (its ``hr_file``); None in summary files.
        metrics: metric name → value (NaN where opensr-test could not compute it).
    """

    model: str
    distance: str | None
    dataset: str | None
    image: str | None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Stat:
    """Mean ± sample standard deviation (ddof = 1) over ``n`` finite values; NaN when n is 0."""

    mean: float
    std: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """``{"mean", "std", "n"}``."""
        return {"mean": self.mean, "std": self.std, "n": self.n}


@dataclass(frozen=True)
class OpenSRReport:
    """What a run produced.

    Attributes:
        model: the model's label in ``rows``.
        rows: one row per image and distance, datasets in the configured order.
        distances: the distances actually scored.
        skipped: distance → why it was not scored.
        sources: dataset → the pickle read.
        settings: the protocol and run settings, for the JSON output.
    """

    model: str
    rows: tuple[ResultRow, ...]
    distances: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def row_from_package(
    model: str, distance: str, dataset: str, image: str, scores: Mapping[str, float]
) -> ResultRow:
    """Build a row from the dict ``opensr_test.Metrics.compute`` returns."""
    missing = [key for key in PACKAGE_KEYS.values() if key not in scores]
    if missing:
        raise KeyError(f"opensr-test result lacks {', '.join(missing)}; got {sorted(scores)}")
    return ResultRow(
        model, distance, dataset, image, {m: float(scores[k]) for m, k in PACKAGE_KEYS.items()}
    )


# --------------------------------------------------------------------------------------------
# CSV


def write_rows_csv(rows: Iterable[ResultRow], path: Path) -> None:
    """Write rows as CSV (``model,distance,dataset,image,<7 metrics>``).

    Floats round-trip exactly.

    Raises:
        OutputError: the file cannot be written.
    """
    try:
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([*ID_COLUMNS, *METRICS])
            for row in rows:
                writer.writerow(
                    [
                        row.model,
                        row.distance or "",
                        row.dataset or "",
                        row.image or "",
                        *(repr(float(row.metrics.get(m, math.nan))) for m in METRICS),
                    ]
                )
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the results CSV ({exc.strerror or exc})") from exc


def read_results_csv(path: Path, *, default_model: str | None = None) -> list[ResultRow]:
    """Read a results CSV: this command's per-image file, or a summary with one row per model.

    Column names are matched case-insensitively; ``ha_metric``/``om_metric``/``im_metric`` (the
    package's keys) are accepted for hallucination/omission/improvement, and ``Model`` for model.
    Without a model column every row gets ``default_model`` (the file's stem when None). Metric
    columns that are absent or empty are NaN.

    Raises:
        InputError: the file is missing, unreadable, or has no model and no metric column.
    """
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            records = list(reader)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: results CSV not found") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the results CSV ({exc})") from exc

    columns = {name: name.strip().lower() for name in header}
    metric_of = {name: _ALIASES[low] for name, low in columns.items() if low in _ALIASES}
    if not metric_of:
        raise InputError(
            f"{path}: no metric column; expected some of {', '.join(METRICS)} (or ha_metric, "
            "om_metric, im_metric)"
        )
    id_of = {low: name for name, low in columns.items() if low in ID_COLUMNS}
    fallback_model = default_model or path.stem

    rows: list[ResultRow] = []
    for line, record in enumerate(records, start=2):
        metrics = {m: math.nan for m in METRICS}
        for name, metric in metric_of.items():
            metrics[metric] = _parse_float(record.get(name), path, line, name)
        rows.append(
            ResultRow(
                model=_text(record, id_of.get("model")) or fallback_model,
                distance=_text(record, id_of.get("distance")),
                dataset=_text(record, id_of.get("dataset")),
                image=_text(record, id_of.get("image")),
                metrics=metrics,
            )
        )
    return rows


def _text(record: Mapping[str, str | None], column: str | None) -> str | None:
    if column is None:
        return None
    value = (record.get(column) or "").strip()
    return value or None


def _parse_float(text: str | None, path: Path, line: int, column: str) -> float:
    text = (text or "").strip()
    if not text:
        return math.nan
    # Tables copied from papers carry "0.0024 ± 0.0010": keep the mean.
    text = text.split("±")[0].strip()
    try:
        return float(text)
    except ValueError as exc:
        raise InputError(f"{path}:{line}: column {column!r} holds {text!r}, not a number") from exc


# --------------------------------------------------------------------------------------------
# Summaries and ranks


def stat(values: Iterable[float]) -> Stat:
    """Mean and sample standard deviation of the finite values (NaN ignored)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(finite)
    if n == 0:
        return Stat(math.nan, math.nan, 0)
    mean = math.fsum(finite) / n
    if n == 1:
        return Stat(mean, math.nan, 1)
    var = math.fsum((v - mean) ** 2 for v in finite) / (n - 1)
    return Stat(mean, math.sqrt(var), n)


def summarise(rows: Sequence[ResultRow]) -> dict[str, dict[str, dict[str, Stat]]]:
    """Mean ± std of every metric over the images, per distance and dataset.

    Datasets come in first-seen order, then ``"all"`` pools every dataset.

    Returns:
        ``{distance: {dataset | "all": {metric: Stat}}}``.
    """
    grouped: dict[str, dict[str, list[ResultRow]]] = {}
    for row in rows:
        per_dataset = grouped.setdefault(row.distance or "", {})
        per_dataset.setdefault(row.dataset or "", []).append(row)
    summary: dict[str, dict[str, dict[str, Stat]]] = {}
    for distance, per_dataset in grouped.items():
        table: dict[str, dict[str, Stat]] = {}
        for dataset, members in per_dataset.items():
            table[dataset] = {m: stat(r.metrics.get(m, math.nan) for r in members) for m in METRICS}
        pooled = [r for members in per_dataset.values() for r in members]
        table[ALL_DATASETS] = {m: stat(r.metrics.get(m, math.nan) for r in pooled) for m in METRICS}
        summary[distance] = table
    return summary


def model_means(
    rows: Iterable[ResultRow], *, distance: str, datasets: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Each model's mean of every metric over its rows for ``distance``.

    Rows whose distance is unknown (summary files) count for every distance. With ``datasets``,
    rows of other datasets are left out; rows with no dataset are kept.
    """
    pooled: dict[str, list[ResultRow]] = {}
    for row in rows:
        if row.distance is not None and row.distance != distance:
            continue
        if datasets is not None and row.dataset is not None and row.dataset not in datasets:
            continue
        pooled.setdefault(row.model, []).append(row)
    return {
        model: {m: stat(r.metrics.get(m, math.nan) for r in members).mean for m in METRICS}
        for model, members in pooled.items()
    }


def average_rank(means: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The paper's average rank of each model.

    Per metric, rank the models (1 = best; ties share the mean of their ranks; lower is better
    except for synthesis and improvement), then average each model's ranks over the metrics. A
    model's NaN metric is left out of that metric's ranking and of its average.

    Returns:
        model → average rank, sorted best first (NaN when a model has no finite metric).
    """
    ranks: dict[str, list[float]] = {model: [] for model in means}
    for metric in METRICS:
        scored = [
            (model, float(v[metric]))
            for model, v in means.items()
            if math.isfinite(float(v.get(metric, math.nan)))
        ]
        sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0
        for model, rank in _average_ranks(
            [(model, sign * value) for model, value in scored]
        ).items():
            ranks[model].append(rank)
    result = {model: (math.fsum(r) / len(r) if r else math.nan) for model, r in ranks.items()}
    return dict(sorted(result.items(), key=lambda item: (math.isnan(item[1]), item[1])))


def _average_ranks(keyed: Sequence[tuple[str, float]]) -> dict[str, float]:
    """1-based ranks of ascending values; tied values get the mean of the ranks they span."""
    ordered = sorted(keyed, key=lambda kv: kv[1])
    ranks: dict[str, float] = {}
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1][1] == ordered[start][1]:
            end += 1
        shared = (start + end) / 2 + 1
        for model, _ in ordered[start : end + 1]:
            ranks[model] = shared
        start = end + 1
    return ranks


# --------------------------------------------------------------------------------------------
# Tables


def metric_header(metric: str) -> str:
    """Column title with the paper's arrow: ``reflectance ↓``, ``synthesis ↑``."""
    return f"{metric} {'↑' if metric in HIGHER_IS_BETTER else '↓'}"


def format_stat(value: Stat, digits: int = 4) -> str:
    """``"0.0024 ± 0.0010"`` (the paper's cell); ``"n/a"`` without data; no ± for one image."""
    if value.n == 0:
        return "n/a"
    if value.n == 1 or not math.isfinite(value.std):
        return f"{value.mean:.{digits}f}"
    return f"{value.mean:.{digits}f} ± {value.std:.{digits}f}"


def summary_table_rows(table: Mapping[str, Mapping[str, Stat]]) -> list[list[str]]:
    """Rows of the paper-style table for one distance: dataset, images, then the 7 metric cells."""
    out = []
    for dataset, stats in table.items():
        count = max((s.n for s in stats.values()), default=0)
        out.append([dataset, str(count), *(format_stat(stats[m]) for m in METRICS)])
    return out


# --------------------------------------------------------------------------------------------
# Output files, comparison and JSON


def results_csv_path(path: Path | None, label: str, *, overwrite: bool = False) -> Path:
    """The per-image CSV to write: ``path``, or ``opensr-<label>.csv`` in the working folder.

    Raises:
        OutputError: the file exists and ``overwrite`` is False (checked before any work).
    """
    target = path or Path(
        f"opensr-{re.sub(r'[^A-Za-z0-9._-]+', '_', label).strip('._') or 'model'}.csv"
    )
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; --csv takes a file path")
    if target.exists() and not overwrite:
        raise OutputError(
            f"{target}: exists; pass --overwrite to replace it or --csv to write elsewhere"
        )
    return target


def load_comparisons(paths: Sequence[Path], own_label: str) -> list[ResultRow]:
    """Rows of other models' result CSVs (``--compare``).

    A model that shares ``own_label`` is renamed ``"<model> (<file stem>)"`` so its rows never pool
    with this run's.

    Raises:
        InputError: a file is missing or unreadable (see :func:`read_results_csv`).
    """
    rows: list[ResultRow] = []
    for path in paths:
        for row in read_results_csv(Path(path)):
            if row.model == own_label:
                row = ResultRow(
                    f"{row.model} ({Path(path).stem})",
                    row.distance,
                    row.dataset,
                    row.image,
                    row.metrics,
                )
            rows.append(row)
    return rows


def rank_models(
    report: OpenSRReport, others: Sequence[ResultRow], datasets: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per scored distance, every model's average rank and metric means (best first).

    Each model's rows are pooled over ``datasets``. Distances where only this run has rows are
    left out.
    """
    ranking: dict[str, dict[str, dict[str, Any]]] = {}
    for distance in report.distances:
        means = model_means([*report.rows, *others], distance=distance, datasets=datasets)
        if len(means) < 2:
            continue
        ranks = average_rank(means)
        ranking[distance] = {
            model: {"average_rank": rank, "means": means[model]} for model, rank in ranks.items()
        }
    return ranking


def report_json(
    report: OpenSRReport, ranking: Mapping[str, Any], csv_path: Path | None
) -> dict[str, Any]:
    """The ``--json`` object.

    Settings, per-dataset summaries, ranks and every image's scores (NaN written as null).
    """
    summary = {
        distance: {
            ds: {
                m: {
                    k: (finite_or_none(v) if isinstance(v, float) else v)
                    for k, v in st.to_dict().items()
                }
                for m, st in stats.items()
            }
            for ds, stats in table.items()
        }
        for distance, table in summarise(report.rows).items()
    }
    rank_out = {
        distance: [
            {
                "model": model,
                "average_rank": finite_or_none(entry["average_rank"]),
                "means": {m: finite_or_none(entry["means"][m]) for m in METRICS},
            }
            for model, entry in models.items()
        ]
        for distance, models in ranking.items()
    }
    images = [
        {
            "model": r.model,
            "distance": r.distance,
            "dataset": r.dataset,
            "image": r.image,
            **{m: finite_or_none(r.metrics[m]) for m in METRICS},
        }
        for r in report.rows
    ]
    return {
        "model": report.model,
        "distances": list(report.distances),
        "skipped": dict(report.skipped),
        "datasets": dict(report.sources),
        "settings": report.settings,
        "csv": str(csv_path) if csv_path is not None else None,
        "summary": summary,
        "rank": rank_out,
        "images": images,
    }


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN/inf: None instead."""
    return value if math.isfinite(value) else None
