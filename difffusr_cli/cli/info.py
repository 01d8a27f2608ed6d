"""`difffusr info`: what difffusr reads from a product."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def info(
    path: Annotated[
        Path,
        typer.Argument(
            help=(
                "A .SAFE folder, .SAFE.zip, MTD_MSIL2A.xml, COG folder, STAC item JSON or "
                "multi-band GeoTIFF."
            )
        ),
    ],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    scale: Annotated[
        Optional[float],
        typer.Option(
            help="Override the radiometric scale: reflectance = DN·scale + offset (e.g. 0.0001)."
        ),
    ] = None,
    offset: Annotated[
        Optional[float],
        typer.Option(
            help=(
                "Override the radiometric offset in reflectance (e.g. -0.1 for baseline ≥ 04.00 "
                "DN)."
            )
        ),
    ] = None,
) -> None:
    """Show what difffusr sees in a product: grid, bands found, radiometry."""
    from difffusr_cli.cli.info_table import print_info

    print_info(path, as_json=json_output, scale=scale, offset=offset)
