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
from typing import Annotated, Optional, Protocol, TypeGuard

import typer

from difffusr_cli import __version__
from difffusr_cli.cli import evaluate, info, superres, train, weights
from difffusr_cli.errors import DifffusrError

app = typer.Typer(
    # Plain Click help: Typer 0.29's rich help prints `<bool>` after flags, as if they took a value.
    rich_markup_mode=None,
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
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = None,
) -> None:
    """Sentinel-2 L2A to a 12-band GeoTIFF at 2.5 m."""


# The commands, one module per command group (each a thin layer over one library call).
app.command("info")(info.info)
app.command("superres")(superres.superres)
app.add_typer(weights.weights_app, name="weights")
app.add_typer(evaluate.eval_app, name="eval")
app.add_typer(train.train_app, name="train")


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
            if type(exc).__name__ == "NoArgsIsHelpError":  # `difffusr weights`: show the help
                exc.show()
                return exc.exit_code
            # Usage errors in one line, like every other error, with where to read more.
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            typer.echo(f"error: {exc.format_message()}{hint}", err=True)
            return exc.exit_code
        if os.environ.get("DIFFFUSR_DEBUG"):
            traceback.print_exc()
        else:
            try:
                where = f"traceback in {_log_failure(exc)}"
            except OSError as log_exc:
                where = f"no log written: {log_exc}; set DIFFFUSR_DEBUG=1 to see the traceback"
            typer.echo(f"unexpected failure: {type(exc).__name__}: {exc} ({where})", err=True)
        return 1
    return result if isinstance(result, int) else 0


class _ClickLikeError(Protocol):
    """What the CLI uses of a Click exception (Typer's bundled Click or a standalone one)."""

    exit_code: int

    def show(self) -> None: ...

    def format_message(self) -> str: ...


def _is_click_exception(exc: BaseException) -> TypeGuard[_ClickLikeError]:
    # Typer bundles its own Click; match by duck type so both work.
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


def _terminate(signum: int, frame: object) -> None:
    # Batch schedulers stop jobs with SIGTERM: treat it as Ctrl-C, so a run says how to resume
    # and exits 130 instead of dying silently.
    raise KeyboardInterrupt


def run() -> None:
    """The ``difffusr`` console script."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(main())
