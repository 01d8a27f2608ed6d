"""Terminal tables of ``difffusr eval ...``, drawn with rich.

The library returns the reports as plain data (:class:`~difffusr_cli.evaluate.fusion.FusionReport`,
:class:`~difffusr_cli.evaluate.opensr_report.OpenSRReport`) and this module draws them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from difffusr_cli.bands import GROUPS
from difffusr_cli.evaluate.fusion import FusionReport, MethodResult
from difffusr_cli.evaluate.fusion_report import (
    METRIC_BETTER,
    METRIC_HEADERS,
    format_metric,
    mean_not_scored,
    unscored_reason,
)
from difffusr_cli.evaluate.opensr_report import (
    METRICS,
    OpenSRReport,
    metric_header,
    summarise,
    summary_table_rows,
)
from difffusr_cli.metrics import METRIC_NAMES


def _console(console: Console | None) -> Console:
    if console is not None:
        return console
    # A terminal wraps the cells to fit; a pipe or log file gets each row on one line.
    return Console() if sys.stdout.isatty() else Console(width=160)


# --------------------------------------------------------------------------------------------
# eval fusion


def _fusion_table(
    title: str,
    methods: tuple[MethodResult, ...],
    per_band: bool,
    not_scored: Mapping[str, str],
) -> Table:
    """The table of ``methods``; scopes in ``not_scored`` show ``—``.

    The reason is printed under the table by :func:`_print_not_scored`.
    """
    grid = Table(title=title, title_justify="left")
    grid.add_column("bands")
    grid.add_column("method")
    for metric in METRIC_NAMES:
        grid.add_column(f"{METRIC_HEADERS[metric]} {METRIC_BETTER[metric]}", justify="right")
    scopes: list[tuple[str, str]] = [("all", "overall")] + [(g, "group") for g in GROUPS]
    if per_band:
        scopes = [(name, "band") for members in GROUPS.values() for name in members]
    for i, (name, scope) in enumerate(scopes):
        for j, result in enumerate(methods):
            label = name if j == 0 else ""
            end_section = j == len(methods) - 1 and i < len(scopes) - 1
            if result.table is None or unscored_reason(not_scored, scope, name) is not None:
                grid.add_row(
                    label,
                    result.method,
                    *("—" for _ in METRIC_NAMES),
                    style="dim",
                    end_section=end_section,
                )
                continue
            table = result.table
            if scope == "overall":
                scores = table.overall
            elif scope == "group":
                scores = table.per_group[name]
            else:
                scores = table.per_band[name]
            values = scores.as_dict()
            grid.add_row(
                label,
                result.method,
                *(format_metric(m, values[m]) for m in METRIC_NAMES),
                end_section=end_section,
            )
    return grid


def _print_not_scored(console: Console, not_scored: Mapping[str, str]) -> None:
    for scope, reason in not_scored.items():
        console.print(f"{scope}: {reason}", highlight=False, soft_wrap=True)


def print_fusion_report(report: FusionReport, console: Console | None = None) -> None:
    """Print the tables of an ``eval fusion`` run on the terminal.

    Overall and per group for every product (and their mean), then per band for the single
    product or for the mean; missing methods with their reason.

    Args:
        report: what :func:`~difffusr_cli.evaluate.fusion_wald.evaluate_wald` or
            :func:`~difffusr_cli.evaluate.fusion_product.evaluate_product` returned.
        console: where to print (default: stdout, 160 columns when not a terminal).
    """
    out = _console(console)
    what = (
        "Wald protocol: inputs degraded ×4, scored against the native bands"
        if report.mode == "wald"
        else "product check: 2.5 m product area-averaged onto the source's native grids"
    )
    for product in report.products:
        pixels = ", ".join(f"{g}: {n}" for g, n in product.pixels.items())
        out.print(
            _fusion_table(
                f"{product.label} · {what} · scored pixels {pixels}",
                product.methods,
                False,
                product.not_scored,
            )
        )
        _print_not_scored(out, product.not_scored)
    last = report.mean if report.mean is not None else report.products[-1].methods
    last_notes = (
        mean_not_scored(report) if report.mean is not None else report.products[-1].not_scored
    )
    if report.mean is not None:
        out.print(
            _fusion_table(
                f"mean of {len(report.products)} products · {what}", report.mean, False, last_notes
            )
        )
        _print_not_scored(out, last_notes)
    title = (
        "mean · per band" if report.mean is not None else f"{report.products[-1].label} · per band"
    )
    out.print(_fusion_table(title, last, True, last_notes))
    _print_not_scored(out, {g: r for g, r in last_notes.items() if g != "all"})
    for result in report.products[0].methods:
        if result.table is None:
            out.print(
                f"{result.method}: missing — {result.reason}", highlight=False, soft_wrap=True
            )


# --------------------------------------------------------------------------------------------
# eval opensr


def print_opensr_report(
    report: OpenSRReport,
    ranking: Mapping[str, Mapping[str, Any]],
    console: Console | None = None,
) -> None:
    """Print the paper-style tables of an ``eval opensr`` run on the terminal.

    Per distance, mean ± std per dataset and over all images, then the average rank when other
    models were compared.

    Args:
        report: what :func:`~difffusr_cli.evaluate.opensr.evaluate_opensr` returned.
        ranking: :func:`~difffusr_cli.evaluate.opensr_report.rank_models`'s result.
        console: where to print (default: stdout, 160 columns when not a terminal).
    """
    out = _console(console)
    for distance, table in summarise(report.rows).items():
        grid = Table(
            title=f"OpenSR-test · {report.model} · correctness distance {distance}",
            title_justify="left",
        )
        grid.add_column("dataset")
        grid.add_column("images", justify="right")
        for metric in METRICS:
            grid.add_column(metric_header(metric), justify="right")
        rows = summary_table_rows(table)
        for i, cells in enumerate(rows):
            grid.add_row(*cells, end_section=i == len(rows) - 2)
        out.print(grid)
        if distance in ranking:
            ranks = Table(title=f"Average rank · {distance} (1 = best)", title_justify="left")
            ranks.add_column("model")
            ranks.add_column("avg rank", justify="right")
            for metric in METRICS:
                ranks.add_column(metric_header(metric), justify="right")
            for model, entry in ranking[distance].items():
                style = "bold" if model == report.model else None
                ranks.add_row(
                    model,
                    f"{entry['average_rank']:.3f}",
                    *(f"{entry['means'][m]:.4f}" for m in METRICS),
                    style=style,
                )
            out.print(ranks)
