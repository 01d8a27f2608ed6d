"""The ``difffusr`` command line: thin Typer commands over the library.

Every command parses and validates its options, then calls one library function. Errors the user
can fix (:class:`~difffusr_cli.errors.DifffusrError`) become one line on stderr and exit code 2;
anything else is an unexpected failure: exit code 1 and the traceback in a log file whose path is
printed (set ``DIFFFUSR_DEBUG=1`` to see it on the terminal instead).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from difffusr_cli import __version__
from difffusr_cli.errors import DifffusrError

app = typer.Typer(
    name="difffusr",
    help=(
        "Sentinel-2 L2A to a 12-band GeoTIFF at 2.5 m: diffusion super-resolution of the RGB bands "
        "and learned fusion of every other band.\n\n"
        "Start with `difffusr info SCENE` to see what difffusr reads from a product, then "
        "`difffusr superres SCENE -o out.tif`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"difffusr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Sentinel-2 L2A to a 12-band GeoTIFF at 2.5 m."""


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="A .SAFE folder, .SAFE.zip, MTD_MSIL2A.xml, COG folder, STAC item JSON or multi-band GeoTIFF.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    scale: Annotated[Optional[float], typer.Option(help="Override the radiometric scale: reflectance = DN·scale + offset (e.g. 0.0001).")] = None,
    offset: Annotated[Optional[float], typer.Option(help="Override the radiometric offset in reflectance (e.g. -0.1 for baseline ≥ 04.00 DN).")] = None,
) -> None:
    """Show what difffusr sees in a product: grid, bands found, radiometry."""
    from difffusr_cli.io.report import print_info

    print_info(path, as_json=json_output, scale=scale, offset=offset)


def _log_failure(exc: BaseException) -> Path:
    """Write the traceback of an unexpected failure to a log file and return its path."""
    log_dir = Path(tempfile.gettempdir()) / "difffusr-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"difffusr-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    log.write_text(
        f"difffusr {__version__}\nargv: {sys.argv}\n\n"
        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    )
    return log


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``difffusr`` console script; returns the exit code."""
    try:
        result = app(args=argv, prog_name="difffusr", standalone_mode=False)
    except DifffusrError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the CLI boundary
        if _is_click_exception(exc):
            exc.show()
            return exc.exit_code
        if os.environ.get("DIFFFUSR_DEBUG"):
            traceback.print_exc()
        else:
            log = _log_failure(exc)
            typer.echo(f"unexpected failure: {type(exc).__name__}: {exc} (traceback in {log})", err=True)
        return 1
    return result if isinstance(result, int) else 0


def _is_click_exception(exc: BaseException) -> bool:
    # Typer bundles its own Click; match by duck type so both work.
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
