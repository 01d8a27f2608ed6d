"""Terminal rendering of ``difffusr info``: a rich table or one JSON object on stdout.

The data comes from :mod:`difffusr_cli.io.report`; only layout and colour live here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from difffusr_cli.io.report import (
    BAND_COLUMNS,
    band_rows,
    collect_info,
    footer_lines,
    missing_bands,
    summary_lines,
)


def print_info(
    path: str | Path, *, as_json: bool, scale: float | None = None, offset: float | None = None
) -> dict:
    """Open ``path`` and print what was found; returns the info dict.

    With ``as_json`` one JSON object goes to stdout (schema in docs/inputs.md); otherwise a
    human-readable summary.

    Raises:
        InputError: the product cannot be opened (see :func:`~difffusr_cli.io.scene.open_scene`).
    """
    info = collect_info(path, scale=scale, offset=offset)
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        sys.stdout.flush()
    else:
        print_table(info)
    return info


def print_table(info: dict) -> None:
    """The human-readable ``difffusr info`` summary of an info dict."""
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    src = info["source"]
    console.print(f"[bold]{escape(src['path'])}[/bold]  ({src['kind']})")
    for line in summary_lines(info):
        console.print(escape(line))
    table = Table(title="bands", title_justify="left")
    for column in BAND_COLUMNS:
        # File names differ only at their end: fold them rather than cut them on narrow terminals.
        table.add_column(
            column, overflow="fold" if column == "file" else "ellipsis", no_wrap=column != "file"
        )
    for row in band_rows(info):
        cells = [escape(str(row[c])) for c in BAND_COLUMNS]
        if not row["found"]:
            cells[BAND_COLUMNS.index("size")] = f"[red]{cells[BAND_COLUMNS.index('size')]}[/red]"
        table.add_row(*cells)
    console.print(table)
    for line in footer_lines(info):
        console.print(escape(line))
    missing = missing_bands(info)
    if missing:
        console.print(
            f"  [yellow]missing bands: {', '.join(missing)}[/yellow] (processing needs all 12)"
        )
