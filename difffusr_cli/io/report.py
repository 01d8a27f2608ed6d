"""``difffusr info``: what difffusr sees in a product, as a table or one JSON object."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from difffusr_cli.io.scene import open_scene


def print_info(
    path: str | Path, *, as_json: bool, scale: float | None = None, offset: float | None = None
) -> dict:
    """Open ``path`` and print what was found; returns the info dict.

    With ``as_json`` one JSON object goes to stdout (schema in docs/inputs.md); otherwise a
    human-readable summary. Missing bands are listed (``found: false``) without failing: the
    processing commands are the ones that refuse an incomplete product.

    Raises:
        InputError: the product cannot be opened (see :func:`~difffusr_cli.io.scene.open_scene`).
    """
    with open_scene(path, scale=scale, offset=offset) as scene:
        info = scene.info()
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        sys.stdout.flush()
    else:
        _print_table(info)
    return info


def _print_table(info: dict) -> None:
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    src, grid, radio = info["source"], info["grid"], info["radiometry"]
    console.print(f"[bold]{src['path']}[/bold]  ({src['kind']})")
    for key in ("product_id", "tile", "datetime", "processing_baseline", "processing_level"):
        console.print(f"  {key.replace('_', ' ')}: {src[key] if src[key] is not None else '-'}")
    a, b, c, d, e, f = grid["transform"]
    console.print(
        f"  10 m grid: {grid['width']} × {grid['height']} px, {grid['crs']}, "
        f"origin ({c:.2f}, {f:.2f}), pixel {a:g} × {-e:g}"
    )

    table = Table(title="bands", title_justify="left")
    for column in ("band", "gsd (m)", "size", "ratio", "DN offset", "scale", "file"):
        # File names differ only at their end: fold them rather than cut them on narrow terminals.
        table.add_column(column, overflow="fold" if column == "file" else "ellipsis", no_wrap=column != "file")
    for entry in info["bands"]:
        name = entry["name"]
        size = f"{entry['width']} × {entry['height']}" if entry["found"] else "[red]not found[/red]"
        table.add_row(
            name,
            f"{entry['gsd']:g}",
            size,
            str(entry["ratio"]) if entry["ratio"] else "-",
            f"{radio['offsets'][name]:g}",
            f"{radio['scale'][name]:g}",
            Path(entry["path"]).name if entry["path"] else "-",
        )
    console.print(table)
    quant = radio["quantification"]
    quant_text = f"{quant:g}" if isinstance(quant, (int, float)) else "per band"
    console.print(f"  reflectance = (DN + offset) / {quant_text}")
    console.print(f"  radiometry from: {radio['source']}")
    missing = [b["name"] for b in info["bands"] if not b["found"]]
    if missing:
        console.print(
            f"  [yellow]missing bands: {', '.join(missing)}[/yellow] (processing needs all 12)"
        )
