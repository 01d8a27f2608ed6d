"""The ``difffusr`` command line: one module per command group over importable library calls.

``root`` holds the root Typer app and the one place that maps errors to exit codes; ``info``,
``superres``, ``weights``, ``evaluate`` and ``train`` hold the commands; ``console``,
``progress`` and ``info_table`` render with rich. Nothing outside this package draws on a
console.
"""

from difffusr_cli.cli.root import app, main, run

__all__ = ["app", "main", "run"]
