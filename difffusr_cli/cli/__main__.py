"""``python -m difffusr_cli.cli``: the ``difffusr`` console script."""

from difffusr_cli.cli.root import run

run()
