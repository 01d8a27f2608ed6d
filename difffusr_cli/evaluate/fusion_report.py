"""Outputs of ``eval fusion`` as plain data.

The CSV, the ``--json`` object, and the cell texts of the terminal tables (drawn by
:mod:`difffusr_cli.cli.eval_tables`).

CSV: one row per (product, method, scope), scope ``overall`` (name ``all``), ``group`` (``10m``,
``20m``, ``60m``) or ``band`` (``B01`` …); a method that could not run has one ``overall`` row
with ``status`` = ``missing``, empty metrics and the ``reason``. A scope without scored pixels
(a group the area is too small for, and then ``all``) has ``status`` = ``not-scored``, empty
metrics and the reason in words. Several products add rows whose product is ``mean``.
Non-finite values are written ``inf`` / ``nan`` (Python's ``float()`` reads them back).

JSON: ``{"mode", "settings", "products": [{"label", "path", "region", "pixels", "not_scored",
"methods": {method: {"status", "reason", "detail", "overall", "groups", "bands"}}}], "mean",
"mean_not_scored"}`` with metrics as ``{"r2", "cc", "ssim", "psnr", "mse", "ergas"}``.
``not_scored`` maps a scope (a group, or ``all``) without scored pixels to the reason in words;
its metrics are ``null``. Strict JSON has no infinity: ``inf`` is written as the string ``"inf"``
(a perfect PSNR) and NaN (undefined) as ``null``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from difffusr_cli.bands import GROUPS
from difffusr_cli.errors import OutputError
from difffusr_cli.evaluate.fusion import FusionReport, MethodResult
from difffusr_cli.metrics import METRIC_NAMES, Scores, ScoreTable

#: CSV columns, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "mode",
    "product",
    "method",
    "scope",
    "name",
    "pixels",
    *METRIC_NAMES,
    "status",
    "reason",
    "detail",
)
#: Column titles of the metrics in the terminal tables.
METRIC_HEADERS: dict[str, str] = {
    "r2": "R²",
    "cc": "CC",
    "ssim": "SSIM",
    "psnr": "PSNR dB",
    "mse": "MSE",
    "ergas": "ERGAS",
}
#: The direction that is better, per metric (``↑``: larger).
METRIC_BETTER: dict[str, str] = {
    "r2": "↑",
    "cc": "↑",
    "ssim": "↑",
    "psnr": "↑",
    "mse": "↓",
    "ergas": "↓",
}


def format_metric(metric: str, value: float) -> str:
    """A metric value for the terminal (``inf``, ``nan`` spelled out)."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if metric == "mse":
        return f"{value:.3e}"
    if metric in ("psnr", "ergas"):
        return f"{value:.2f}" if metric == "psnr" else f"{value:.3f}"
    return f"{value:.4f}"


def _csv_number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else str(float(value))


def _json_number(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def _scopes(table: ScoreTable) -> Iterator[tuple[str, str, Scores]]:
    """``(scope, name, scores)``: overall, each group, each band."""
    yield "overall", "all", table.overall
    for group, scores in table.per_group.items():
        yield "group", group, scores
    for band, scores in table.per_band.items():
        yield "band", band, scores


def _band_group(band: str) -> str:
    return next(g for g, members in GROUPS.items() if band in members)


def unscored_reason(not_scored: Mapping[str, str], scope: str, name: str) -> str | None:
    """Why the scores of ``(scope, name)`` (see :func:`_scopes`) are undefined, or None."""
    if scope == "overall":
        return not_scored.get("all")
    return not_scored.get(name if scope == "group" else _band_group(name))


def mean_not_scored(report: FusionReport) -> dict[str, str]:
    """The scopes no product could score (so their mean is undefined), with the first reason."""
    first = report.products[0].not_scored if report.products else {}
    return {
        scope: reason
        for scope, reason in first.items()
        if all(scope in p.not_scored for p in report.products)
    }


def _product_rows(
    report: FusionReport,
) -> Iterator[tuple[str, dict[str, int] | None, dict[str, str], MethodResult]]:
    for product in report.products:
        for result in product.methods:
            yield product.label, product.pixels, product.not_scored, result
    mean_notes = mean_not_scored(report)
    for result in report.mean or ():
        yield "mean", None, mean_notes, result


def csv_rows(report: FusionReport) -> list[dict[str, str]]:
    """The CSV rows of a report (see the module docstring), as ``{column: text}``."""
    rows: list[dict[str, str]] = []
    for label, pixels, not_scored, result in _product_rows(report):
        base = {
            "mode": report.mode,
            "product": label,
            "method": result.method,
            "detail": result.detail or "",
        }
        if result.table is None:
            rows.append(
                {
                    **base,
                    "scope": "overall",
                    "name": "all",
                    "pixels": "",
                    "status": "missing",
                    "reason": result.reason or "",
                    **{m: "" for m in METRIC_NAMES},
                }
            )
            continue
        for scope, name, scores in _scopes(result.table):
            count = ""
            if pixels is not None:
                group = (
                    name
                    if scope == "group"
                    else next((g for g, b in GROUPS.items() if name in b), None)
                )
                count = str(sum(pixels.values())) if group is None else str(pixels[group])
            values = scores.as_dict()
            why = unscored_reason(not_scored, scope, name)
            rows.append(
                {
                    **base,
                    "scope": scope,
                    "name": name,
                    "pixels": count,
                    "status": "ok" if why is None else "not-scored",
                    "reason": why or "",
                    **{m: "" if why else _csv_number(values[m]) for m in METRIC_NAMES},
                }
            )
    return rows


def write_csv(report: FusionReport, path: str | Path) -> Path:
    """Write :func:`csv_rows` to ``path`` (replacing it); returns the path.

    Raises:
        OutputError: the file cannot be written.
    """
    path = Path(path)
    try:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(csv_rows(report))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _scores_json(scores: Scores) -> dict[str, Any]:
    return {m: _json_number(v) for m, v in scores.as_dict().items()}


def _method_json(result: MethodResult) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "status": "ok" if result.table is not None else "missing",
        "reason": result.reason,
        "detail": result.detail,
    }
    if result.table is not None:
        entry["overall"] = _scores_json(result.table.overall)
        entry["groups"] = {g: _scores_json(s) for g, s in result.table.per_group.items()}
        entry["bands"] = {b: _scores_json(s) for b, s in result.table.per_band.items()}
    return entry


def report_json(report: FusionReport, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``--json`` object (strict JSON: see the module docstring); ``extra`` keys are added."""
    out: dict[str, Any] = {
        "mode": report.mode,
        "settings": report.settings,
        "products": [
            {
                "label": p.label,
                "path": p.path,
                "region": {
                    "col_off": int(p.region.col_off),
                    "row_off": int(p.region.row_off),
                    "width": int(p.region.width),
                    "height": int(p.region.height),
                },
                "pixels": p.pixels,
                "not_scored": p.not_scored,
                "methods": {r.method: _method_json(r) for r in p.methods},
            }
            for p in report.products
        ],
        "mean": None if report.mean is None else {r.method: _method_json(r) for r in report.mean},
        "mean_not_scored": None if report.mean is None else mean_not_scored(report),
    }
    out.update(extra or {})
    return out
