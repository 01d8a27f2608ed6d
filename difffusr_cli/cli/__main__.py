"""``python -m difffusr_cli.cli``: the ``difffusr`` console script."""

from difffusr_cli.cli.app import run

run()
